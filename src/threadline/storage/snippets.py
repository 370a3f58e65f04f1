"""What a hit shows: a snippet of its text with the matches in bold, and the messages around
it on its path."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from threadline.storage.models import Neighbour

SNIPPET_CHARS = 160
NEIGHBOUR_CHARS = 300


def snippet(
    text: str,
    needles: list[str],
    width: int = SNIPPET_CHARS,
    spans: Sequence[tuple[int, int]] = (),
) -> str:
    """A window of ``text`` around the first match, each match in **bold**: the given
    ``spans`` (matched words) and every occurrence of a term."""
    lower = text.lower()
    if len(lower) != len(text):  # lower-casing changed lengths: positions would drift
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    positions = [p for p in (lower.find(n) for n in needles) if p >= 0]
    positions += [a for a, _b in spans]
    first = min(positions, default=0)
    start = max(0, first - width // 3)
    end = min(len(text), start + width)
    window, folded = text[start:end], lower[start:end]
    marks: list[tuple[int, int]] = []

    def mark(a: int, b: int) -> None:
        if a < b and not any(x < b and a < y for x, y in marks):
            marks.append((a, b))

    for needle in sorted(needles, key=len, reverse=True):
        i = folded.find(needle)
        while i >= 0 and needle:
            mark(i, i + len(needle))
            i = folded.find(needle, i + len(needle))
    for a, b in spans:
        mark(max(a, start) - start, min(b, end) - start)
    out, last = [], 0
    for a, b in sorted(marks):
        out += [window[last:a], "**", window[a:b], "**"]
        last = b
    out.append(window[last:])
    body = "".join(out).replace("\n", " ")
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")


def surroundings(
    conn: sqlite3.Connection, pk: int, count: int
) -> tuple[list[Neighbour], list[Neighbour]]:
    """Up to ``count`` messages before ``pk`` on its path and after it (following the newest
    branch), oldest first."""
    before = conn.execute(
        """WITH RECURSIVE up (pk, n) AS (
            SELECT parent_pk, 1 FROM messages WHERE pk = ?
            UNION ALL SELECT m.parent_pk, up.n + 1 FROM messages m JOIN up ON m.pk = up.pk
            WHERE up.n < ?)
        SELECT m.id, m.role, m.created_at, coalesce(m.body, m.content)
        FROM up JOIN messages m ON m.pk = up.pk ORDER BY up.n DESC""",
        (pk, count),
    ).fetchall()
    after = conn.execute(
        """WITH RECURSIVE down (pk, n) AS (
            SELECT ?, 0
            UNION ALL SELECT (SELECT max(c.pk) FROM messages c WHERE c.parent_pk = down.pk),
                down.n + 1 FROM down WHERE down.n < ? AND down.pk IS NOT NULL)
        SELECT m.id, m.role, m.created_at, coalesce(m.body, m.content)
        FROM down JOIN messages m ON m.pk = down.pk WHERE down.n > 0 ORDER BY down.n""",
        (pk, count),
    ).fetchall()
    return [_neighbour(row) for row in before], [_neighbour(row) for row in after]


def _neighbour(row: Any) -> Neighbour:
    message_id, role, created_at, text = row
    text = " ".join(text.split())
    if len(text) > NEIGHBOUR_CHARS:
        text = text[: NEIGHBOUR_CHARS - 1] + "…"
    return Neighbour.model_construct(
        message_id=message_id, role=role, created_at=created_at, text=text
    )

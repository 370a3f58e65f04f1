"""Full-text search over every message of the user.

Every term of a query is a case-insensitive substring that must occur in the message (AND),
so parts of words and CJK text are found, and the same query finds the same messages however
far indexing has got. (One known gap: letters that SQLite's trigram tokenizer does not
case-fold, such as Cherokee, are found indexed only in the case they were written in.)

A trigram FTS5 index (``fts_trigram``) finds terms of three or more characters. Ranking is
bm25 over the newest ``WINDOW`` indexed matches, scored here from their text (how often each
term occurs, the message's length, and the term's rarity, counted up to ``COMMON``
messages); older matches follow, newest first. A common word matches most of a large store,
and FTS5's own bm25 reads every match to rank them (two seconds for "and" in a million
messages); the window keeps every query to a few hundred rows and favours recent
conversations. Shorter terms are checked on the candidates the index finds; a query of short
terms only scans the messages, newest first.

The store's writer thread indexes in chunks, up to a watermark (``search_state.indexed_pk``):
inside the transaction of a write that adds messages (not a fork) once ``index_batch`` wait,
and whenever writes pause for ``index_delay``. Search also scans the committed messages above
the watermark, newest first, ahead of the ranked hits.

User text is never FTS syntax: it is split on white space and each term is quoted, so quotes,
operators, column filters, ``C++`` or e-mail addresses are searched literally.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import InvalidInput
from threadline.storage.models import SearchHit, SearchResults
from threadline.storage.tree import session_row

SNIPPET_CHARS = 160
MAX_OFFSET = 10_000
TRIGRAM = 3
WINDOW = 200  # indexed matches ranked, the newest
COMMON = 1_000  # a term in this many messages or more weighs as common in ranking
K1, B = 1.2, 0.75  # bm25's usual constants, as FTS5 uses them

_HIT_COLUMNS = """m.pk, m.session_id, s.title, m.id, m.role, m.created_at,
                  coalesce(m.body, m.content)"""
_TEXT = "coalesce(m.body, m.content)"


def newest_pk(conn: sqlite3.Connection) -> int:
    """The pk of the newest message ever stored (0 for none): it grows with every insert."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    return int(row[0]) if row else 0


def index_pending(conn: sqlite3.Connection, at_least: int = 1, at_most: int | None = None) -> int:
    """Index messages above the watermark, oldest first, if ``at_least`` of them wait; at most
    ``at_most`` (all if None). Returns how many it indexed."""
    (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()
    top = newest_pk(conn)
    if top - indexed < at_least:
        return 0
    if at_most is not None:
        top = min(top, indexed + at_most)
    conn.execute(
        "INSERT INTO fts_trigram (rowid, body) "
        "SELECT pk, coalesce(body, content) FROM messages WHERE pk > ? AND pk <= ?",
        (indexed, top),
    )
    conn.execute("UPDATE search_state SET indexed_pk = ?", (top,))
    return int(top - indexed)


def terms(query: object, config: Config) -> list[str]:
    """The query's distinct terms, as typed; the query is refused when empty or too long."""
    limits = config.limits
    text = validate.text(query, "query", limits.max_query_chars, allow_empty=False)
    if "\x00" in text:
        raise InvalidInput("query", "must not contain NUL characters")
    words = text.split()
    if len(words) > limits.max_query_terms:
        limit = limits.max_query_terms
        raise InvalidInput("query", f"has {len(words)} terms; the limit is {limit}")
    return list(dict.fromkeys(words))


def _contains_all(words: list[str]) -> tuple[str, list[str]]:
    """SQL that holds when the lower-cased text holds every lower-cased term.

    ASCII terms use SQLite's ``instr`` (fast, in C); others ``tl_contains`` (Python's full
    Unicode lower-casing, registered by ``engine.connect``), whose folding SQLite lacks.
    """
    sql, params = "", []
    for word in words:
        needle = word.lower()
        if word.isascii():
            # In C for ASCII text; Python only for text with other letters, some of which
            # lower-case to ASCII (the Kelvin sign to "k").
            sql += (
                f" AND (instr(lower({_TEXT}), ?) OR ({_TEXT} GLOB '*[^' || char(1) || '-' "
                f"|| char(127) || ']*' AND tl_contains({_TEXT}, ?)))"
            )
            params += [needle, needle]
        else:
            sql += f" AND tl_contains({_TEXT}, ?)"
            params.append(needle)
    return sql, params


def search(
    conn: sqlite3.Connection,
    config: Config,
    query: str,
    *,
    session_id: str | None,
    role: str | None,
    limit: int,
    cursor: str | None,
) -> SearchResults:
    words = terms(query, config)
    if session_id is not None:
        session_row(conn, session_id, "1")
    if role is not None and role not in ("system", "user", "assistant", "tool"):
        raise InvalidInput("role", "must be one of system, user, assistant, tool")
    offset = 0
    if cursor is not None:
        (offset,) = validate.decode_cursor(cursor, "cursor", (int,))
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput("cursor", "is not a cursor returned by the previous page")

    where, params = "", []
    if session_id is not None:
        where += " AND m.session_id = ?"
        params.append(session_id)
    if role is not None:
        where += " AND m.role = ?"
        params.append(role)
    (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()
    # Every hit holds every term by this one test, indexed or not. The index only narrows the
    # candidates: MATCH gets the terms as typed, folded by its tokenizer like the index was.
    all_sql, all_args = _contains_all(words)
    short_sql, short_args = _contains_all([w for w in words if len(w) < TRIGRAM])
    long = [w for w in words if len(w) >= TRIGRAM]

    # The unindexed tail: the newest messages, few by construction, checked directly.
    tail = conn.execute(
        f"SELECT {_HIT_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.session_id "
        f"WHERE m.pk > ?{all_sql}{where} ORDER BY m.pk DESC",
        [indexed, *all_args, *params],
    ).fetchall()
    rows: list[Any] = tail[offset : offset + limit + 1]
    want = limit + 1 - len(rows)
    skip = max(0, offset - len(tail))
    if want > 0 and long:
        rows += _indexed(conn, long, f"{all_sql}{where}", [*all_args, *params], want, skip)
    elif want > 0:
        rows += conn.execute(
            f"SELECT {_HIT_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.session_id "
            f"WHERE m.pk <= ?{short_sql}{where} ORDER BY m.pk DESC LIMIT ? OFFSET ?",
            [indexed, *short_args, *params, want, skip],
        ).fetchall()
    has_more = len(rows) > limit
    needles = [w.lower() for w in words]
    hits = [_hit(row, needles) for row in rows[:limit]]
    next_offset = offset + limit
    next_cursor = (
        validate.encode_cursor([next_offset]) if has_more and next_offset <= MAX_OFFSET else None
    )
    return SearchResults.model_construct(hits=hits, next_cursor=next_cursor)


def fts_match(words: Sequence[str]) -> str:
    """FTS5 syntax for "every term, each as literal text"."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _indexed(
    conn: sqlite3.Connection, long: list[str], where: str, args: list[Any], want: int, skip: int
) -> list[Any]:
    """``want`` indexed hits after the first ``skip``: the ranked window, then older matches
    newest first. Every page slices that same order."""
    query = (
        f"SELECT {_HIT_COLUMNS} FROM fts_trigram f "
        "JOIN messages m ON m.pk = f.rowid JOIN sessions s ON s.id = m.session_id "
        f"WHERE fts_trigram MATCH ?{where}"
    )
    match = fts_match(long)
    window = conn.execute(
        f"{query} ORDER BY f.rowid DESC LIMIT ?", [match, *args, WINDOW]
    ).fetchall()
    rows = _rank(conn, window, long)[skip : skip + want] if skip < len(window) else []
    if len(window) == WINDOW and skip + want > WINDOW:
        rows += conn.execute(
            f"{query} AND f.rowid < ? ORDER BY f.rowid DESC LIMIT ? OFFSET ?",
            [match, *args, window[-1][0], want - len(rows), max(0, skip - WINDOW)],
        ).fetchall()
    return rows


def _rank(conn: sqlite3.Connection, rows: list[Any], long: list[str]) -> list[Any]:
    """``rows`` best first by bm25 over the terms, newest first among equals.

    A term's weight is its inverse document frequency; every row holds every term, so with
    one term the weight changes no order and is not looked up.
    """
    if len(rows) < 2:
        return rows
    needles = [w.lower() for w in long]
    if len(long) == 1:
        weights = [1.0]
    else:
        total = newest_pk(conn)
        weights = [_rarity(conn, w, total) for w in long]
    average = sum(len(row[-1]) for row in rows) / len(rows)

    def score(row: Any) -> tuple[float, int]:
        text = row[-1].lower()
        norm = K1 * (1 - B + B * len(text) / average)
        total = 0.0
        for needle, weight in zip(needles, weights, strict=True):
            count = text.count(needle)
            total += weight * count * (K1 + 1) / (count + norm)
        return -total, -row[0]

    return sorted(rows, key=score)


def _rarity(conn: sqlite3.Connection, term: str, total: int) -> float:
    """bm25's inverse document frequency of ``term`` among ``total`` messages, counting its
    messages up to ``COMMON``."""
    (found,) = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM fts_trigram WHERE fts_trigram MATCH ? LIMIT ?)",
        (fts_match([term]), COMMON),
    ).fetchone()
    total = max(total, found)
    return max(1e-6, math.log((total - found + 0.5) / (found + 0.5)))


def _hit(row: Any, needles: list[str]) -> SearchHit:
    _pk, session_id, title, message_id, role, created_at, text = row
    return SearchHit.model_construct(
        session_id=session_id,
        session_title=title,
        message_id=message_id,
        role=role,
        snippet=snippet(text, needles),
        created_at=created_at,
    )


def snippet(text: str, needles: list[str], width: int = SNIPPET_CHARS) -> str:
    """A window of ``text`` around the first match, each match of a term in **bold**."""
    lower = text.lower()
    if len(lower) != len(text):  # lower-casing changed lengths: positions would drift
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    positions = [p for p in (lower.find(n) for n in needles) if p >= 0]
    first = min(positions, default=0)
    start = max(0, first - width // 3)
    end = min(len(text), start + width)
    window, folded = text[start:end], lower[start:end]
    marks: list[tuple[int, int]] = []
    for needle in sorted(needles, key=len, reverse=True):
        i = folded.find(needle)
        while i >= 0:
            if not any(a < i + len(needle) and i < b for a, b in marks):
                marks.append((i, i + len(needle)))
            i = folded.find(needle, i + len(needle))
    out, last = [], 0
    for a, b in sorted(marks):
        out += [window[last:a], "**", window[a:b], "**"]
        last = b
    out.append(window[last:])
    body = "".join(out).replace("\n", " ")
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")

"""Full-text search over every message of the user.

Two FTS5 indexes cover the searchable text: ``fts_trigram`` finds any substring of three or
more characters (so CJK text and parts of words are found) and ranks by bm25; ``fts_words``
(unicode61) serves terms shorter than three characters. Indexing runs in batches, riding along
with a write once ``index_batch`` messages wait for it, up to a watermark
(``search_state.indexed_pk``); search also scans the few committed messages above the
watermark, so it always sees every committed message.

User text is never FTS syntax: it is split on white space and each term is quoted, so quotes,
operators, column filters, ``C++`` or e-mail addresses are searched literally. All terms must
match (AND).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import InvalidInput
from threadline.storage.models import SearchHit, SearchResults
from threadline.storage.tree import session_row

SNIPPET_CHARS = 160
MAX_OFFSET = 10_000

_HIT_COLUMNS = """m.pk, m.session_id, s.title, m.id, m.role, m.created_at,
                  coalesce(m.body, m.content)"""


def index_pending(conn: sqlite3.Connection, at_least: int = 1) -> int:
    """Index the messages above the watermark if ``at_least`` of them wait; returns how many."""
    (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    top = row[0] if row else 0
    if top - indexed < at_least:
        return 0
    for table in ("fts_words", "fts_trigram"):
        conn.execute(
            f"INSERT INTO {table} (rowid, body) "
            "SELECT pk, coalesce(body, content) FROM messages WHERE pk > ? AND pk <= ?",
            (indexed, top),
        )
    conn.execute("UPDATE search_state SET indexed_pk = ?", (top,))
    return int(top - indexed)


def terms(query: object, config: Config) -> list[str]:
    limits = config.limits
    text = validate.text(query, "query", limits.max_query_chars, allow_empty=False)
    if "\x00" in text:
        raise InvalidInput("query", "must not contain NUL characters")
    words = text.split()
    if len(words) > limits.max_query_terms:
        raise InvalidInput(
            "query", f"has {len(words)} terms; the limit is {limits.max_query_terms}"
        )
    return words


def _quoted(words: list[str]) -> str:
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


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

    filters, params = [], []
    if session_id is not None:
        filters.append("m.session_id = ?")
        params.append(session_id)
    if role is not None:
        filters.append("m.role = ?")
        params.append(role)
    where = "".join(f" AND {f}" for f in filters)

    (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()
    # Unindexed tail first: the newest messages, few by construction.
    needles = [w.casefold() for w in words]
    tail_sql = (
        f"SELECT {_HIT_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.session_id "
        "WHERE m.pk > ?"
        + "".join(" AND tl_contains(coalesce(m.body, m.content), ?)" for _ in needles)
        + where
        + " ORDER BY m.pk DESC"
    )
    tail = conn.execute(tail_sql, [indexed, *needles, *params]).fetchall()

    rows: list[Any] = tail[offset : offset + limit + 1]
    want = limit + 1 - len(rows)
    if want > 0:
        rows += _indexed(conn, words, where, params, want, max(0, offset - len(tail)))
    has_more = len(rows) > limit
    hits = [_hit(row, needles) for row in rows[:limit]]
    next_offset = offset + limit
    next_cursor = (
        validate.encode_cursor([next_offset]) if has_more and next_offset <= MAX_OFFSET else None
    )
    return SearchResults.model_construct(hits=hits, next_cursor=next_cursor)


def _indexed(
    conn: sqlite3.Connection, words: list[str], where: str, params: list[str], want: int, skip: int
) -> list[Any]:
    long_words = [w for w in words if len(w) >= 3]
    short_words = [w for w in words if len(w) < 3 and any(ch.isalnum() for ch in w)]
    # A short term of punctuation only ("!", "#") is in neither index: match it as a substring.
    others = [w.casefold() for w in words if w not in long_words and w not in short_words]
    conditions, args = [], []
    if long_words:
        table = "fts_trigram"
        args.append(_quoted(long_words))
        if short_words:
            conditions.append("f.rowid IN (SELECT rowid FROM fts_words WHERE fts_words MATCH ?)")
            args.append(_quoted(short_words))
    elif short_words:
        table = "fts_words"
        args.append(_quoted(short_words))
    else:
        return _scan(conn, others, where, params, want, skip)
    conditions += ["tl_contains(coalesce(m.body, m.content), ?)"] * len(others)
    extra = "".join(f" AND {c}" for c in conditions)
    sql = (
        f"SELECT {_HIT_COLUMNS} FROM {table} f "
        "JOIN messages m ON m.pk = f.rowid JOIN sessions s ON s.id = m.session_id "
        f"WHERE {table} MATCH ?{extra}{where} ORDER BY f.rank, m.pk DESC LIMIT ? OFFSET ?"
    )
    return conn.execute(sql, [*args, *others, *params, want, skip]).fetchall()


def _scan(
    conn: sqlite3.Connection,
    needles: list[str],
    where: str,
    params: list[str],
    want: int,
    skip: int,
) -> list[Any]:
    """Indexed messages holding every needle, newest first, found without an index."""
    sql = (
        f"SELECT {_HIT_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.session_id "
        "WHERE m.pk <= (SELECT indexed_pk FROM search_state)"
        + "".join(" AND tl_contains(coalesce(m.body, m.content), ?)" for _ in needles)
        + where
        + " ORDER BY m.pk DESC LIMIT ? OFFSET ?"
    )
    return conn.execute(sql, [*needles, *params, want, skip]).fetchall()


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
    folded = text.casefold()
    if len(folded) != len(text):  # case folding changed lengths (ß -> ss): match on the text
        folded = text.lower()
    positions = [p for p in (folded.find(n) for n in needles) if p >= 0]
    first = min(positions, default=0)
    start = max(0, first - width // 3)
    end = min(len(text), start + width)
    window = text[start:end]
    lower = folded[start:end]
    marks: list[tuple[int, int]] = []
    for needle in sorted(set(needles), key=len, reverse=True):
        i = lower.find(needle)
        while i >= 0 and needle:
            if not any(a < i + len(needle) and i < b for a, b in marks):
                marks.append((i, i + len(needle)))
            i = lower.find(needle, i + len(needle))
    out, last = [], 0
    for a, b in sorted(marks):
        out += [window[last:a], "**", window[a:b], "**"]
        last = b
    out.append(window[last:])
    body = "".join(out).replace("\n", " ")
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")

"""What a search looks at: the filters as SQL, the compaction summaries as candidates, and
the columns of a hit's row (shared by ranked and exact search)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from threadline.storage import validate
from threadline.storage.errors import InvalidInput
from threadline.storage.rows import session_row

Order = Literal["relevance", "newest", "oldest"]

HIT_COLUMNS = """m.pk, m.session_id, s.title, m.id, m.role, m.created_at,
                 coalesce(m.body, m.content)"""
TEXT = "coalesce(m.body, m.content)"
FROM = "FROM messages m JOIN sessions s ON s.id = m.session_id"


@dataclass(frozen=True)
class Scope:
    """The filters, as SQL over ``messages m`` (each clause starts with AND), and the same
    over ``compactions m`` for the summaries (which read as user messages), if any pass."""

    sql: str
    args: tuple[Any, ...]
    summary_sql: str | None = None
    summary_args: tuple[Any, ...] = ()


def scope(
    conn: sqlite3.Connection,
    session_id: str | None,
    role: str | None,
    after: object,
    before: object,
) -> Scope:
    sql, args = "", []
    if session_id is not None:
        session_row(conn, session_id, "1")
        sql += " AND m.session_id = ?"
        args.append(session_id)
    if role is not None and role not in ("system", "user", "assistant", "tool"):
        raise InvalidInput("role", "must be one of system, user, assistant, tool")
    start, end = validate.moment(after, "after"), validate.moment(before, "before")
    if start is not None and end is not None and start >= end:
        raise InvalidInput("before", "must be later than after")
    if start is not None:
        sql += " AND m.created_at >= ?"
        args.append(start)
    if end is not None:
        sql += " AND m.created_at < ?"
        args.append(end)
    # Summaries read as user messages: the same clauses (compactions have these columns).
    summaries = (sql, tuple(args)) if role in (None, "user") else (None, ())
    if role is not None:
        sql += " AND m.role = ?"
        args.append(role)
    return Scope(sql, tuple(args), *summaries)


@dataclass(frozen=True, slots=True)
class Summary:
    """A compaction summary as a search candidate, keyed by minus its pk (messages' pks are
    positive). ``row`` is shaped like a message hit's row."""

    row: tuple[Any, ...]
    replaced: int
    end_pk: int

    @property
    def text(self) -> str:
        return str(self.row[-1])


def summaries_of(conn: sqlite3.Connection, where: Scope) -> dict[int, Summary]:
    """Every compaction summary in scope: what is searched besides the messages."""
    if where.summary_sql is None:
        return {}
    rows = conn.execute(
        "SELECT -m.pk, m.session_id, s.title, 'compaction:' || m.pk, 'user', m.created_at, "
        "m.summary, m.replaced, m.end_pk FROM compactions m JOIN sessions s ON s.id = "
        f"m.session_id WHERE 1{where.summary_sql}",
        where.summary_args,
    ).fetchall()
    return {row[0]: Summary(tuple(row[:7]), row[7], row[8]) for row in rows}


def when(key: int, summaries: dict[int, Summary]) -> tuple[int, int]:
    """Where a hit sorts in time: a message by its pk, a summary right after the last
    message it stands for."""
    return (summaries[key].end_pk, 1) if key in summaries else (key, 0)

"""Row lookups every operation starts from: a session's row, a message's key and id, a
session's compactions. Each raises the store's not-found error for an id that is not there."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from threadline.storage import validate
from threadline.storage.errors import MessageNotFound, SessionNotFound
from threadline.storage.models import Message


@dataclass(frozen=True, slots=True)
class Compaction:
    """A stored compaction, with what reading and estimating need of its endpoints."""

    pk: int
    start_pk: int
    end_pk: int
    start_parent_pk: int | None
    start_parent_id: str | None
    start_depth: int
    end_depth: int
    replaced_tokens: int
    summary: str
    replaced: int
    created_at: str

    @property
    def summary_id(self) -> str:
        return f"compaction:{self.pk}"

    def message(self) -> Message:
        return Message.model_construct(
            id=self.summary_id,
            role="user",
            content=self.summary,
            name=None,
            metadata=None,
            parent_id=self.start_parent_id,
            created_at=self.created_at,
            compacted=False,
            summary_of=self.replaced,
            truncated=False,
        )


def session_row(conn: sqlite3.Connection, session_id: str, columns: str) -> tuple[Any, ...]:
    validate.session_id(session_id)
    row = conn.execute(f"SELECT {columns} FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    return tuple(row)


def message_pk(conn: sqlite3.Connection, session_id: str, message_id: str, field: str) -> int:
    validate.message_id(message_id, field)
    row = conn.execute(
        "SELECT pk FROM messages WHERE session_id = ? AND id = ?", (session_id, message_id)
    ).fetchone()
    if row is None:
        raise MessageNotFound(session_id, message_id, field)
    return int(row[0])


def message_id(conn: sqlite3.Connection, pk: int) -> str:
    value: str = conn.execute("SELECT id FROM messages WHERE pk = ?", (pk,)).fetchone()[0]
    return value


def compactions(conn: sqlite3.Connection, session_id: str) -> list[Compaction]:
    """The session's compactions, newest first."""
    rows = conn.execute(
        """SELECT c.pk, c.start_pk, c.end_pk, s.parent_pk,
                  (SELECT p.id FROM messages p WHERE p.pk = s.parent_pk),
                  s.depth, e.depth, e.path_tokens - s.path_tokens + s.tokens,
                  c.summary, c.replaced, c.created_at
           FROM compactions c
           JOIN messages s ON s.pk = c.start_pk
           JOIN messages e ON e.pk = c.end_pk
           WHERE c.session_id = ? ORDER BY c.pk DESC""",
        (session_id,),
    ).fetchall()
    return [Compaction(*row) for row in rows]

"""The store's calls that combine several lower modules in one SQLite transaction.

``Store`` validates a call's arguments and runs one function per call on the writer or a
reader connection; where that function is a single lower module's (``tree.append``,
``reading.history``, ``compaction.compact``) it calls it directly, and where a call needs
several steps in one transaction (create and seed, change and re-read, delete and re-render the
frozen prompt) the step list is here. A second backend writes this module again in its own
query language, with the same names.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from threadline.config import Config
from threadline.storage import context, reading, rows, sessions, tree
from threadline.storage.models import (
    Branch,
    ContextBlock,
    ContextView,
    Deleted,
    History,
    SessionInfo,
)
from threadline.storage.validate import Encoded


def create_session(
    conn: sqlite3.Connection,
    config: Config,
    title: str | None,
    session_id: str | None,
    metadata: dict[str, Any] | None,
    batch: Encoded,
) -> SessionInfo:
    """A new session, seeded with ``batch`` (already validated and encoded) if not empty."""
    sid = sessions.create(conn, config, title, session_id, metadata)
    if batch:
        tree.append(conn, config, sid, batch)
    return sessions.info(conn, config, sid)


def rename_session(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    title: str | None,
    metadata: dict[str, Any] | None,
) -> SessionInfo:
    sessions.rename(conn, config, session_id, title, metadata)
    return sessions.info(conn, config, session_id)


def delete_session(conn: sqlite3.Connection, session_id: str) -> Deleted:
    count = sessions.delete(conn, session_id)
    return _deleted(session_id, count, None)


def fork_session(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    message_id: str | None,
    title: str | None,
) -> SessionInfo:
    child = sessions.fork(conn, config, session_id, message_id, title)
    return sessions.info(conn, config, child)


def history_and_branches(
    conn: sqlite3.Connection, session_id: str, page: dict[str, Any]
) -> tuple[History, list[Branch]]:
    return reading.history(conn, session_id, **page), tree.branches(conn, session_id)


def set_head(
    conn: sqlite3.Connection, config: Config, session_id: str, message_id: str, expected: Any
) -> SessionInfo:
    tree.set_head(conn, session_id, message_id, expected)
    return sessions.info(conn, config, session_id)


def delete_messages(
    conn: sqlite3.Connection, config: Config, session_id: str, message_id: str
) -> Deleted:
    """Delete a subtree; a session left empty gets its frozen prompt rendered anew."""
    count, head_pk = tree.delete_subtree(conn, session_id, message_id)
    if head_pk is None:
        context.freeze(conn, config, session_id)
        return _deleted(session_id, count, None)
    return _deleted(session_id, count, rows.message_id(conn, head_pk))


def clear_session(
    conn: sqlite3.Connection, config: Config, session_id: str, expected: Any
) -> Deleted:
    tree.guard_head(conn, session_id, expected)
    count = tree.clear(conn, session_id)
    context.freeze(conn, config, session_id)
    return _deleted(session_id, count, None)


def refreshed_context(conn: sqlite3.Connection, config: Config, session_id: str) -> ContextView:
    """The session's context after rendering its frozen prompt anew."""
    rows.session_row(conn, session_id, "1")
    context.freeze(conn, config, session_id)
    return context.view(conn, config, session_id)


def user_context(conn: sqlite3.Connection, config: Config) -> list[ContextBlock]:
    return [b for b in context.blocks(conn, config, "") if b.scope == "user"]


def _deleted(session_id: str, count: int, head_id: str | None) -> Deleted:
    return Deleted.model_construct(session_id=session_id, messages_deleted=count, head_id=head_id)

"""The message tree: appending (to the head or as a branch), the head, branches, deleting.

Writes validate and encode their messages before they are queued (``validate.encode``), so
the writer thread runs only SQL; reading the tree's paths is ``reading``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from threadline.config import Config
from threadline.storage.errors import HeadMoved, InvalidInput, MessageConflict, SessionEnded
from threadline.storage.models import AppendResult, Branch, Message
from threadline.storage.reading import effective_tokens, walk
from threadline.storage.rows import message_id, message_pk, session_row
from threadline.storage.validate import Encoded
from threadline.text import new_id, now

OMITTED: Any = object()  # parent_id not given: attach to the head

INSERT_MESSAGE = """
INSERT INTO messages (session_id, id, parent_pk, depth, path_tokens, role, content, is_json, body,
                      name, metadata, tokens, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def guard_head(conn: sqlite3.Connection, session_id: str, expected: Any) -> None:
    """Refuse (``HeadMoved``) unless the head is ``expected``: a message id, or None for a
    session without messages; ``OMITTED`` guards nothing."""
    if expected is OMITTED:
        return
    if expected is not None and not isinstance(expected, str):
        raise InvalidInput("expected_head", "must be a message id, or null for an empty session")
    (head,) = session_row(conn, session_id, "(SELECT id FROM messages WHERE pk = head_pk)")
    if head != expected:
        raise HeadMoved(session_id, expected, head)


def continued_in(conn: sqlite3.Connection, session_id: str) -> str | None:
    """The session an ended one was split into."""
    row = conn.execute(
        "SELECT id FROM sessions WHERE parent_session_id = ? AND lineage = 'split' "
        "ORDER BY created_at, id LIMIT 1",
        (session_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def ended(conn: sqlite3.Connection, session_id: str, verb: str) -> SessionEnded:
    """The refusal of a write to an ended session, naming where it continues."""
    return refusal(session_id, continued_in(conn, session_id), verb)


def refusal(session_id: str, child: str | None, verb: str) -> SessionEnded:
    """The refusal of a write (``verb``) to an ended session split into ``child``."""
    where = f"session {child!r}" if child else "the session it was split into"
    return SessionEnded(
        f"session {session_id!r} has ended (it was split{f' into {child!r}' if child else ''}); "
        f"{verb} {where} instead"
    )


def append(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    encoded: Encoded,
    parent_id: Any = OMITTED,
    expected_head: Any = OMITTED,
) -> AppendResult:
    """Append ``encoded`` messages (``validate.encode``) to the head or under ``parent_id``."""
    guard_head(conn, session_id, expected_head)
    # The head's depth and path tokens come with the session's row: the common append (to
    # the head) reads one row before it writes.
    status, head_pk, estimate, depth, path_tokens = session_row(
        conn,
        session_id,
        "status, head_pk, token_estimate, "
        "coalesce((SELECT depth FROM messages WHERE pk = head_pk), 0), "
        "coalesce((SELECT path_tokens FROM messages WHERE pk = head_pk), 0)",
    )
    if status == "ended":
        raise ended(conn, session_id, "append to")
    if not encoded:
        raise InvalidInput("messages", "must hold at least one message")
    parent_pk = head_pk
    if parent_id is None:
        parent_pk, depth, path_tokens = None, 0, 0
    elif parent_id is not OMITTED:
        parent_pk = message_pk(conn, session_id, parent_id, "parent_id")
        depth, path_tokens = conn.execute(
            "SELECT depth, path_tokens FROM messages WHERE pk = ?", (parent_pk,)
        ).fetchone()
    linear = parent_pk == head_pk
    created_at = now()
    ids: list[str] = []
    inserted = added = 0
    for i, (message, row) in enumerate(encoded):
        role, content, is_json, _, name, meta, tokens = row
        mid = message.id
        if mid is not None:
            existing = conn.execute(
                "SELECT pk, depth, path_tokens, role, content, is_json, name, metadata "
                "FROM messages WHERE session_id = ? AND id = ?",
                (session_id, mid),
            ).fetchone()
            if existing is not None:
                if tuple(existing[3:]) != (role, content, is_json, name, meta):
                    raise MessageConflict(
                        f"messages[{i}].id: message {mid!r} already exists in session "
                        f"{session_id!r} with different content; use a new id"
                    )
                parent_pk, depth, path_tokens = existing[:3]
                linear = False
                ids.append(mid)
                continue
        else:
            mid = new_id()
        depth += 1
        path_tokens += tokens
        cursor = conn.execute(
            INSERT_MESSAGE, (session_id, mid, parent_pk, depth, path_tokens, *row, created_at)
        )
        parent_pk = cursor.lastrowid
        inserted += 1
        added += tokens
        ids.append(mid)
    if inserted == 0:  # a retry of messages already stored: nothing changes
        head = head_pk
    else:
        head = parent_pk
        estimate = estimate + added if linear else effective_tokens(conn, session_id, head)
        conn.execute(
            "UPDATE sessions SET head_pk = ?, message_count = message_count + ?, "
            "token_estimate = ?, updated_at = ? WHERE id = ?",
            (head, inserted, estimate, created_at, session_id),
        )
    head_id = None
    if head is not None:
        head_id = ids[-1] if inserted else message_id(conn, head)
    return AppendResult.of(
        {
            "session_id": session_id,
            "message_ids": ids,
            "head_id": head_id,
            "token_estimate": estimate,
            "needs_compaction": estimate > config.compaction.threshold_tokens,
        }
    )


def set_head(
    conn: sqlite3.Connection, session_id: str, message_id: str, expected_head: Any = OMITTED
) -> None:
    session_row(conn, session_id, "1")
    guard_head(conn, session_id, expected_head)
    pk = message_pk(conn, session_id, message_id, "message_id")
    conn.execute(
        "UPDATE sessions SET head_pk = ?, token_estimate = ?, updated_at = ? WHERE id = ?",
        (pk, effective_tokens(conn, session_id, pk), now(), session_id),
    )


def branches(conn: sqlite3.Connection, session_id: str) -> list[Branch]:
    (head_pk,) = session_row(conn, session_id, "head_pk")
    rows = conn.execute(
        """SELECT m.pk, m.id, m.depth, m.created_at, substr(coalesce(m.body, m.content), 1, 160)
           FROM messages m
           WHERE m.session_id = ? AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_pk = m.pk)
           ORDER BY m.pk""",
        (session_id,),
    ).fetchall()
    return [
        Branch.model_construct(
            leaf_id=mid,
            message_count=depth,
            created_at=created,
            preview=preview,
            is_head=pk == head_pk,
        )
        for pk, mid, depth, created, preview in rows
    ]


def branch_count(conn: sqlite3.Connection, session_id: str) -> int:
    count: int = conn.execute(
        """SELECT count(*) FROM messages m WHERE m.session_id = ?
           AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_pk = m.pk)""",
        (session_id,),
    ).fetchone()[0]
    return count


def clear(conn: sqlite3.Connection, session_id: str) -> int:
    """Delete every message of the session (their compactions go with them); the session,
    its blocks and its usage stay. Returns how many messages went."""
    session_row(conn, session_id, "1")
    deleted = conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,)).rowcount
    conn.execute(
        "UPDATE sessions SET head_pk = NULL, message_count = 0, token_estimate = 0, "
        "updated_at = ? WHERE id = ?",
        (now(), session_id),
    )
    return int(deleted)


def pop(conn: sqlite3.Connection, session_id: str) -> Message | None:
    """Take the head message off the session: it is deleted and the head moves to its parent
    (a head with children, after a rewind, stays on their branches and only the head moves).
    None for a session without messages."""
    (head_pk,) = session_row(conn, session_id, "head_pk")
    if head_pk is None:
        return None
    (entry,) = walk(conn, head_pk, [], want=1)
    message = entry.message()
    if conn.execute("SELECT 1 FROM messages WHERE parent_pk = ?", (head_pk,)).fetchone() is None:
        delete_subtree(conn, session_id, message.id)  # a leaf: the head moves up with it
        return message
    (parent_pk,) = conn.execute(
        "SELECT parent_pk FROM messages WHERE pk = ?", (head_pk,)
    ).fetchone()
    conn.execute(
        "UPDATE sessions SET head_pk = ?, token_estimate = ?, updated_at = ? WHERE id = ?",
        (parent_pk, effective_tokens(conn, session_id, parent_pk), now(), session_id),
    )
    return message


def delete_subtree(
    conn: sqlite3.Connection, session_id: str, message_id: str
) -> tuple[int, int | None]:
    """Delete a message and everything below it; returns (count, new head pk)."""
    (head_pk,) = session_row(conn, session_id, "head_pk")
    pk = message_pk(conn, session_id, message_id, "message_id")
    parent_pk = conn.execute("SELECT parent_pk FROM messages WHERE pk = ?", (pk,)).fetchone()[0]
    deleted = conn.execute(
        """DELETE FROM messages WHERE pk IN (
               WITH RECURSIVE sub (pk) AS (
                   VALUES (?) UNION ALL
                   SELECT m.pk FROM messages m JOIN sub ON m.parent_pk = sub.pk)
               SELECT pk FROM sub)""",
        (pk,),
    ).rowcount
    head_gone = conn.execute("SELECT 1 FROM messages WHERE pk = ?", (head_pk,)).fetchone() is None
    if head_pk is not None and head_gone:
        head_pk = parent_pk
    conn.execute(
        "UPDATE sessions SET head_pk = ?, message_count = message_count - ?, token_estimate = ?, "
        "updated_at = ? WHERE id = ?",
        (head_pk, deleted, effective_tokens(conn, session_id, head_pk), now(), session_id),
    )
    return deleted, head_pk

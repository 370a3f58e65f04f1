"""The message tree on PostgreSQL: appending, the head, branches, deleting.

The same rules as ``storage/tree.py`` and ``storage/reading.py``: a message's ``depth`` and
``path_tokens`` never change, a path holds one message per depth, the head is the leaf that
history reads and appends extend. Concurrent writers of one session queue on its row
(``SELECT ... FOR UPDATE``), so concurrent appends without a parent make one linear history.
Reading a path, with compactions applied, is ``reading``.
"""

from __future__ import annotations

import json
from typing import Any

from threadline.config import Config
from threadline.storage.errors import (
    HeadMoved,
    InvalidInput,
    MessageConflict,
    SessionEnded,
)
from threadline.storage.models import AppendResult, Branch, Message
from threadline.storage.postgres import reading
from threadline.storage.postgres.rows import Tx, message_id, message_pk, session_row
from threadline.storage.postgres.sessions import continued_in
from threadline.storage.tree import OMITTED, refusal
from threadline.storage.validate import Encoded
from threadline.text import new_id, now

INSERT = (
    "INSERT INTO messages (user_id, session_id, id, parent_pk, depth, path_tokens, role, "
    "content, is_json, body, name, metadata, tokens, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)


def storable(columns: tuple[Any, ...]) -> tuple[Any, ...]:
    """A message's columns (``validate.encode_message``) as PostgreSQL's text can hold them:
    it holds no NUL character, so a plain text with one is kept as a JSON string (which reads
    back as the same text) and the searchable text goes without it."""
    role, content, is_json, body, name, meta, tokens = columns
    if not is_json and "\x00" in content:
        content, is_json, body = json.dumps(content, ensure_ascii=False), 1, content
    if body is not None:
        body = body.replace("\x00", "")
    return role, content, bool(is_json), body, name, meta, tokens


async def locked(tx: Tx, session_id: str) -> dict[str, Any]:
    """The session's row, locked until the transaction ends (writers of one session queue),
    with its head's id, depth and path tokens.

    The head is read by a second statement: a lock that waited for another writer returns
    that writer's row, but anything else the same statement reads (a subquery on messages)
    comes from the snapshot taken before the wait, which lacks the message it appended."""
    row = dict(
        await session_row(
            tx, session_id, "s.status, s.head_pk, s.token_estimate, s.message_count", lock=True
        )
    )
    head = None
    if row["head_pk"] is not None:
        head = await tx.fetchrow(
            "SELECT id, depth, path_tokens FROM messages WHERE user_id = $1 AND pk = $2",
            row["head_pk"],
        )
    row["head_id"], row["depth"], row["path_tokens"] = head if head is not None else (None, 0, 0)
    return row


def guard(session_id: str, row: Any, expected: Any) -> None:
    if expected is OMITTED:
        return
    if expected is not None and not isinstance(expected, str):
        raise InvalidInput("expected_head", "must be a message id, or null for an empty session")
    if row["head_id"] != expected:
        raise HeadMoved(session_id, expected, row["head_id"])


async def ended(tx: Tx, session_id: str, verb: str) -> SessionEnded:
    """The refusal of a write to an ended session, naming where it continues."""
    return refusal(session_id, await continued_in(tx, session_id), verb)


async def append(
    tx: Tx,
    config: Config,
    session_id: str,
    encoded: Encoded,
    parent_id: Any = OMITTED,
    expected_head: Any = OMITTED,
) -> AppendResult:
    """Append ``encoded`` messages (``validate.encode``) to the head or under ``parent_id``."""
    session = await locked(tx, session_id)
    guard(session_id, session, expected_head)
    if session["status"] == "ended":
        raise await ended(tx, session_id, "append to")
    if not encoded:
        raise InvalidInput("messages", "must hold at least one message")
    head_pk = session["head_pk"]
    parent_pk = head_pk
    if parent_id is None:
        parent_pk = None
    elif parent_id is not OMITTED:
        parent_pk = await message_pk(tx, session_id, parent_id, "parent_id")
    linear = parent_pk == head_pk
    depth, path_tokens = 0, 0
    if linear and head_pk is not None:  # the common append: the head's came with its session
        depth, path_tokens = session["depth"], session["path_tokens"]
    elif parent_pk is not None:
        row = await tx.fetchrow(
            "SELECT depth, path_tokens FROM messages WHERE user_id = $1 AND pk = $2", parent_pk
        )
        assert row is not None
        depth, path_tokens = row["depth"], row["path_tokens"]
    created_at = now()
    ids: list[str] = []
    inserted = added = 0
    for i, (message, columns) in enumerate(encoded):
        stored = storable(columns)
        role, content, is_json, _, name, meta, tokens = stored
        mid = message.id
        if mid is not None:
            existing = await tx.fetchrow(
                "SELECT pk, depth, path_tokens, role, content, is_json, name, metadata "
                "FROM messages WHERE user_id = $1 AND session_id = $2 AND id = $3",
                session_id,
                mid,
            )
            if existing is not None:
                stored = tuple(existing[k] for k in ("role", "content", "is_json", "name"))
                if (*stored, existing["metadata"]) != (role, content, is_json, name, meta):
                    raise MessageConflict(
                        f"messages[{i}].id: message {mid!r} already exists in session "
                        f"{session_id!r} with different content; use a new id"
                    )
                linear = False
                parent_pk, depth, path_tokens = (
                    existing["pk"],
                    existing["depth"],
                    existing["path_tokens"],
                )
                ids.append(mid)
                continue
        else:
            mid = new_id()
        depth += 1
        path_tokens += tokens
        last = linear and i == len(encoded) - 1
        # The last message of a linear append moves the head in the same statement.
        parent_pk = await tx.fetchval(
            (
                f"WITH new AS ({INSERT} RETURNING pk) UPDATE sessions SET head_pk = "
                "(SELECT pk FROM new), message_count = message_count + $15, token_estimate = "
                "token_estimate + $16, updated_at = $14 WHERE user_id = $1 AND id = $2 "
                "RETURNING head_pk"
            )
            if last
            else f"{INSERT} RETURNING pk",
            session_id,
            mid,
            parent_pk,
            depth,
            path_tokens,
            *stored,
            created_at,
            *((inserted + 1, added + tokens) if last else ()),
        )
        inserted += 1
        added += tokens
        ids.append(mid)
    estimate = session["token_estimate"]
    head = head_pk
    if inserted and linear:
        head, estimate = parent_pk, estimate + added  # moved with the last insert
    elif inserted:
        head = parent_pk
        estimate = await reading.effective_tokens(tx, session_id, head)
        await tx.execute(
            "UPDATE sessions SET head_pk = $3, message_count = message_count + $4, "
            "token_estimate = $5, updated_at = $6 WHERE user_id = $1 AND id = $2",
            session_id,
            head,
            inserted,
            estimate,
            created_at,
        )
    head_id = None
    if head is not None:
        head_id = ids[-1] if inserted else await message_id(tx, head)
    return AppendResult.of(
        {
            "session_id": session_id,
            "message_ids": ids,
            "head_id": head_id,
            "token_estimate": estimate,
            "needs_compaction": estimate > config.compaction.threshold_tokens,
        }
    )


async def branches(tx: Tx, session_id: str) -> list[Branch]:
    session = await session_row(tx, session_id, "s.head_pk")
    rows = await tx.fetch(
        """SELECT m.pk, m.id, m.depth, m.created_at, substr(coalesce(m.body, m.content), 1, 160)
               AS preview
           FROM messages m
           WHERE m.user_id = $1 AND m.session_id = $2 AND NOT EXISTS
               (SELECT 1 FROM messages c WHERE c.user_id = $1 AND c.parent_pk = m.pk)
           ORDER BY m.pk""",
        session_id,
    )
    return [
        Branch.model_construct(
            leaf_id=r["id"],
            message_count=r["depth"],
            created_at=r["created_at"],
            preview=r["preview"],
            is_head=r["pk"] == session["head_pk"],
        )
        for r in rows
    ]


async def set_head(tx: Tx, session_id: str, message_id_: str, expected_head: Any) -> None:
    session = await locked(tx, session_id)
    guard(session_id, session, expected_head)
    pk = await message_pk(tx, session_id, message_id_, "message_id")
    await _move_head(tx, session_id, pk)


async def _move_head(tx: Tx, session_id: str, pk: int | None, removed: int = 0) -> None:
    await tx.execute(
        "UPDATE sessions SET head_pk = $3, message_count = message_count - $4, "
        "token_estimate = $5, updated_at = $6 WHERE user_id = $1 AND id = $2",
        session_id,
        pk,
        removed,
        await reading.effective_tokens(tx, session_id, pk),
        now(),
    )


async def clear(tx: Tx, session_id: str, expected_head: Any) -> int:
    """Delete every message of the session; returns how many went."""
    session = await locked(tx, session_id)
    guard(session_id, session, expected_head)
    await tx.execute(
        "UPDATE sessions SET head_pk = NULL, message_count = 0, token_estimate = 0, "
        "updated_at = $3 WHERE user_id = $1 AND id = $2",
        session_id,
        now(),
    )
    status = await tx.execute(
        "DELETE FROM messages WHERE user_id = $1 AND session_id = $2", session_id
    )
    return int(status.split()[-1])


async def delete_subtree(tx: Tx, session_id: str, message_id_: str) -> tuple[int, int | None]:
    """Delete a message and everything below it; returns (count, new head pk)."""
    session = await locked(tx, session_id)
    head_pk = session["head_pk"]
    pk = await message_pk(tx, session_id, message_id_, "message_id")
    parent_pk = await tx.fetchval(
        "SELECT parent_pk FROM messages WHERE user_id = $1 AND pk = $2", pk
    )
    gone = await tx.fetch(
        """WITH RECURSIVE sub (pk) AS (
               SELECT $2::bigint
               UNION ALL
               SELECT m.pk FROM messages m JOIN sub ON m.user_id = $1 AND m.parent_pk = sub.pk)
           SELECT pk FROM sub""",
        pk,
    )
    pks = [r["pk"] for r in gone]
    # One statement: a parent key is checked when the statement ends, the subtree gone whole.
    await tx.execute("DELETE FROM messages WHERE user_id = $1 AND pk = ANY($2::bigint[])", pks)
    if head_pk in pks:
        head_pk = parent_pk
    await _move_head(tx, session_id, head_pk, len(pks))
    return len(pks), head_pk


async def pop(tx: Tx, session_id: str) -> Message | None:
    """Take the head message off the session (see ``storage/tree.py``'s ``pop``)."""
    session = await locked(tx, session_id)
    head_pk = session["head_pk"]
    if head_pk is None:
        return None
    (entry,) = await reading.walk(tx, head_pk, [], want=1)
    message = entry.message()
    has_children = await tx.fetchval(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE user_id = $1 AND parent_pk = $2)", head_pk
    )
    if not has_children:
        await delete_subtree(tx, session_id, message.id)
        return message
    assert entry.row is not None
    await _move_head(tx, session_id, entry.row[2])
    return message

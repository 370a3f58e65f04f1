"""The message tree on PostgreSQL: appending, reading a path, the head, branches, deleting.

The same rules as ``storage/tree.py`` and ``storage/reading.py``: a message's ``depth`` and
``path_tokens`` never change, a path holds one message per depth, the head is the leaf that
history reads and appends extend. Concurrent writers of one session queue on its row
(``SELECT ... FOR UPDATE``), so concurrent appends without a parent make one linear history.
Compaction overlays are not on this backend yet: it refuses to compact, so no path has one.
"""

from __future__ import annotations

import json
from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.cutting import truncate_old_tool_output
from threadline.storage.errors import (
    HeadMoved,
    InvalidInput,
    MessageConflict,
    SessionEnded,
    SessionNotFound,
)
from threadline.storage.models import AppendResult, Branch, History, HistoryDelta, Message
from threadline.storage.postgres.rows import Tx, message_id, message_pk, session_row
from threadline.storage.postgres.sessions import continued_in
from threadline.storage.tree import OMITTED
from threadline.storage.validate import Encoded
from threadline.text import new_id, now

# A path from a message (``$2``) up towards the root, at most ``$3`` messages, newest first,
# in the columns ``_message`` reads.
_CHAIN = """
WITH RECURSIVE chain (n, pk, parent_pk) AS (
    SELECT 0::bigint, pk, parent_pk FROM messages WHERE user_id = $1 AND pk = $2
    UNION ALL
    SELECT chain.n + 1, m.pk, m.parent_pk FROM chain
    JOIN messages m ON m.user_id = $1 AND m.pk = chain.parent_pk
    WHERE chain.n + 1 < $3::bigint
)
SELECT m.pk, m.id, m.parent_pk, p.id AS parent_id, m.role, m.content, m.is_json, m.name,
       m.metadata, m.created_at
FROM chain JOIN messages m ON m.user_id = $1 AND m.pk = chain.pk
LEFT JOIN messages p ON p.user_id = $1 AND p.pk = m.parent_pk
ORDER BY chain.n
"""


def _message(row: Any) -> Message:
    return Message.of(
        {
            "id": row["id"],
            "role": row["role"],
            "content": json.loads(row["content"]) if row["is_json"] else row["content"],
            "name": row["name"],
            "metadata": json.loads(row["metadata"]) if row["metadata"] is not None else None,
            "parent_id": row["parent_id"],
            "created_at": row["created_at"],
            "compacted": False,
            "summary_of": None,
            "truncated": False,
        }
    )


def _storable(columns: tuple[Any, ...]) -> tuple[Any, ...]:
    """A message's columns (``validate.encode_message``) as PostgreSQL's text can hold them:
    it holds no NUL character, so a plain text with one is kept as a JSON string (which reads
    back as the same text) and the searchable text goes without it."""
    role, content, is_json, body, name, meta, tokens = columns
    if not is_json and "\x00" in content:
        content, is_json, body = json.dumps(content, ensure_ascii=False), 1, content
    if body is not None:
        body = body.replace("\x00", "")
    return role, content, bool(is_json), body, name, meta, tokens


async def _locked(tx: Tx, session_id: str) -> Any:
    """The session's row, locked until the transaction ends: writers of one session queue."""
    return await session_row(
        tx,
        session_id,
        "s.status, s.head_pk, s.token_estimate, s.message_count, "
        "(SELECT m.id FROM messages m WHERE m.user_id = $1 AND m.pk = s.head_pk) AS head_id",
        lock=True,
    )


def _guard(session_id: str, row: Any, expected: Any) -> None:
    if expected is OMITTED:
        return
    if expected is not None and not isinstance(expected, str):
        raise InvalidInput("expected_head", "must be a message id, or null for an empty session")
    if row["head_id"] != expected:
        raise HeadMoved(session_id, expected, row["head_id"])


async def _ended(tx: Tx, session_id: str, verb: str) -> SessionEnded:
    child = await continued_in(tx, session_id)
    where = f"session {child!r}" if child else "the session it was split into"
    return SessionEnded(
        f"session {session_id!r} has ended (it was split{f' into {child!r}' if child else ''}); "
        f"{verb} {where} instead"
    )


async def _path_tokens(tx: Tx, pk: int | None) -> int:
    if pk is None:
        return 0
    value: int = await tx.fetchval(
        "SELECT path_tokens FROM messages WHERE user_id = $1 AND pk = $2", pk
    )
    return value


async def append(
    tx: Tx,
    config: Config,
    session_id: str,
    encoded: Encoded,
    parent_id: Any = OMITTED,
    expected_head: Any = OMITTED,
) -> AppendResult:
    """Append ``encoded`` messages (``validate.encode``) to the head or under ``parent_id``."""
    session = await _locked(tx, session_id)
    _guard(session_id, session, expected_head)
    if session["status"] == "ended":
        raise await _ended(tx, session_id, "append to")
    if not encoded:
        raise InvalidInput("messages", "must hold at least one message")
    head_pk = session["head_pk"]
    parent_pk = head_pk
    if parent_id is None:
        parent_pk = None
    elif parent_id is not OMITTED:
        parent_pk = await message_pk(tx, session_id, parent_id, "parent_id")
    depth, path_tokens = 0, 0
    if parent_pk is not None:
        row = await tx.fetchrow(
            "SELECT depth, path_tokens FROM messages WHERE user_id = $1 AND pk = $2", parent_pk
        )
        assert row is not None
        depth, path_tokens = row["depth"], row["path_tokens"]
    created_at = now()
    ids: list[str] = []
    inserted = 0
    for i, (message, columns) in enumerate(encoded):
        role, content, is_json, body, name, meta, tokens = _storable(columns)
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
        parent_pk = await tx.fetchval(
            "INSERT INTO messages (user_id, session_id, id, parent_pk, depth, path_tokens, role, "
            "content, is_json, body, name, metadata, tokens, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING pk",
            session_id,
            mid,
            parent_pk,
            depth,
            path_tokens,
            role,
            content,
            is_json,
            body,
            name,
            meta,
            tokens,
            created_at,
        )
        inserted += 1
        ids.append(mid)
    estimate = session["token_estimate"]
    head = head_pk
    if inserted:
        head = parent_pk
        estimate = path_tokens  # without compactions, a path's estimate is its last message's
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


async def _on_path(tx: Tx, pk: int, leaf_pk: int) -> bool:
    """Whether message ``pk`` is ``leaf_pk`` or one of its ancestors."""
    found = await tx.fetchval(
        """WITH RECURSIVE up (pk, parent_pk, depth) AS (
               SELECT pk, parent_pk, depth FROM messages WHERE user_id = $1 AND pk = $2
               UNION ALL
               SELECT m.pk, m.parent_pk, m.depth FROM up
               JOIN messages m ON m.user_id = $1 AND m.pk = up.parent_pk
               WHERE up.depth > (SELECT depth FROM messages WHERE user_id = $1 AND pk = $3)
           )
           SELECT EXISTS (SELECT 1 FROM up WHERE pk = $3)""",
        leaf_pk,
        pk,
    )
    return bool(found)


async def history(
    tx: Tx,
    session_id: str,
    *,
    leaf_id: str | None = None,
    limit: int | None = None,
    before: str | None = None,
    include_compacted: bool = False,
    truncate_tool_output: int | None = None,
) -> History:
    """The path to the head (or ``leaf_id``) as ``Store.get_history`` documents it."""
    if limit is not None:
        validate.limit(limit, "limit", 1, 100_000)
    if truncate_tool_output is not None:
        validate.limit(truncate_tool_output, "truncate_tool_output", 0, 10**9)
    session = await session_row(tx, session_id, "s.head_pk")
    head_pk = session["head_pk"]
    leaf_pk = head_pk if leaf_id is None else await message_pk(tx, session_id, leaf_id, "leaf_id")
    start = leaf_pk
    if before is not None:
        validate.message_id(before, "before")
        pk = await message_pk(tx, session_id, before, "before")
        if leaf_pk is None or not await _on_path(tx, pk, leaf_pk):
            raise InvalidInput(
                "before",
                f"{before!r} is not on the branch being read; use that branch's next_before",
            )
        start = await tx.fetchval(
            "SELECT parent_pk FROM messages WHERE user_id = $1 AND pk = $2", pk
        )
    rows = []
    if start is not None:
        want = (1 << 62) if limit is None else limit + 1
        rows = await tx.fetch(_CHAIN, start, want)
    has_more = limit is not None and len(rows) > limit
    if has_more:
        del rows[limit:]
    messages = [_message(row) for row in rows]  # newest first
    if truncate_tool_output is not None:
        messages = truncate_old_tool_output(messages, truncate_tool_output, before is not None)
    messages.reverse()
    leaf = None if leaf_pk is None else await message_id(tx, leaf_pk)
    return History.model_construct(
        session_id=session_id,
        leaf_id=leaf,
        messages=messages,
        has_more=has_more,
        next_before=messages[0].id if has_more and messages else None,
    )


async def since(tx: Tx, session_id: str, known: str | None) -> HistoryDelta:
    """What changed in the whole history since the read that returned revision ``known``:
    the messages after it when the old head is still on the head's path, else all of it with
    ``reset``. The revision is the head's key (keys are never reused)."""
    validate.session_id(session_id)
    head_pk = await tx.fetchval(
        "SELECT coalesce(head_pk, 0) FROM sessions WHERE user_id = $1 AND id = $2", session_id
    )
    if head_pk is None:
        raise SessionNotFound(session_id)
    current = f"{head_pk}.0.0"
    rows: list[Any] = []
    reset = False
    if known != current:
        rows = await tx.fetch(_CHAIN, head_pk, 1 << 62) if head_pk else []
        reset = True
        old, _, compacted = (known or "").partition(".")
        if known is not None and compacted == "0.0" and head_pk and old.isdigit() and len(old) < 19:
            held = [row["pk"] for row in rows]
            if int(old) == 0:
                reset = False  # it was empty: all of it follows
            elif int(old) in held:
                rows, reset = rows[: held.index(int(old))], False
    return HistoryDelta.of(
        {
            "session_id": session_id,
            "revision": current,
            "messages": [_message(row) for row in reversed(rows)],
            "reset": reset,
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
    session = await _locked(tx, session_id)
    _guard(session_id, session, expected_head)
    pk = await message_pk(tx, session_id, message_id_, "message_id")
    await _move_head(tx, session_id, pk)


async def _move_head(tx: Tx, session_id: str, pk: int | None, removed: int = 0) -> None:
    await tx.execute(
        "UPDATE sessions SET head_pk = $3, message_count = message_count - $4, "
        "token_estimate = $5, updated_at = $6 WHERE user_id = $1 AND id = $2",
        session_id,
        pk,
        removed,
        await _path_tokens(tx, pk),
        now(),
    )


async def clear(tx: Tx, session_id: str, expected_head: Any) -> int:
    """Delete every message of the session; returns how many went."""
    session = await _locked(tx, session_id)
    _guard(session_id, session, expected_head)
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
    session = await _locked(tx, session_id)
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
    session = await _locked(tx, session_id)
    head_pk = session["head_pk"]
    if head_pk is None:
        return None
    (row,) = await tx.fetch(_CHAIN, head_pk, 1)
    message = _message(row)
    has_children = await tx.fetchval(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE user_id = $1 AND parent_pk = $2)", head_pk
    )
    if not has_children:
        await delete_subtree(tx, session_id, message.id)
        return message
    await _move_head(tx, session_id, row["parent_pk"])
    return message

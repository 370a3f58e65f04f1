"""Export and import on PostgreSQL: one user's facts read out as the export records
(``records``), and written back, as ``storage/transfer.py`` does on SQLite. The records are the
same, so an export of either backend imports into the other without loss."""

from __future__ import annotations

import json
from typing import Any

from threadline.storage import validate
from threadline.storage.errors import InvalidInput
from threadline.storage.postgres import reading, sessions
from threadline.storage.postgres.rows import Tx, session_row
from threadline.storage.postgres.tree import INSERT, storable
from threadline.storage.records import (
    KEPT_SUMMARY_IDS,
    RESTORE_LIMITS,
    BlockRecord,
    CompactionRecord,
    Header,
    ImportedSession,
    MessageRecord,
    SessionRecord,
    Sink,
    UsageRecord,
    check,
    check_blocks,
    encode,
)
from threadline.text import now


async def export(tx: Tx, sink: Sink, session_ids: list[str] | None) -> Header:
    """Feed ``sink`` the sessions named (default: all, oldest first), read in one snapshot
    (the caller's transaction is ``REPEATABLE READ``)."""
    if session_ids is None:
        found = await tx.fetch("SELECT id FROM sessions WHERE user_id = $1 ORDER BY created_at, id")
        session_ids = [r["id"] for r in found]
    ids = list(dict.fromkeys(session_ids))
    for sid in ids:
        await session_row(tx, sid, "1")  # each must exist before anything is written
    messages = await tx.fetchval(
        "SELECT count(*) FROM messages WHERE user_id = $1 AND session_id = ANY($2::text[])", ids
    )
    header = Header(exported_at=now(), sessions=len(ids), messages=messages)
    sink.begin(header, await dump_blocks(tx, ""))
    for sid in ids:
        sink.session(await dump_session(tx, sid))
    sink.end()
    return header


async def dump_session(tx: Tx, session_id: str) -> SessionRecord:
    row = await session_row(
        tx,
        session_id,
        """s.id AS session_id, s.title, s.status, s.metadata, s.parent_session_id, s.lineage,
           s.forked_from_message_id,
           (SELECT m.id FROM messages m WHERE m.user_id = $1 AND m.pk = s.head_pk) AS head_id,
           s.system_prompt, s.prompt_rendered_at, s.input_tokens, s.output_tokens, s.cost,
           s.turns, s.last_model, s.created_at, s.updated_at""",
    )
    fields: dict[str, Any] = dict(row.items())
    fields["metadata"] = _json(fields["metadata"])
    found = await tx.fetch(
        "SELECT m.id, p.id AS parent_id, m.role, m.content, m.is_json, m.name, m.metadata, "
        "m.created_at FROM messages m LEFT JOIN messages p ON p.user_id = $1 AND p.pk = "
        "m.parent_pk WHERE m.user_id = $1 AND m.session_id = $2 ORDER BY m.pk",
        session_id,
    )
    messages = [
        MessageRecord.model_construct(
            id=r["id"],
            parent_id=r["parent_id"],
            role=r["role"],
            content=json.loads(r["content"]) if r["is_json"] else r["content"],
            name=r["name"],
            metadata=_json(r["metadata"]),
            created_at=r["created_at"],
        )
        for r in found
    ]
    found = await tx.fetch(
        "SELECT c.pk, s.id AS first_id, e.id AS last_id, c.summary, c.replaced, c.created_at "
        "FROM compactions c JOIN messages s ON s.user_id = $1 AND s.pk = c.start_pk "
        "JOIN messages e ON e.user_id = $1 AND e.pk = c.end_pk "
        "WHERE c.user_id = $1 AND c.session_id = $2 ORDER BY c.pk",
        session_id,
    )
    compactions = [
        CompactionRecord.model_construct(
            summary_id=f"compaction:{r['pk']}",
            first_id=r["first_id"],
            last_id=r["last_id"],
            summary=r["summary"],
            replaced=r["replaced"],
            created_at=r["created_at"],
        )
        for r in found
    ]
    found = await tx.fetch(
        "SELECT input_tokens, output_tokens, cost, model, created_at FROM usage "
        "WHERE user_id = $1 AND session_id = $2 ORDER BY pk",
        session_id,
    )
    usage = [UsageRecord.model_construct(**dict(r.items())) for r in found]
    return SessionRecord.model_construct(
        **fields,
        messages=messages,
        compactions=compactions,
        usage=usage,
        blocks=await dump_blocks(tx, session_id),
    )


async def dump_blocks(tx: Tx, owner: str) -> list[BlockRecord]:
    """The blocks stored for a session, or (``owner=""``) the user-scoped ones."""
    found = await tx.fetch(
        "SELECT label, content, updated_at FROM context_blocks "
        'WHERE user_id = $1 AND session_id = $2 ORDER BY label COLLATE "C"',
        owner,
    )
    return [BlockRecord.model_construct(**dict(r.items())) for r in found]


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- import ---------------------------------------------------------------------------------


async def load_session(tx: Tx, record: SessionRecord) -> ImportedSession:
    """Insert one exported session as it was; refuse (changing nothing) if its id is taken."""
    check(record)
    sid = record.session_id
    await sessions.insert(
        tx,
        sid,
        record.title,
        validate.metadata(record.metadata, "metadata", RESTORE_LIMITS),
        parent=record.parent_session_id,
        lineage=record.lineage,
        forked_from=record.forked_from_message_id,
        system_prompt=record.system_prompt,
    )
    await tx.execute(
        "UPDATE sessions SET status = $3, prompt_rendered_at = $4, input_tokens = $5, "
        "output_tokens = $6, cost = $7, turns = $8, last_model = $9, created_at = $10, "
        "updated_at = $11 WHERE user_id = $1 AND id = $2",
        sid,
        record.status,
        record.prompt_rendered_at,
        record.input_tokens,
        record.output_tokens,
        float(record.cost),
        record.turns,
        record.last_model,
        record.created_at,
        record.updated_at,
    )
    placed: dict[str, tuple[int, int, int]] = {}  # id -> (pk, depth, path_tokens)
    for i, m in enumerate(record.messages):
        parent_pk, depth, path_tokens = None, 0, 0
        if m.parent_id is not None:
            parent_pk, depth, path_tokens = placed[m.parent_id]
        stored = storable(encode(m, i))
        tokens = stored[-1]
        pk = await tx.fetchval(
            f"{INSERT} RETURNING pk",
            sid,
            m.id,
            parent_pk,
            depth + 1,
            path_tokens + tokens,
            *stored,
            m.created_at,
        )
        placed[m.id] = (pk, depth + 1, path_tokens + tokens)
    renumbered: dict[str, str] = {}
    # A summary keeps its id if the numbering has passed it (so it is never handed out
    # again) and this user has no compaction with it; else it gets a new one.
    issued: int = await tx.conn.fetchval(  # the table's numbering, not a user's rows
        "SELECT coalesce(pg_sequence_last_value("
        "pg_get_serial_sequence('compactions', 'pk')::regclass), 0)"
    )
    for c in record.compactions:
        wanted = int(c.summary_id.split(":")[1])
        taken = wanted > min(KEPT_SUMMARY_IDS, issued) or await tx.fetchval(
            "SELECT EXISTS (SELECT 1 FROM compactions WHERE user_id = $1 AND pk = $2)",
            wanted,
        )
        values = (sid, placed[c.first_id][0], placed[c.last_id][0], c.summary, c.replaced)
        if taken:
            new_pk: int = await tx.fetchval(
                "INSERT INTO compactions (user_id, session_id, start_pk, end_pk, summary, "
                "replaced, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING pk",
                *values,
                c.created_at,
            )
            if new_pk != wanted:
                renumbered[c.summary_id] = f"compaction:{new_pk}"
        else:
            await tx.execute(
                "INSERT INTO compactions (user_id, pk, session_id, start_pk, end_pk, summary, "
                "replaced, created_at) OVERRIDING SYSTEM VALUE "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                wanted,
                *values,
                c.created_at,
            )
    for u in record.usage:
        await tx.execute(
            "INSERT INTO usage (user_id, session_id, input_tokens, output_tokens, cost, model, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            sid,
            u.input_tokens,
            u.output_tokens,
            None if u.cost is None else float(u.cost),
            u.model,
            u.created_at,
        )
    await _insert_blocks(tx, sid, record.blocks)
    head_pk = None if record.head_id is None else placed[record.head_id][0]
    await tx.execute(
        "UPDATE sessions SET head_pk = $3, message_count = $4, token_estimate = $5 "
        "WHERE user_id = $1 AND id = $2",
        sid,
        head_pk,
        len(placed),
        await reading.effective_tokens(tx, sid, head_pk),
    )
    return ImportedSession(session_id=sid, messages=len(placed), renumbered=renumbered)


async def block_conflicts(tx: Tx, blocks: list[BlockRecord]) -> list[str]:
    """Labels of user-scoped blocks this user holds with other content than ``blocks``."""
    stored = {b.label: b.content for b in await dump_blocks(tx, "")}
    return [b.label for b in blocks if stored.get(b.label, b.content) != b.content]


async def load_user_blocks(tx: Tx, blocks: list[BlockRecord]) -> int:
    """Store user-scoped blocks the user lacks; refuse if any differs from what it holds."""
    check_blocks(blocks)
    conflicts = await block_conflicts(tx, blocks)
    if conflicts:
        raise InvalidInput(
            "blocks",
            f"user blocks {', '.join(conflicts)} hold other content in this store; "
            "nothing was imported",
        )
    stored = {b.label for b in await dump_blocks(tx, "")}
    missing = [b for b in blocks if b.label not in stored]
    await _insert_blocks(tx, "", missing)
    return len(missing)


async def _insert_blocks(tx: Tx, owner: str, blocks: list[BlockRecord]) -> None:
    for b in blocks:
        await tx.execute(
            "INSERT INTO context_blocks (user_id, label, session_id, content, updated_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            b.label,
            owner,
            b.content,
            b.updated_at,
        )

"""Compaction on PostgreSQL: ``storage/compaction.py``'s rules (which range, what stays
protected, a split) over this backend's rows. Nothing is deleted: a summary stands for a range
of the current path when reading (``reading``)."""

from __future__ import annotations

from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.compaction import Range, choose
from threadline.storage.models import CompactionPlan, CompactionResult, MessageIn
from threadline.storage.postgres import context, reading, sessions, tree
from threadline.storage.postgres.rows import Tx, session_row
from threadline.storage.tree import OMITTED
from threadline.text import new_id, now


async def _choose(
    tx: Tx,
    config: Config,
    session_id: str,
    row: Any,
    keep_first: int | None,
    keep_last: int | None,
) -> Range:
    """The range to compact on the history of the session whose row (status, head) is
    ``row``."""
    if row["status"] == "ended":
        raise await tree.ended(tx, session_id, "compact")
    path = await reading.walk(tx, row["head_pk"], await reading.compactions(tx, session_id))
    chosen = choose(config, session_id, path[::-1], keep_first, keep_last)
    depths = await tx.fetchrow(
        "SELECT (SELECT depth FROM messages WHERE user_id = $1 AND pk = $2), "
        "(SELECT depth FROM messages WHERE user_id = $1 AND pk = $3)",
        chosen.start_pk,
        chosen.end_pk,
    )
    assert depths is not None
    return chosen.measured(depths[0], depths[1])


async def plan(
    tx: Tx, config: Config, session_id: str, keep_first: int | None, keep_last: int | None
) -> CompactionPlan:
    row = await session_row(tx, session_id, "s.status, s.head_pk")
    return (await _choose(tx, config, session_id, row, keep_first, keep_last)).plan(session_id)


async def compact(
    tx: Tx,
    config: Config,
    session_id: str,
    summary: str,
    keep_first: int | None = None,
    keep_last: int | None = None,
    split: bool = False,
    expected_head: Any = OMITTED,
) -> CompactionResult:
    validate.text(summary, "summary", config.limits.max_message_chars, allow_empty=False)
    # Locked once: neither the head nor the status can change until the transaction ends.
    row = await tree.locked(tx, session_id)
    tree.guard(session_id, row, expected_head)
    chosen = await _choose(tx, config, session_id, row, keep_first, keep_last)
    stamp = now()
    pk = await tx.fetchval(
        "INSERT INTO compactions (user_id, session_id, start_pk, end_pk, summary, replaced, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING pk",
        session_id,
        chosen.start_pk,
        chosen.end_pk,
        summary,
        chosen.replaced,
        stamp,
    )
    estimate = await reading.effective_tokens(tx, session_id, row["head_pk"])
    await tx.execute(
        "UPDATE sessions SET token_estimate = $3, updated_at = $4 WHERE user_id = $1 AND id = $2",
        session_id,
        estimate,
        stamp,
    )
    await context.freeze(tx, config, session_id)
    new_session_id = None
    if split:
        new_session_id = await _split(tx, config, session_id, row["head_id"], summary, chosen)
    return CompactionResult.model_construct(
        session_id=session_id,
        summary_id=f"compaction:{pk}",
        replaced=chosen.replaced,
        first_id=chosen.entries[0].id,
        last_id=chosen.entries[-1].id,
        token_estimate=estimate,
        new_session_id=new_session_id,
    )


async def _split(
    tx: Tx, config: Config, session_id: str, head_id: str | None, summary: str, chosen: Range
) -> str:
    """End the session; start a child seeded with the summary and the protected tail."""
    source = await tx.fetchrow(
        "SELECT title, metadata FROM sessions WHERE user_id = $1 AND id = $2", session_id
    )
    assert source is not None
    child = new_id()
    await sessions.insert(
        tx,
        child,
        source["title"],
        source["metadata"],
        parent=session_id,
        lineage="split",
        forked_from=head_id,
    )
    await context.copy_session_blocks(tx, session_id, child)
    await context.freeze(tx, config, child)
    seed = [MessageIn(role="user", content=summary, metadata={"compaction_of": session_id})]
    seed += [
        MessageIn(id=m.id, role=m.role, content=m.content, name=m.name, metadata=m.metadata)
        for m in (entry.message() for entry in chosen.tail if entry.compaction is None)
    ]
    await tree.append(tx, config, child, validate.encode(seed, config))
    await tx.execute(
        "UPDATE sessions SET status = 'ended' WHERE user_id = $1 AND id = $2", session_id
    )
    return child

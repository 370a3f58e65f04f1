"""Context blocks and the frozen system prompt on PostgreSQL: ``storage/context.py``'s rules
(``render``, the block specs, the limits and their wording) over this backend's rows."""

from __future__ import annotations

from typing import Literal

from threadline.config import Config
from threadline.storage.context import blocks_of, checked, owner, render, report, written
from threadline.storage.models import BlockUsage, ContextBlock, ContextView
from threadline.storage.postgres.rows import Tx, session_row
from threadline.text import now


async def _values(tx: Tx, config: Config, session_id: str) -> dict[str, str]:
    rows = await tx.fetch(
        "SELECT label, session_id, content FROM context_blocks "
        "WHERE user_id = $1 AND session_id IN ('', $2)",
        session_id,
    )
    stored = {(r["label"], r["session_id"]): r["content"] for r in rows}
    return {
        spec.label: stored.get((spec.label, owner(spec, session_id)), spec.default)
        for spec in config.blocks
    }


async def blocks(tx: Tx, config: Config, session_id: str) -> list[ContextBlock]:
    return blocks_of(config, await _values(tx, config, session_id))


async def freeze(tx: Tx, config: Config, session_id: str) -> None:
    """Render the session's system prompt from the blocks as they are now, and store it."""
    prompt = render(await blocks(tx, config, session_id))
    await tx.execute(
        "UPDATE sessions SET system_prompt = $3, prompt_rendered_at = $4 "
        "WHERE user_id = $1 AND id = $2",
        session_id,
        prompt,
        now(),
    )


async def view(tx: Tx, config: Config, session_id: str, refresh: bool = False) -> ContextView:
    """The session's blocks and frozen prompt; rendered anew first if ``refresh``."""
    await session_row(tx, session_id, "1")
    if refresh:
        await freeze(tx, config, session_id)
    row = await session_row(tx, session_id, "system_prompt, prompt_rendered_at")
    items = await blocks(tx, config, session_id)
    return ContextView.model_construct(
        session_id=session_id,
        system_prompt=row["system_prompt"],
        rendered_at=row["prompt_rendered_at"],
        stale=render(items) != row["system_prompt"],
        blocks=items,
    )


async def update(
    tx: Tx,
    config: Config,
    session_id: str | None,
    label: str,
    content: str,
    mode: Literal["replace", "append"],
) -> BlockUsage:
    """Write a block; ``session_id=None`` writes a user-scoped block without naming a session."""
    if session_id is not None:
        await session_row(tx, session_id, "1")
    spec = checked(config, session_id, label, content, mode)
    # Two concurrent appends to one block must both land: the row is locked (or, for a
    # block never written, its key claimed) before it is read.
    block_owner = owner(spec, session_id or "")
    await tx.execute(
        "INSERT INTO context_blocks (user_id, label, session_id, content, updated_at) "
        "VALUES ($1, $2, $3, $4, '') ON CONFLICT DO NOTHING",
        label,
        block_owner,
        spec.default,
    )
    current: str = await tx.fetchval(
        "SELECT content FROM context_blocks WHERE user_id = $1 AND label = $2 "
        "AND session_id = $3 FOR UPDATE",
        label,
        block_owner,
    )
    content, tokens = written(spec, current, content, mode)
    stamp = now()
    await tx.execute(
        "UPDATE context_blocks SET content = $4, updated_at = $5 "
        "WHERE user_id = $1 AND label = $2 AND session_id = $3",
        label,
        block_owner,
        content,
        stamp,
    )
    if spec.scope == "session" and session_id is not None:
        await tx.execute(
            "UPDATE sessions SET updated_at = $3 WHERE user_id = $1 AND id = $2", session_id, stamp
        )
    return report(spec, current, tokens, mode)


async def copy_session_blocks(tx: Tx, source: str, target: str) -> None:
    await tx.execute(
        "INSERT INTO context_blocks (user_id, label, session_id, content, updated_at) "
        "SELECT $1, label, $3, content, updated_at FROM context_blocks "
        "WHERE user_id = $1 AND session_id = $2",
        source,
        target,
    )

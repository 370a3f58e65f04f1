"""Context blocks (the agent's working memory) and the frozen system prompt built from them.

A block with scope ``user`` has one copy shared by every session (stored under the session id
``''``); a ``session`` block has one copy per session. A block never written holds its default.

The frozen system prompt has this format, one element per declared block, in config order::

    <memory_blocks>
    The blocks below are your persistent working memory ...
    <block label="memory" scope="user" readonly="false" tokens="12/1100">
    <description>...</description>
    <value>
    ...
    </value>
    </block>
    </memory_blocks>

Text is escaped as XML text (``&``, ``<`` and ``>`` in a block's content or description read
``&amp;``, ``&lt;`` and ``&gt;``; attribute values also escape quotes), so what a block holds
can never close its element or open another: the prompt parses as XML to exactly the
declared blocks, each holding its content.

It is rendered when a session is created and stored with it, so its bytes stay the same across
turns and restarts; block edits reach it only on refresh, compaction, or clearing the session.
"""

from __future__ import annotations

import sqlite3
from html import escape
from typing import Literal

from threadline.config import BlockSpec, Config
from threadline.storage import validate
from threadline.storage.errors import BlockNotFound, BlockOverLimit, BlockReadOnly, InvalidInput
from threadline.storage.models import BlockUsage, ContextBlock, ContextView
from threadline.storage.rows import session_row
from threadline.text import estimate_tokens, now

PREAMBLE = (
    'The blocks below are your persistent working memory. Blocks with scope "user" are shared '
    'by all of this user\'s sessions; blocks with scope "session" belong to this session only. '
    "Change a writable block with the update_context tool when you learn something worth keeping."
)


def owner(spec: BlockSpec, session_id: str) -> str:
    """Where a block of this spec is stored for ``session_id``: "" for a user block."""
    return "" if spec.scope == "user" else session_id


def _values(conn: sqlite3.Connection, config: Config, session_id: str) -> dict[str, str]:
    stored = dict(
        conn.execute(
            "SELECT label || char(0) || session_id, content FROM context_blocks "
            "WHERE session_id IN ('', ?)",
            (session_id,),
        ).fetchall()
    )
    return {
        spec.label: stored.get(f"{spec.label}\x00{owner(spec, session_id)}", spec.default)
        for spec in config.blocks
    }


def blocks(conn: sqlite3.Connection, config: Config, session_id: str) -> list[ContextBlock]:
    return blocks_of(config, _values(conn, config, session_id))


def blocks_of(config: Config, values: dict[str, str]) -> list[ContextBlock]:
    """The declared blocks, in config order, holding ``values`` (by label)."""
    return [
        ContextBlock.model_construct(
            label=spec.label,
            description=spec.description,
            scope=spec.scope,
            readonly=spec.readonly,
            max_tokens=spec.max_tokens,
            tokens=estimate_tokens(values[spec.label]),
            content=values[spec.label],
        )
        for spec in config.blocks
    ]


def render(items: list[ContextBlock]) -> str:
    if not items:
        return ""
    parts = ["<memory_blocks>", PREAMBLE]
    for b in items:
        readonly = "true" if b.readonly else "false"
        parts += [
            f'<block label="{escape(b.label)}" scope="{b.scope}" readonly="{readonly}" '
            f'tokens="{b.tokens}/{b.max_tokens}">',
            f"<description>{escape(b.description, quote=False)}</description>",
            "<value>",
            escape(b.content, quote=False),
            "</value>",
            "</block>",
        ]
    parts.append("</memory_blocks>")
    return "\n".join(parts)


def freeze(conn: sqlite3.Connection, config: Config, session_id: str) -> None:
    """Render the session's system prompt from the blocks as they are now, and store it."""
    prompt = render(blocks(conn, config, session_id))
    conn.execute(
        "UPDATE sessions SET system_prompt = ?, prompt_rendered_at = ? WHERE id = ?",
        (prompt, now(), session_id),
    )


def view(conn: sqlite3.Connection, config: Config, session_id: str) -> ContextView:
    prompt, rendered_at = session_row(conn, session_id, "system_prompt, prompt_rendered_at")
    items = blocks(conn, config, session_id)
    return ContextView.model_construct(
        session_id=session_id,
        system_prompt=prompt,
        rendered_at=rendered_at,
        stale=render(items) != prompt,
        blocks=items,
    )


def update(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str | None,
    label: str,
    content: str,
    mode: Literal["replace", "append"],
) -> BlockUsage:
    """Write a block; ``session_id=None`` writes a user-scoped block without naming a session."""
    if session_id is not None:
        session_row(conn, session_id, "1")
    spec = checked(config, session_id, label, content, mode)
    stored_as = owner(spec, session_id or "")
    current = _values(conn, config, session_id or "")[label]
    content, tokens = written(spec, current, content, mode)
    stamp = now()
    conn.execute(
        "INSERT INTO context_blocks (label, session_id, content, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (label, session_id) DO UPDATE SET content = excluded.content, "
        "updated_at = excluded.updated_at",
        (label, stored_as, content, stamp),
    )
    if spec.scope == "session" and session_id is not None:
        conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (stamp, session_id))
    return report(spec, current, tokens, mode)


def checked(
    config: Config, session_id: str | None, label: object, content: object, mode: object
) -> BlockSpec:
    """The spec of the block a write names, once the write passes every rule (any backend)."""
    if not isinstance(label, str):
        raise InvalidInput("label", "must be a string")
    spec = config.block(label)
    if spec is None:
        known = ", ".join(b.label for b in config.blocks) or "none are configured"
        raise BlockNotFound(f"label: no context block {label[:80]!r}; the blocks are: {known}")
    if spec.readonly:
        raise BlockReadOnly(f"block {label!r} is read-only; write lasting facts to another block")
    if mode not in ("replace", "append"):
        raise InvalidInput("mode", "must be 'replace' or 'append'")
    if "\x00" in validate.text(content, "content", config.limits.max_message_chars):
        raise InvalidInput("content", "must not contain NUL characters")
    if session_id is None and spec.scope == "session":
        raise InvalidInput("session_id", f"is required: block {label!r} belongs to a session")
    return spec


def written(spec: BlockSpec, current: str, content: str, mode: str) -> tuple[str, int]:
    """What the block holds after the write, and its tokens; over the limit, refused."""
    if mode == "append" and current:
        content = current + ("" if current.endswith("\n") else "\n") + content
    tokens = estimate_tokens(content)
    if tokens > spec.max_tokens:
        raise BlockOverLimit(
            f"block {spec.label!r} would hold {tokens} tokens; its limit is {spec.max_tokens} "
            f"(it holds {estimate_tokens(current)} now). Nothing was written: shorten the text, "
            "or replace the block with a condensed version."
        )
    return content, tokens


def report(spec: BlockSpec, current: str, tokens: int, mode: str) -> BlockUsage:
    """What a write returns: how full the block is, and what a replace replaced."""
    done = usage(spec, tokens)
    if mode == "replace" and current:
        return done.model_copy(update={"replaced": current})
    return done


def usage(spec: BlockSpec, tokens: int) -> BlockUsage:
    percent = round(100 * tokens / spec.max_tokens)
    return BlockUsage.model_construct(
        label=spec.label,
        scope=spec.scope,
        tokens=tokens,
        max_tokens=spec.max_tokens,
        percent=percent,
        usage=f"{spec.label}: {tokens}/{spec.max_tokens} tokens, {percent}%",
    )


def copy_session_blocks(conn: sqlite3.Connection, source: str, target: str) -> None:
    conn.execute(
        "INSERT INTO context_blocks (label, session_id, content, updated_at) "
        "SELECT label, ?, content, updated_at FROM context_blocks WHERE session_id = ?",
        (target, source),
    )

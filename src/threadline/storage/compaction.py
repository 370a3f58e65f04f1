"""Compaction: a summary that stands for a contiguous range of the current path when reading.

Nothing is deleted. The range is chosen on the history as it reads now (earlier summaries
included): the first ``keep_first`` entries and a recent tail are protected. The tail is the
last ``keep_last`` entries; with the configured default it also takes older entries while they
fit in ``keep_last_tokens``, and the range never starts on a
tool result nor ends right before one, so a tool call and its result stay together. A range
that takes in an earlier summary extends that compaction: it reaches back to the earlier start
and, when read, hides it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from threadline.config import Config
from threadline.storage import context, validate
from threadline.storage.errors import NothingToCompact
from threadline.storage.models import CompactionPlan, CompactionResult, Message, MessageIn
from threadline.storage.sessions import insert_session
from threadline.storage.text import estimate_tokens, new_id, now
from threadline.storage.tree import (
    Compaction,
    append,
    compactions,
    effective_tokens,
    is_tool_result,
    session_row,
    walk,
)


@dataclass(frozen=True, slots=True)
class _Range:
    entries: list[tuple[Message, tuple[Any, ...] | None]]  # oldest first
    tail: list[Message]
    start_pk: int
    end_pk: int
    replaced: int
    previous: Compaction | None


def _choose(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    keep_first: int | None,
    keep_last: int | None,
) -> _Range:
    rules = config.compaction
    first = (
        rules.keep_first
        if keep_first is None
        else validate.limit(keep_first, "keep_first", 0, 10_000)
    )
    last = (
        rules.keep_last if keep_last is None else validate.limit(keep_last, "keep_last", 0, 10_000)
    )
    (head_pk,) = session_row(conn, session_id, "head_pk")
    comps = compactions(conn, session_id)
    path = walk(conn, head_pk, comps)[::-1]  # oldest first
    by_summary = {c.summary_id: c for c in comps}

    # An explicit keep_last is exact; the default also keeps what fits in keep_last_tokens.
    budget = rules.keep_last_tokens if keep_last is None else 0
    tail_len, tail_tokens = 0, 0
    for message, _ in reversed(path[first:]):
        tokens = _tokens(message)
        if tail_len >= last and tail_tokens + tokens > budget:
            break
        tail_len += 1
        tail_tokens += tokens
    lo, hi = first, len(path) - tail_len  # the range is path[lo:hi]
    while lo < hi and is_tool_result(path[lo][0].role, path[lo][0].content):
        lo += 1
    while lo < hi and hi < len(path) and is_tool_result(path[hi][0].role, path[hi][0].content):
        hi -= 1
    chosen = path[lo:hi]
    if len(chosen) < 2:
        raise NothingToCompact(
            f"session {session_id!r} has nothing to compact: {len(path)} messages in its history, "
            f"and the first {first} and the recent tail are protected"
        )
    first_entry, last_entry = chosen[0], chosen[-1]
    start = by_summary[first_entry[0].id].start_pk if first_entry[1] is None else first_entry[1][0]
    end = by_summary[last_entry[0].id].end_pk if last_entry[1] is None else last_entry[1][0]
    previous = next((by_summary[m.id] for m, row in reversed(chosen) if row is None), None)
    depths = conn.execute(
        "SELECT (SELECT depth FROM messages WHERE pk = ?), "
        "(SELECT depth FROM messages WHERE pk = ?)",
        (start, end),
    ).fetchone()
    return _Range(
        entries=chosen,
        tail=[m for m, _ in path[hi:]],
        start_pk=start,
        end_pk=end,
        replaced=depths[1] - depths[0] + 1,
        previous=previous,
    )


def _tokens(message: Message) -> int:
    content = message.content
    return estimate_tokens(
        content if isinstance(content, str) else validate.dump_json(content, "content")
    )


def plan(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    keep_first: int | None = None,
    keep_last: int | None = None,
) -> CompactionPlan:
    chosen = _choose(conn, config, session_id, keep_first, keep_last)
    messages = [m for m, _ in chosen.entries]
    return CompactionPlan.model_construct(
        session_id=session_id,
        first_id=messages[0].id,
        last_id=messages[-1].id,
        message_count=chosen.replaced,
        tokens=sum(_tokens(m) for m in messages),
        previous_summary=chosen.previous.summary if chosen.previous else None,
        messages=messages,
    )


def compact(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    summary: str,
    keep_first: int | None = None,
    keep_last: int | None = None,
    split: bool = False,
) -> CompactionResult:
    validate.text(summary, "summary", config.limits.max_message_chars, allow_empty=False)
    chosen = _choose(conn, config, session_id, keep_first, keep_last)
    stamp = now()
    pk = conn.execute(
        "INSERT INTO compactions (session_id, start_pk, end_pk, summary, replaced, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (session_id, chosen.start_pk, chosen.end_pk, summary, chosen.replaced, stamp),
    ).lastrowid
    (head_pk,) = session_row(conn, session_id, "head_pk")
    estimate = effective_tokens(conn, session_id, head_pk)
    conn.execute(
        "UPDATE sessions SET token_estimate = ?, updated_at = ? WHERE id = ?",
        (estimate, stamp, session_id),
    )
    context.freeze(conn, config, session_id)
    new_session_id = None
    if split:
        new_session_id = _split(conn, config, session_id, summary, chosen.tail)
    return CompactionResult.model_construct(
        session_id=session_id,
        summary_id=f"compaction:{pk}",
        replaced=chosen.replaced,
        first_id=chosen.entries[0][0].id,
        last_id=chosen.entries[-1][0].id,
        token_estimate=estimate,
        new_session_id=new_session_id,
    )


def _split(
    conn: sqlite3.Connection, config: Config, session_id: str, summary: str, tail: list[Message]
) -> str:
    """End the session; start a child seeded with the summary and the protected tail."""
    title, metadata, head_id = session_row(
        conn, session_id, "title, metadata, (SELECT id FROM messages WHERE pk = head_pk)"
    )
    child = new_id()
    insert_session(
        conn,
        config,
        child,
        title,
        metadata,
        parent=session_id,
        lineage="split",
        forked_from=head_id,
    )
    context.copy_session_blocks(conn, session_id, child)
    context.freeze(conn, config, child)
    seed = [MessageIn(role="user", content=summary, metadata={"compaction_of": session_id})]
    seed += [
        MessageIn(id=m.id, role=m.role, content=m.content, name=m.name, metadata=m.metadata)
        for m in tail
        if m.summary_of is None
    ]
    append(conn, config, child, seed)
    conn.execute("UPDATE sessions SET status = 'ended' WHERE id = ?", (session_id,))
    return child

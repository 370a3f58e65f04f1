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
from dataclasses import dataclass, replace
from typing import Any

from threadline.config import Config
from threadline.storage import context, validate
from threadline.storage.errors import NothingToCompact
from threadline.storage.models import CompactionPlan, CompactionResult, MessageIn
from threadline.storage.reading import effective_tokens, walk
from threadline.storage.rows import Compaction, compactions, session_row
from threadline.storage.sessions import insert_session
from threadline.storage.tree import OMITTED, append, ended, guard_head
from threadline.storage.walking import Entry
from threadline.text import new_id, now


@dataclass(frozen=True, slots=True)
class Range:
    """The range a compaction replaces, chosen on a path as it reads (``choose``)."""

    entries: list[Entry]  # oldest first
    tail: list[Entry]
    start_pk: int
    end_pk: int
    previous: Compaction | None
    replaced: int = 0  # how many stored messages: set by ``measured``

    def measured(self, start_depth: int, end_depth: int) -> Range:
        """The range, knowing the depths of its first and last stored messages."""
        return replace(self, replaced=end_depth - start_depth + 1)

    def plan(self, session_id: str) -> CompactionPlan:
        messages = [entry.message() for entry in self.entries]
        return CompactionPlan.model_construct(
            session_id=session_id,
            first_id=messages[0].id,
            last_id=messages[-1].id,
            message_count=self.replaced,
            tokens=sum(entry.tokens for entry in self.entries),
            previous_summary=self.previous.summary if self.previous else None,
            messages=messages,
        )


def choose(
    config: Config,
    session_id: str,
    path: list[Entry],
    keep_first: int | None,
    keep_last: int | None,
) -> Range:
    """The range to compact on ``path`` (the history as it reads now, oldest first): the
    rules of every backend."""
    rules = config.compaction
    first = (
        rules.keep_first
        if keep_first is None
        else validate.limit(keep_first, "keep_first", 0, 10_000)
    )
    last = (
        rules.keep_last if keep_last is None else validate.limit(keep_last, "keep_last", 0, 10_000)
    )
    # An explicit keep_last is exact. The default keeps the last keep_last messages and older
    # ones while they fit in keep_last_tokens, but never more than half of what follows the
    # protected start (in messages and in tokens), so a conversation the caller asks to
    # compact always has something to compact.
    rest = path[first:]
    budget = 0
    if keep_last is None:
        last = min(last, len(rest) // 2)
        budget = min(rules.keep_last_tokens, sum(e.tokens for e in rest) // 2)
    tail_len, tail_tokens = 0, 0
    for entry in reversed(rest):
        if tail_len >= last and (budget == 0 or tail_tokens + entry.tokens > budget):
            break
        tail_len += 1
        tail_tokens += entry.tokens
    lo, hi = first, len(path) - tail_len  # the range is path[lo:hi]
    while lo < hi and path[lo].is_tool_result():
        lo += 1
    while lo < hi and hi < len(path) and path[hi].is_tool_result():
        hi -= 1
    chosen = path[lo:hi]
    if len(chosen) < 2:
        raise NothingToCompact(
            f"session {session_id!r} has nothing to compact: keep_first={first} and "
            f"keep_last={tail_len} protect all {len(path)} messages of its history (a range "
            "never splits a tool call from its result); pass a smaller keep_last or keep_first"
        )
    start, end = chosen[0], chosen[-1]
    return Range(
        entries=chosen,
        tail=path[hi:],
        start_pk=start.compaction.start_pk if start.compaction else start.row[0],  # type: ignore[index]
        end_pk=end.compaction.end_pk if end.compaction else end.row[0],  # type: ignore[index]
        previous=next((e.compaction for e in reversed(chosen) if e.compaction), None),
    )


def _choose(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    keep_first: int | None,
    keep_last: int | None,
) -> Range:
    status, head_pk = session_row(conn, session_id, "status, head_pk")
    if status == "ended":
        raise ended(conn, session_id, "compact")
    path = walk(conn, head_pk, compactions(conn, session_id))[::-1]  # oldest first
    chosen = choose(config, session_id, path, keep_first, keep_last)
    depths = conn.execute(
        "SELECT (SELECT depth FROM messages WHERE pk = ?), "
        "(SELECT depth FROM messages WHERE pk = ?)",
        (chosen.start_pk, chosen.end_pk),
    ).fetchone()
    return chosen.measured(depths[0], depths[1])


def plan(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    keep_first: int | None = None,
    keep_last: int | None = None,
) -> CompactionPlan:
    return _choose(conn, config, session_id, keep_first, keep_last).plan(session_id)


def compact(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    summary: str,
    keep_first: int | None = None,
    keep_last: int | None = None,
    split: bool = False,
    expected_head: Any = OMITTED,
) -> CompactionResult:
    validate.text(summary, "summary", config.limits.max_message_chars, allow_empty=False)
    guard_head(conn, session_id, expected_head)
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
        first_id=chosen.entries[0].id,
        last_id=chosen.entries[-1].id,
        token_estimate=estimate,
        new_session_id=new_session_id,
    )


def _split(
    conn: sqlite3.Connection, config: Config, session_id: str, summary: str, tail: list[Entry]
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
        for m in (entry.message() for entry in tail if entry.compaction is None)
    ]
    append(conn, config, child, validate.encode(seed, config))
    conn.execute("UPDATE sessions SET status = 'ended' WHERE id = ?", (session_id,))
    return child

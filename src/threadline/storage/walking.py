"""Reading a path by the tree's rules, on every backend: a path's entries (a stored message or
a summary), the walk up a path with compactions applied, which compactions a path applies,
and a history page. Pure Python: the backends' reading modules feed it rows (``reading`` on
SQLite, ``postgres/reading`` on PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from threadline.storage import validate
from threadline.storage.cutting import is_tool_result, truncate_old_tool_output
from threadline.storage.models import History, Message
from threadline.storage.rows import Compaction
from threadline.text import estimate_tokens


class Entry(NamedTuple):
    """One step of a path as history reads it: a stored message (its row) or a summary."""

    row: tuple[Any, ...] | None  # pk, id, parent_pk, parent id, role, content, is_json, ...
    compaction: Compaction | None
    compacted: bool = False  # inside an applied compaction (with include_compacted)

    @property
    def id(self) -> str:
        return self.compaction.summary_id if self.compaction else str(self.row[1])  # type: ignore[index]

    @property
    def tokens(self) -> int:
        if self.compaction is not None:
            return estimate_tokens(self.compaction.summary)
        return int(self.row[10])  # type: ignore[index]

    def is_tool_result(self) -> bool:
        if self.row is None:
            return False
        role, content, is_json = self.row[4:7]
        return is_tool_result(role, json.loads(content) if is_json else content)

    def message(self) -> Message:
        if self.compaction is not None:
            return self.compaction.message()
        assert self.row is not None
        _pk, mid, _parent, parent_id, role, content, is_json, name, metadata, created, _ = self.row
        return Message.of(
            {
                "id": mid,
                "role": role,
                "content": json.loads(content) if is_json else content,
                "name": name,
                "metadata": json.loads(metadata) if metadata is not None else None,
                "parent_id": parent_id,
                "created_at": created,
                "compacted": self.compacted,
                "summary_of": None,
                "truncated": False,
            }
        )


class Walk:
    """A walk up a path, compactions applied, as every backend reads it: fed the path's rows
    newest first (``take``), it keeps the entries and says where to read on from.

    Stops at ``want`` entries, or at the message ``stop`` (``reached``). With
    ``include_compacted``, compacted messages are read as themselves, flagged; ``inside`` is
    the start of the compacted range the walk begins in, if any.
    """

    def __init__(
        self,
        comps: list[Compaction],
        *,
        want: int | None = None,
        include_compacted: bool = False,
        inside: int | None = None,
        stop: int | None = None,
    ) -> None:
        # Oldest first, so that of two compactions ending on one message the newest wins.
        self._by_end = {comp.end_pk: comp for comp in reversed(comps)}
        self._want = want
        self._include = include_compacted
        self._inside = inside
        self._stop = stop
        self.entries: list[Entry] = []
        self.reached = False

    def budget(self) -> int:
        """How many more rows the walk can use (0: done)."""
        if self.reached:
            return 0
        return ALL if self._want is None else self._want - len(self.entries)

    def take(self, rows: list[tuple[Any, ...]]) -> int | None:
        """Walk over ``rows`` (a stretch of the path, newest first); the pk to read on from,
        or None at the root, at the message ``stop``, or with enough entries."""
        for row in rows:
            if row[0] == self._stop:
                self.reached = True
                return None
            c = self._by_end.get(row[0]) if self._inside is None else None
            if c is not None and not self._include:
                self.entries.append(Entry(None, c))
                return c.start_parent_pk
            if c is not None:
                self._inside = c.start_pk
            self.entries.append(Entry(row, None, self._inside is not None))
            if self._inside == row[0]:
                self._inside = None
            if self._want is not None and len(self.entries) >= self._want:
                return None
        return rows[-1][2] if rows else None


ALL = 1 << 62


def applied(on_path: set[int], comps: list[Compaction]) -> list[Compaction]:
    """Of ``comps``, those that history applies on a path (the keys of its messages): from
    the leaf up, the newest of those ending on a message, skipping any that ends inside a range
    already applied. The rule of every backend."""
    chosen: list[Compaction] = []
    for c in sorted(comps, key=lambda c: (c.end_depth, c.pk), reverse=True):
        if c.end_pk in on_path and not any(
            a.start_depth <= c.end_depth <= a.end_depth for a in chosen
        ):
            chosen.append(c)
    return chosen


def check_page(limit: int | None, truncate_tool_output: int | None) -> None:
    """The rules of a history page's size and cutting, on every backend."""
    if limit is not None:
        validate.limit(limit, "limit", 1, 100_000)
    if truncate_tool_output is not None:
        validate.limit(truncate_tool_output, "truncate_tool_output", 0, 10**9)


def page(
    session_id: str,
    leaf_id: str | None,
    entries: list[Entry],
    limit: int | None,
    truncate_tool_output: int | None,
    earlier: bool,
) -> History:
    """A history page from the entries walked (newest first, one more than ``limit`` when
    there are more); ``earlier``: the page was asked for before a cursor."""
    has_more = limit is not None and len(entries) > limit
    if has_more:
        del entries[limit:]
    messages = [entry.message() for entry in entries]  # newest first
    if truncate_tool_output is not None:
        messages = truncate_old_tool_output(messages, truncate_tool_output, earlier)
    messages.reverse()
    return History.model_construct(
        session_id=session_id,
        leaf_id=leaf_id,
        messages=messages,
        has_more=has_more,
        next_before=messages[0].id if has_more and messages else None,
    )

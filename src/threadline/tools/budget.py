"""What a result may cost: history pages, branch lists and prompts cut to a character budget.

Hosts refuse large tool results (Claude Code: 25,000 tokens), so every page of messages a tool,
resource or prompt returns is cut to ``RESULT_BUDGET_CHARS`` of JSON, whatever its messages
hold: the oldest messages go first (``has_more`` says so); a message that alone is too big
keeps the start of its longest strings (in text or in any part), then as many parts as fit,
each cut marked, and reads ``truncated``. With ``include_branches`` the branch list gets at
most ``BRANCH_BUDGET_CHARS`` (the head's branch first, then the newest) and the messages the
rest; ``branches_omitted`` counts what was left out.
"""

from __future__ import annotations

import json
from typing import Any

from threadline.storage import Branch, History, Message
from threadline.storage.cutting import cut

RESULT_BUDGET_CHARS = 60_000
BRANCH_BUDGET_CHARS = 20_000
_OVERHEAD = 200  # a message's id, role, dates and flags, in JSON
_MARK = 40  # the length of a cut's marker, at most
_READABLE = 500  # a part cut shorter than this says too little: fewer parts are kept instead


def size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False))


def _weight(m: Message) -> int:
    return size(m.content) + (size(m.metadata) if m.metadata else 0) + _OVERHEAD


def fit(history: History, budget: int = RESULT_BUDGET_CHARS) -> History:
    """Drop the oldest messages of a page until it fits ``budget``; shorten a lone giant."""
    messages = list(history.messages)
    sizes = [_weight(m) for m in messages]
    total = sum(sizes)
    if total <= budget:
        return history
    while len(messages) > 1 and total > budget:
        total -= sizes.pop(0)
        messages.pop(0)
    if total > budget:
        meta = messages[0].metadata
        room = max(0, budget - _OVERHEAD - (size(meta) if meta else 0))
        messages[0] = messages[0].model_copy(
            update={"content": shorten(messages[0].content, room), "truncated": True}
        )
    return history.model_copy(
        update={"messages": messages, "has_more": True, "next_before": messages[0].id}
    )


def shorten(content: Any, room: int) -> Any:
    """``content`` (text, or a list of parts) in about ``room`` characters of JSON: every
    string capped at one length, the longest that fits; if that leaves too little of each
    (many parts), the first parts that fit, each string capped at ``_READABLE`` characters."""
    if isinstance(content, str):
        return cut(content, max(0, room - _MARK))
    strings = _strings(content)
    fixed = size(content) - sum(strings)

    def total(cap: int) -> int:
        return fixed + sum(min(n, cap + _MARK) for n in strings)

    low, high = 0, max(strings, default=0)
    while low < high:  # the largest cap whose total fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if total(middle) <= room else (low, middle - 1)
    if total(low) <= room and (low >= _READABLE or not isinstance(content, list)):
        return _cap(content, low)
    kept: list[Any] = []
    used = 2 + _MARK + 20  # the brackets and the closing note
    for part in content:
        part = _cap(part, _READABLE)
        used += size(part) + 2  # and its ", "
        if used > room:
            break
        kept.append(part)
    left = len(content) - len(kept)
    return [*kept, {"type": "text", "text": f"[{left} more parts not shown]"}]


def _strings(value: Any) -> list[int]:
    """The JSON lengths of every string in ``value``."""
    if isinstance(value, str):
        return [size(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _strings(item)]
    if isinstance(value, list):
        return [n for item in value for n in _strings(item)]
    return []


def _cap(value: Any, cap: int) -> Any:
    if isinstance(value, str):
        return cut(value, cap) if size(value) > cap + _MARK else value
    if isinstance(value, dict):
        return {key: _cap(item, cap) for key, item in value.items()}
    if isinstance(value, list):
        return [_cap(item, cap) for item in value]
    return value


def fit_branches(branches: list[Branch], budget: int = BRANCH_BUDGET_CHARS) -> list[Branch]:
    """The branches that fit ``budget``, in their order: the head's first, then the newest."""
    chosen: set[str] = set()
    used = 0
    order = sorted(branches, key=lambda b: b.created_at, reverse=True)
    order.sort(key=lambda b: not b.is_head)
    for b in order:
        weight = size(b.preview) + _OVERHEAD
        if used + weight > budget:
            continue
        used += weight
        chosen.add(b.leaf_id)
    return [b for b in branches if b.leaf_id in chosen]

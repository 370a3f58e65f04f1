"""Cutting long output for reading: tool results older than the latest user turn shortened
(``get_history(truncate_tool_output=N)``), and the one way every long text is cut and marked,
here and in the tools' result budget. Nothing stored changes."""

from __future__ import annotations

from typing import Any

from threadline.storage.models import Message


def cut(text: str, keep: int) -> str:
    """``text``, or its first ``keep`` characters and a note of how many more there are."""
    if len(text) <= keep:
        return text
    return f"{text[:keep]}… [{len(text) - keep} more characters not shown]"


TOOL_RESULT_TYPES = frozenset({"tool_result", "tool-result", "function_call_output"})


def is_tool_result(role: str, content: Any) -> bool:
    if role == "tool":
        return True
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in TOOL_RESULT_TYPES for p in content
    )


def truncate_old_tool_output(messages: list[Message], keep: int, all_old: bool) -> list[Message]:
    """Shorten tool output older than the latest user turn; the current turn stays whole."""
    out = []
    old = all_old
    for message in messages:  # newest first
        if old and is_tool_result(message.role, message.content):
            content, shortened = _shorten(message.content, keep, whole=message.role == "tool")
            if shortened:
                message = message.model_copy(update={"content": content, "truncated": True})
        if message.role == "user" and not is_tool_result(message.role, message.content):
            old = True
        out.append(message)
    return out


def _shorten(value: Any, keep: int, whole: bool) -> tuple[Any, bool]:
    if isinstance(value, str):
        return cut(value, keep), len(value) > keep
    if isinstance(value, list):
        was_cut = False
        items = []
        for item in value:
            if whole or (isinstance(item, dict) and item.get("type") in TOOL_RESULT_TYPES):
                item, c = _shorten_part(item, keep)
                was_cut = was_cut or c
            items.append(item)
        return items, was_cut
    return value, False


def _shorten_part(part: Any, keep: int) -> tuple[Any, bool]:
    if isinstance(part, str):
        return _shorten(part, keep, whole=True)
    if isinstance(part, list):
        return _shorten(part, keep, whole=True)
    if isinstance(part, dict):
        was_cut = False
        out = {}
        for key, value in part.items():
            if key in ("text", "content", "output", "result"):
                value, c = _shorten_part(value, keep)
                was_cut = was_cut or c
            out[key] = value
        return out, was_cut
    return part, False

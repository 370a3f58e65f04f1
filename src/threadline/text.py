"""Small pure helpers: ids, clocks, token estimates and the searchable text of a message."""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any

ID_CHARS = r"[A-Za-z0-9._-]{1,64}"  # a session or message id (no anchors: for bigger patterns)
ID_PATTERN = f"^{ID_CHARS}$"
_ID = re.compile(ID_PATTERN)

# Keys of content parts whose string values are worth searching. Others (``type``, ``id``,
# ``data``, ``url``, ``mime_type``, ...) are structure or payload, not conversation.
_TEXT_KEYS = frozenset(
    {
        "text",
        "content",
        "output",
        "result",
        "arguments",
        "input",
        "thinking",
        "reasoning",
        "summary",
        "name",
        "title",
        "query",
    }
)
# Keys that never hold conversation, even inside tool arguments and results.
_SKIP_KEYS = frozenset({"type", "id", "tool_use_id", "call_id", "data", "mime_type", "media_type"})
# Keys that wrap a whole item (an agent framework's, kept as it was): searched by the same
# rules as a part.
_WRAPPER_KEYS = frozenset({"item"})


def new_id() -> str:
    """A short, unguessable id: 96 random bits as 16 url-safe characters, never starting with
    "-" (which a command line would take for an option)."""
    while True:
        value = secrets.token_urlsafe(12)
        if value[0] != "-":
            return value


def is_id(value: str) -> bool:
    return _ID.match(value) is not None


def now() -> str:
    """UTC time as ISO 8601 with microseconds; sorts as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def estimate_tokens(text: str) -> int:
    """Cheap token estimate: the larger of UTF-8 bytes / 4 and the number of words.

    Bytes rather than characters make CJK text (3 bytes, about one token per character)
    count heavier than ASCII (about four characters per token), which is what tokenizers do.
    """
    if not text:
        return 0
    return max((len(text.encode("utf-8", "surrogatepass")) + 3) // 4, len(text.split()))


def readable(content: str | list[Any]) -> str:
    """A message's content for people: strings as they are, parts as text or indented JSON."""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(text, str):
            out.append(text)
        else:
            out.append("```json\n" + json.dumps(part, ensure_ascii=False, indent=1) + "\n```")
    return "\n\n".join(out)


def searchable_text(content: str | list[Any]) -> str:
    """The text of a message that search indexes: the string itself, or the text of its parts."""
    if isinstance(content, str):
        return content
    out: list[str] = []
    _collect(content, out)
    return "\n".join(out)


def _collect(value: Any, out: list[str], everything: bool = False) -> None:
    """Gather strings; inside a text-bearing key (tool arguments, results) gather them all."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, out, everything)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _TEXT_KEYS or (everything and key not in _SKIP_KEYS):
                _collect(item, out, True)
            elif key in _WRAPPER_KEYS:
                _collect(item, out, everything)

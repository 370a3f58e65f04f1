"""Input rules shared by every operation, and a message's stored form (``encode``).

Each failure names the field and the rule. The stored form is the same on every backend:
the content as text or JSON, its searchable text and its token estimate.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticError

from threadline.config import Config, Limits
from threadline.storage.errors import InvalidInput
from threadline.storage.models import MessageIn
from threadline.text import ID_PATTERN, estimate_tokens, is_id, searchable_text

_MESSAGES = TypeAdapter(list[MessageIn])


def session_id(value: object, field: str = "session_id") -> str:
    if not isinstance(value, str) or not is_id(value):
        raise InvalidInput(field, f"must match {ID_PATTERN} (letters, digits, '.', '_', '-')")
    return value


def new_session_id(value: object, field: str = "session_id") -> str:
    """An id for a new session: also one that can name its resources (``threadline://
    sessions/ID``), which ``.`` and ``..`` cannot, as URLs resolve them away."""
    if session_id(value, field) in (".", ".."):
        raise InvalidInput(field, "must not be '.' or '..' (they cannot name a resource)")
    return str(value)


def message_id(value: object, field: str = "message_id") -> str:
    """A message id to look up; compaction summaries (``compaction:N``) are ids too."""
    if not isinstance(value, str) or not (is_id(value) or _is_summary_id(value)):
        raise InvalidInput(field, f"must be a message id matching {ID_PATTERN}")
    return value


def _is_summary_id(value: str) -> bool:
    """``compaction:N``: every id the store can give a summary (N up to 2**63 - 1)."""
    prefix, _, number = value.partition(":")
    digits = number.isascii() and number.isdigit() and len(number) <= 19
    return prefix == "compaction" and digits and int(number) < 2**63


def summary_pk(value: str) -> int | None:
    return int(value.partition(":")[2]) if _is_summary_id(value) else None


def text(value: object, field: str, max_chars: int, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if len(value) > max_chars:
        raise InvalidInput(field, f"is {len(value)} characters; the limit is {max_chars}")
    if not allow_empty and not value.strip():
        raise InvalidInput(field, "must not be empty")
    unicode(value, field)
    return value


def unicode(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "must be valid Unicode (it holds a lone surrogate)") from None


def metadata(value: object, field: str, limits: Limits) -> str | None:
    """Metadata as compact JSON text, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(field, "must be an object")
    encoded = dump_json(value, field)
    if len(encoded.encode("utf-8")) > limits.max_metadata_bytes:
        raise InvalidInput(field, f"is over the limit of {limits.max_metadata_bytes} bytes of JSON")
    return encoded


def dump_json(value: Any, field: str) -> str:
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(field, f"must be JSON ({exc})") from None
    unicode(encoded, field)
    return encoded


def messages(value: Sequence[MessageIn | dict[str, Any]], limits: Limits) -> list[MessageIn]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInput("messages", "must be a list of messages")
    if len(value) > limits.max_batch_messages:
        raise InvalidInput(
            "messages", f"holds {len(value)} messages; the limit is {limits.max_batch_messages}"
        )
    if all(type(m) is MessageIn for m in value):
        return list(value)  # type: ignore[arg-type]  # validated when they were made
    items = [m.model_dump(exclude_unset=True) if isinstance(m, MessageIn) else m for m in value]
    try:
        return _MESSAGES.validate_python(items)
    except PydanticError as exc:
        first = exc.errors()[0]
        index, name = first["loc"][:2] if len(first["loc"]) > 1 else (first["loc"][0], "")
        field = f"messages[{index}].{name}" if name else f"messages[{index}]"
        rule = first["msg"].lower()
        if name == "content":  # a union: pydantic reports each member; say the rule once
            rule = "must be a string or a list of JSON parts"
        raise InvalidInput(field, rule) from None


def limit(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(field, f"must be a whole number from {low} to {high}")
    return value


def encode_cursor(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def decode_cursor(value: object, field: str, shape: Sequence[type]) -> list[Any]:
    """Decode a cursor this store made; anything else is refused, not guessed at."""
    bad = InvalidInput(field, "is not a cursor returned by the previous page")
    if not isinstance(value, str) or len(value) > 512:
        raise bad
    try:
        payload = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        raise bad from None
    if not isinstance(payload, list) or len(payload) != len(shape):
        raise bad
    if not all(type(item) is kind for item, kind in zip(payload, shape, strict=True)):
        raise bad
    return payload


def moment(value: object, field: str) -> str | None:
    """An ISO 8601 date or time as stored (UTC, microseconds); a time without a zone is UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be an ISO 8601 date or time, such as 2026-03-01")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidInput(
            field, "must be an ISO 8601 date or time, such as 2026-03-01 or 2026-03-01T14:30Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Encoded = list[tuple[MessageIn, tuple[Any, ...]]]


def encode(messages: list[MessageIn], config: Config) -> Encoded:
    """Each message with its stored columns (``encode_message``): done by the caller, before
    the write is queued, so the writer thread only runs SQL."""
    return [(m, encode_message(m, i, config)) for i, m in enumerate(messages)]


def encode_message(message: MessageIn, index: int, config: Config) -> tuple[Any, ...]:
    """(role, content, is_json, body, name, metadata, tokens) as stored, after the size rules:
    the columns of ``INSERT_MESSAGE`` between ``path_tokens`` and ``created_at``, in order."""
    field = f"messages[{index}]"
    if message.id is not None and not is_id(message.id):  # compaction:N ids are reserved
        raise InvalidInput(f"{field}.id", f"must match {ID_PATTERN}")
    limit = config.limits.max_message_chars
    if isinstance(message.content, str):
        content, is_json, body = message.content, 0, None
        unicode(content, f"{field}.content")
    else:
        content, is_json = dump_json(message.content, f"{field}.content"), 1
        body = searchable_text(message.content)
    if len(content) > limit:
        raise InvalidInput(
            f"{field}.content", f"is {len(content)} characters; the limit is {limit} per message"
        )
    if message.name is not None:
        unicode(message.name, f"{field}.name")
    meta = metadata(message.metadata, f"{field}.metadata", config.limits)
    tokens = estimate_tokens(content if body is None else body)
    return message.role, content, is_json, body, message.name, meta, tokens

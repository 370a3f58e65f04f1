"""Tool arguments whose JSON schemas every model provider accepts, and what they accept.

Providers convert a tool's input schema before a model sees it, and each refuses something
that JSON Schema allows: OpenAI's strict mode refuses open objects (``metadata`` as a map)
and untyped values (JSON content parts as ``{}``); Google's converter crashes on
``additionalProperties: false`` and on ``$ref`` items. So the schemas advertised here are
inline, every object has properties and no ``additionalProperties``, every value has a type:

- ``metadata`` is a JSON object written as a string (``"{\\"tag\\": \\"travel\\"}"``);
- a content part is ``{"type", "text", "json"}``: ``json`` holds the part's other fields as
  a JSON object in a string (a tool call's arguments, an image's source), merged back into
  the part before it is stored.

What is *accepted* stays wider than what is advertised: a client that sends metadata as an
object, or parts as plain JSON objects, is served as before.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from threadline.storage import MessageIn
from threadline.text import ID_PATTERN


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "default": None, "description": description}


METADATA_DESCRIPTION = (
    'Your own JSON object (tags, owner, links) as a string: "{\\"tag\\": \\"travel\\"}".'
)
_PART = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "text, tool_use, tool_result, image, ..."},
        "text": _nullable({"type": "string"}, "The text of a text part."),
        "json": _nullable(
            {"type": "string"},
            "The part's other fields as a JSON object in a string, e.g. "
            '"{\\"name\\": \\"search\\", \\"input\\": {\\"q\\": \\"kyoto\\"}}".',
        ),
    },
    "required": ["type"],
}
_MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": _PART}],
            "description": "The text, or a list of parts (tool calls, tool results, images).",
        },
        "id": _nullable(
            {"type": "string", "pattern": ID_PATTERN},
            "Your id for this message (makes a retry safe); generated if null.",
        ),
        "name": _nullable({"type": "string"}, "The speaker's or the tool's name."),
        "metadata": _nullable({"type": "string"}, METADATA_DESCRIPTION),
    },
    "required": ["role", "content"],
}


class WireError(ValueError):
    """A portable form that does not decode; pydantic reports it as the argument's error
    (``str()`` is "field: rule", the field named from the argument down)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")


def metadata_from_wire(value: Any, field: str = "metadata") -> Any:
    """A JSON object sent as a string becomes the object; anything else is left for the
    usual validation (an object is today's form)."""
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise WireError(field, 'must be a JSON object written as a string, such as "{}"')
    return decoded


def _part_from_wire(part: Any, field: str) -> Any:
    if not isinstance(part, dict) or not isinstance(part.get("json", 0), str | None):
        return part  # not the portable form (no "json" field, or one of another type)
    rest = {k: v for k, v in part.items() if k != "json"}
    if rest.get("text") is None:
        rest.pop("text", None)
    if part["json"] is None:
        return rest
    fields = metadata_from_wire(part["json"], f"{field}.json")
    clash = sorted(set(fields) & set(rest))
    if clash:
        raise WireError(f"{field}.json", f"must not repeat {', '.join(clash)}")
    return {**rest, **fields}


def _message_from_wire(message: Any, index: int) -> Any:
    if not isinstance(message, dict):
        return message
    out = dict(message)
    for key in ("id", "name", "metadata"):
        if key in out and out[key] is None:
            del out[key]  # null means "not given", as strict-mode clients must send it
    if "metadata" in out:
        out["metadata"] = metadata_from_wire(out["metadata"], f"messages[{index}].metadata")
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [
            _part_from_wire(part, f"messages[{index}].content[{i}]")
            for i, part in enumerate(content)
        ]
    return out


def _messages_from_wire(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [_message_from_wire(m, i) for i, m in enumerate(value)]


Metadata = Annotated[
    dict[str, Any] | None,
    BeforeValidator(metadata_from_wire),
    WithJsonSchema(_nullable({"type": "string"}, METADATA_DESCRIPTION)),
]
Messages = Annotated[
    list[MessageIn],
    BeforeValidator(_messages_from_wire),
    WithJsonSchema({"type": "array", "items": _MESSAGE}),
]

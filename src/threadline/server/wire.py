"""What a model pays for: lean tool listings and compact tool results.

A host puts ``tools/list`` into the model's context and many put a tool result's text there
too, so both are kept small without losing what a client needs:

- input schemas lose the ``title`` pydantic gives every field ("Session Id" for
  ``session_id``), and descriptions the indentation of the docstrings;
- input schemas write an optional ``X or null`` as ``"type": [X, "null"]``, not pydantic's
  ``anyOf`` with ``"default": null``;
- an output schema says only that the result is an object (its fields are the library's
  models, ``threadline.storage.models``): the full schemas were half of ``tools/list``, a
  model never sees them (hosts give it the input schemas), and a client re-validated every
  result against them (5 ms of a 12 ms ``get_history`` call);
- a result's text is its structured content as compact JSON, without the nulls, empty lists
  and default flags a model does not need; a history page's text is a transcript, one line
  per message (the structured content itself is unchanged).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from mcp.types import CallToolResult, TextContent, Tool

# What a tool with an output schema lists as it: its results are JSON objects.
_OBJECT: dict[str, Any] = {"type": "object"}

# Per-message flags that are false on almost every message: said only when true.
_QUIET = frozenset({"compacted", "truncated"})


def lean_schema(schema: Any) -> Any:
    """``schema`` without ``title`` annotations and with ``X or null`` written short; the
    names of properties are kept, whatever they are called."""
    if isinstance(schema, list):
        return [lean_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    schema = _nullable(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title":
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {k: lean_schema(v) for k, v in value.items()}
        elif key == "description" and isinstance(value, str):
            out[key] = inspect.cleandoc(value)
        else:
            out[key] = lean_schema(value)
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [{"type": T, ...}, {"type": "null"}], "default": null}`` (pydantic's
    optional field) as ``{"type": [T, "null"], ...}``: the same meaning in a third of the
    characters. Other schemas are returned as they are."""
    members = schema.get("anyOf")
    if not isinstance(members, list) or len(members) != 2 or {"type": "null"} not in members:
        return schema
    (kept,) = [m for m in members if m != {"type": "null"}]
    if not isinstance(kept, dict) or not isinstance(kept.get("type"), str):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.get("default", ...) is None:
        del rest["default"]  # an omitted argument is null already
    return {**kept, "type": [kept["type"], "null"], **rest}


def lean_tool(tool: Tool) -> Tool:
    return tool.model_copy(
        update={
            "description": inspect.cleandoc(tool.description or ""),
            "input_schema": lean_schema(tool.input_schema),
            "output_schema": _OBJECT if tool.output_schema is not None else None,
        }
    )


def quiet(value: Any) -> Any:
    """``value`` without nulls, empty lists and false per-message flags."""
    if isinstance(value, list):
        return [quiet(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        k: quiet(v)
        for k, v in value.items()
        if v is not None and v != [] and not (k in _QUIET and v is False)
    }


def _json(value: Any) -> str:
    return json.dumps(quiet(value), ensure_ascii=False, separators=(",", ":"))


def transcript(page: dict[str, Any]) -> str:
    """A history page as a model reads it: a heading, then ``[id] role: content`` lines."""
    messages = page.get("messages", [])
    head = f"session {page.get('session_id')}: {len(messages)} messages, oldest first"
    if page.get("has_more"):
        head += f"; older ones: before={page.get('next_before')}"
    lines = [head]
    for m in messages:
        tags = [m.get("role", "")]
        if m.get("name"):
            tags.append(f"name={m['name']}")
        if m.get("summary_of") is not None:
            tags.append(f"summary of {m['summary_of']} messages")
        tags += [flag for flag in ("compacted", "truncated") if m.get(flag)]
        if m.get("metadata"):
            tags.append(f"metadata={_json(m['metadata'])}")
        content = m.get("content")
        text = content if isinstance(content, str) else _json(content)
        lines.append(f"[{m.get('id')}] {' · '.join(tags)}: {text}")
    for branch in page.get("branches") or ():
        lines.append(f"branch: {_json(branch)}")
    return "\n".join(lines)


def compact(result: CallToolResult, tool: str) -> CallToolResult:
    """The result with its text made short: a transcript for a history page, else compact
    JSON of its structured content."""
    if result.is_error or result.structured_content is None:
        return result
    blocks = result.content
    if len(blocks) != 1 or not isinstance(blocks[0], TextContent):
        return result
    if not blocks[0].text.startswith("{"):
        return result  # not the SDK's JSON of a model (a plain value, as written)
    page = result.structured_content
    text = transcript(page) if tool == "get_history" else _json(page)
    return result.model_copy(update={"content": [TextContent(type="text", text=text)]})

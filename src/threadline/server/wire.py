"""What a model pays for: lean tool listings and compact tool results.

A host puts ``tools/list`` into the model's context and many put a tool result's text there
too, so both are kept small without losing what a client needs:

- input schemas lose the ``title`` pydantic gives every field ("Session Id" for
  ``session_id``), and descriptions the indentation of the docstrings;
- an output schema keeps one level: the result's fields and their JSON types, what a client
  checks a result against; the nested detail (and the descriptions, which the tool's own
  description covers) was half of ``tools/list``;
- a result's text is its structured content as compact JSON, without the nulls, empty lists
  and default flags a model does not need; a history page's text is a transcript, one line
  per message (the structured content itself is unchanged).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from mcp.types import CallToolResult, TextContent, Tool

# Per-message flags that are false on almost every message: said only when true.
_QUIET = frozenset({"compacted", "truncated"})


def lean_schema(schema: Any) -> Any:
    """``schema`` without ``title`` annotations; the names of properties are kept, whatever
    they are called."""
    if isinstance(schema, list):
        return [lean_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
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


def _types(schema: dict[str, Any]) -> list[str]:
    if "anyOf" in schema:
        return [t for member in schema["anyOf"] for t in _types(member)]
    if "$ref" in schema:
        return ["object"]
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    return [str(kind)] if kind else []


def shallow_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema cut to its fields and their JSON types."""
    fields = {}
    for name, field in schema.get("properties", {}).items():
        kinds = list(dict.fromkeys(_types(field)))
        fields[name] = {"type": kinds[0] if len(kinds) == 1 else kinds} if kinds else {}
    return {"type": "object", "properties": fields}


def lean_tool(tool: Tool) -> Tool:
    return tool.model_copy(
        update={
            "description": inspect.cleandoc(tool.description or ""),
            "input_schema": lean_schema(tool.input_schema),
            "output_schema": (
                shallow_schema(tool.output_schema) if tool.output_schema is not None else None
            ),
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

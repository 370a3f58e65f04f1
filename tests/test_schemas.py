"""Every tool's input schema passes the converters of the model providers' own SDKs, and the
portable forms those schemas advertise mean what today's forms mean.

The converters are the real ones, run on the schemas ``tools/list`` returns: the OpenAI
Agents SDK's strict conversion (as its MCP path runs it with ``convert_schemas_to_strict``,
open objects refused) and google-genai's MCP converter and its strict ``Schema`` parser.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agents.strict_schema import ensure_strict_json_schema
from google.genai import _mcp_utils
from google.genai import types as genai
from mcp import Client

from tests.helpers import call
from tests.test_tools import TOOLS, _server, fails


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with Client(_server(tmp_path)) as c:
        yield c


@pytest.fixture
async def tools(client: Client) -> dict[str, Any]:
    listed = (await client.list_tools()).tools
    assert {t.name for t in listed} == TOOLS
    return {t.name: t for t in listed}


def _subschemas(schema: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    """Every schema reachable through properties, items and anyOf, with its path."""
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _subschemas(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _subschemas(schema["items"], f"{path}[]")
    for i, sub in enumerate(schema.get("anyOf", [])):
        found += _subschemas(sub, f"{path}|{i}")
    return found


@pytest.mark.parametrize("name", sorted(TOOLS))
async def test_openai_strict_mode_accepts_every_tool(tools: dict[str, Any], name: str) -> None:
    schema = copy.deepcopy(tools[name].input_schema)

    strict = ensure_strict_json_schema(schema, _reject_open_objects=True)

    assert strict["type"] == "object" and strict["additionalProperties"] is False


@pytest.mark.parametrize("name", sorted(TOOLS))
async def test_gemini_converts_every_tool(tools: dict[str, Any], name: str) -> None:
    tool = tools[name]

    converted = _mcp_utils.mcp_to_gemini_tool(tool)
    strict = genai.Schema.from_json_schema(
        json_schema=genai.JSONSchema(**copy.deepcopy(tool.input_schema)),
        raise_error_on_unsupported_field=True,
    )

    (declaration,) = converted.function_declarations or []
    assert declaration.parameters is not None
    assert set(declaration.parameters.properties or {}) == set(tool.input_schema["properties"])
    assert set(strict.properties or {}) == set(tool.input_schema["properties"])


@pytest.mark.parametrize("name", sorted(TOOLS))
async def test_every_value_has_a_type_and_every_object_properties(
    tools: dict[str, Any], name: str
) -> None:
    """What Gemini CLI checks before it offers a tool, and what Gemini's API refuses."""
    schema = tools[name].input_schema
    assert "$defs" not in schema

    for path, sub in _subschemas(schema):
        assert "$ref" not in sub and "additionalProperties" not in sub, path
        assert "type" in sub or all("type" in s for s in sub.get("anyOf", [{}])), path
        if sub.get("type") == "object":
            assert sub.get("properties"), path
        if sub.get("type") == "array":
            assert isinstance(sub.get("items"), dict) and sub["items"], path


# -- the portable forms keep their meaning ------------------------------------------------


async def test_metadata_as_a_json_string_is_stored_as_the_object(client: Client) -> None:
    info = await call(client, "create_session", title="t", metadata='{"tag": "travel", "n": 2}')
    sid = info["session_id"]
    assert info["metadata"] == {"tag": "travel", "n": 2}

    renamed = await call(client, "rename_session", session_id=sid, metadata='{"tag": "work"}')

    assert (renamed["title"], renamed["metadata"]) == ("t", {"tag": "work"})
    # Today's form, an object, is still served.
    again = await call(client, "rename_session", session_id=sid, metadata={"tag": "home"})
    assert again["metadata"] == {"tag": "home"}


@pytest.mark.parametrize("metadata", ["not json", "[1, 2]", '"text"', "{"])
async def test_metadata_that_is_not_an_object_is_refused_and_changes_nothing(
    client: Client, metadata: str
) -> None:
    sid = (await call(client, "create_session", title="t"))["session_id"]

    error = await fails(client, "rename_session", session_id=sid, metadata=metadata)

    assert "metadata" in error and "JSON object" in error
    info = await call(client, "get_session", session_id=sid)
    assert info["metadata"] is None


async def test_parts_with_json_fields_are_stored_as_whole_parts(client: Client) -> None:
    sid = (await call(client, "create_session"))["session_id"]
    call_part = {"type": "tool_use", "text": None, "json": '{"id": "c1", "input": {"q": "x"}}'}
    strict_message = {
        "role": "assistant",
        "content": [{"type": "text", "text": "Looking.", "json": None}, call_part],
        "id": None,
        "name": None,
        "metadata": '{"model": "m"}',
    }
    plain_message = {"role": "user", "content": [{"type": "tool_result", "id": "c1", "ok": True}]}

    await call(client, "append_messages", session_id=sid, messages=[strict_message, plain_message])

    history = await call(client, "get_history", session_id=sid)
    stored, plain = history["messages"]
    assert stored["content"] == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "c1", "input": {"q": "x"}},
    ]
    assert stored["metadata"] == {"model": "m"} and stored["name"] is None
    assert plain["content"] == plain_message["content"]


@pytest.mark.parametrize(
    ("part", "needle"),
    [
        ({"type": "x", "json": "[1]"}, "messages[0].content[0].json: must be a JSON object"),
        ({"type": "x", "json": '{"type": "y"}'}, "messages[0].content[0].json: must not repeat"),
    ],
)
async def test_a_part_whose_json_does_not_decode_is_refused(
    client: Client, part: dict[str, Any], needle: str
) -> None:
    sid = (await call(client, "create_session"))["session_id"]

    error = await fails(
        client, "append_messages", session_id=sid, messages=[{"role": "user", "content": [part]}]
    )

    assert needle in error
    assert (await call(client, "get_session", session_id=sid))["message_count"] == 0


async def test_rename_keeps_the_title_unless_given_and_empty_removes_it(client: Client) -> None:
    sid = (await call(client, "create_session", title="Kyoto"))["session_id"]

    kept = await call(client, "rename_session", session_id=sid, title=None, metadata="{}")
    renamed = await call(client, "rename_session", session_id=sid, title="Nara")
    removed = await call(client, "rename_session", session_id=sid, title="")

    assert (kept["title"], renamed["title"], removed["title"]) == ("Kyoto", "Nara", None)
    assert json.dumps(kept["metadata"]) == "{}"

"""What a model sees of threadline: lean listings, short results, errors that name the field
and the rule, and hints that say what a tool does. Through the SDK's in-memory client."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.helpers import call
from tests.test_tools import _server, fails


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with Client(_server(tmp_path)) as c:
        yield c


def _keys(schema: Any, found: set[str]) -> set[str]:
    """Every keyword used in a schema (not the names of its properties)."""
    if isinstance(schema, list):
        for s in schema:
            _keys(s, found)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key == "properties":
                for sub in value.values():
                    _keys(sub, found)
            else:
                _keys(value, found)
    return found


async def test_listings_carry_no_field_titles_and_no_docstring_indentation(
    client: Client,
) -> None:
    tools = (await client.list_tools()).tools

    for tool in tools:
        assert "title" not in _keys(tool.input_schema, set()), tool.name
        assert "    " not in (tool.description or ""), tool.name
        assert tool.output_schema == {"type": "object"}, tool.name
    rename = next(t for t in tools if t.name == "rename_session")
    assert "title" in rename.input_schema["properties"]  # a property named title is kept
    listing = json.dumps([t.model_dump(mode="json", exclude_none=True) for t in tools])
    assert len(listing) < 39_309 / 2  # before the lean listing


async def test_an_optional_argument_is_its_type_or_null_written_short(client: Client) -> None:
    search = next(t for t in (await client.list_tools()).tools if t.name == "session_search")
    properties = search.input_schema["properties"]

    assert properties["session_id"]["type"] == ["string", "null"]
    assert "anyOf" not in properties["session_id"] and "default" not in properties["session_id"]
    assert properties["role"]["type"] == ["string", "null"]
    assert properties["role"]["enum"] == ["system", "user", "assistant", "tool"]
    assert properties["limit"] == {
        "default": 10, "description": "Hits per page.", "maximum": 50, "minimum": 1,
        "type": "integer",
    }  # fmt: skip
    # Explicit nulls are still accepted, as before.
    found = await call(client, "session_search", query="x", session_id=None, role=None)
    assert found["hits"] == []


async def test_every_resource_and_template_has_a_description(client: Client) -> None:
    resources = (await client.list_resources()).resources
    templates = (await client.list_resource_templates()).resource_templates

    assert resources and templates
    for item in [*resources, *templates]:
        assert item.description and len(item.description) > 20, item.name


async def test_a_result_text_is_compact_json_without_nulls(client: Client) -> None:
    result = await client.call_tool("create_session", {"title": "Kyoto"})

    text = result.content[0].text  # type: ignore[union-attr]
    assert "\n" not in text and ": " not in text and "null" not in text
    assert json.loads(text)["title"] == "Kyoto"
    assert result.structured_content is not None
    assert result.structured_content["metadata"] is None  # the structured content is whole


async def test_a_history_page_reads_as_a_short_transcript(client: Client) -> None:
    sid = (await call(client, "create_session"))["session_id"]
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"short message number {i}"}
        for i in range(50)
    ]
    await call(client, "append_messages", session_id=sid, messages=messages)

    result = await client.call_tool("get_history", {"session_id": sid})

    text = result.content[0].text  # type: ignore[union-attr]
    lines = text.splitlines()
    assert lines[0] == f"session {sid}: 50 messages, oldest first"
    assert re.fullmatch(r"\[[\w-]{16}\] user: short message number 0", lines[1])
    assert lines[-1].endswith("] assistant: short message number 49")
    content = sum(len(m["content"]) for m in messages)
    assert len(text) <= 3 * content  # 14x before (indented JSON with nulls)


async def test_the_transcript_marks_summaries_parts_and_paging(client: Client) -> None:
    sid = (await call(client, "create_session"))["session_id"]
    parts = [{"type": "text", "text": "see"}, {"type": "image", "url": "u"}]
    await call(client, "append_messages", session_id=sid, messages=[
        *({"role": "user", "content": f"m{i}"} for i in range(10)),
        {"role": "assistant", "content": parts, "name": "bot"},
    ])  # fmt: skip
    await call(client, "compact_session", session_id=sid, summary="We met.", keep_last=1)

    text = (await client.call_tool("get_history", {"session_id": sid, "limit": 2})).content[0].text  # type: ignore[union-attr]

    heading, summary, last = text.splitlines()
    assert heading.startswith(f"session {sid}: 2 messages, oldest first; older ones: before=")
    assert summary.endswith("user · summary of 8 messages: We met.")
    assert last.endswith(f"assistant · name=bot: {json.dumps(parts, separators=(',', ':'))}")


@pytest.mark.parametrize(
    ("tool", "args", "sentence"),
    [
        ("get_history", {"limit": 0}, "limit: must be at least 1"),
        ("get_history", {"limit": "many"}, "limit: must be a whole number"),
        ("get_history", {"session_id": "bad id!"}, "session_id: must match"),
        ("get_history", {"session_id": None}, "session_id: must be a string"),
        ("append_messages", {"messages": [{"role": "x", "content": "a"}]},
         "messages[0].role: must be one of system, user, assistant or tool"),
        ("append_messages", {"messages": [{"role": "user", "content": 5}]},
         "messages[0].content: must be a string or a list of parts"),
        ("append_messages", {"messages": [{"role": "user"}]}, "messages[0].content: is required"),
        ("append_messages", {"messages": []}, "messages: must hold at least 1 item"),
        ("session_search", {"query": "x", "order": "random"},
         "order: must be one of relevance, newest or oldest"),
        ("rename_session", {"metadata": [1]}, "metadata: must be a JSON object"),
    ],
)  # fmt: skip
async def test_argument_errors_are_one_sentence_naming_the_field(
    client: Client, tool: str, args: dict[str, Any], sentence: str
) -> None:
    sid = (await call(client, "create_session"))["session_id"]
    arguments = {"session_id": sid, **args}
    if tool == "session_search":
        del arguments["session_id"]

    error = await fails(client, tool, **arguments)

    assert error == f"Error executing tool {tool}: {sentence}" or (
        error.startswith(f"Error executing tool {tool}: {sentence}")
    )
    assert "\n" not in error and "pydantic" not in error and "input_value" not in error


async def test_new_root_with_parent_id_is_refused_and_appends_nothing(client: Client) -> None:
    sid = (await call(client, "create_session"))["session_id"]
    first = await call(
        client, "append_messages", session_id=sid, messages=[{"role": "user", "content": "a"}]
    )

    error = await fails(
        client,
        "append_messages",
        session_id=sid,
        messages=[{"role": "user", "content": "b"}],
        parent_id=first["message_ids"][0],
        new_root=True,
    )

    assert "new_root: cannot be combined with parent_id" in error
    assert (await call(client, "get_session", session_id=sid))["message_count"] == 1


async def test_a_replace_returns_the_text_it_replaced(client: Client) -> None:
    sid = (await call(client, "create_session"))["session_id"]
    first = await call(client, "update_context", session_id=sid, label="memory", content="A")
    added = await call(
        client, "update_context", session_id=sid, label="memory", content="B", mode="append"
    )
    replaced = await call(client, "update_context", session_id=sid, label="memory", content="C")

    assert (first["replaced"], added["replaced"], replaced["replaced"]) == (None, None, "A\nB")


async def test_hints_say_what_each_tool_does(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}

    assert tools["update_context"].annotations.destructive_hint is False  # type: ignore[union-attr]
    assert tools["delete_messages"].annotations.idempotent_hint is False  # type: ignore[union-attr]
    usage = " ".join((tools["record_usage"].description or "").split())
    assert "a model does not know its own token counts" in usage
    assert "rewinds" in (tools["set_head"].description or "")

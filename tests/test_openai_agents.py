"""``ThreadlineSession`` with the real OpenAI Agents SDK (its ``Runner`` and scripted test
model, ``agents.testing``), on real stores."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from agents import Agent, Runner, function_tool
from agents.memory.session import Session
from agents.memory.session_settings import SessionSettings
from agents.testing import ScriptedModel, assistant_message, function_call

from threadline import Store
from threadline.integrations.openai_agents import ThreadlineSession, to_item
from threadline.storage import SessionNotFound

# One of every item kind the SDK writes to a session in a tool-calling run, and a custom one.
ITEMS: list[dict[str, Any]] = [
    {"content": "Plan a day in Kyoto, 竹林 included.", "role": "user"},
    {"role": "developer", "content": "Be brief."},
    {
        "id": "rs_1", "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Check the weather first."}],
    },
    {
        "arguments": '{"city":"Kyoto"}', "call_id": "c1", "name": "weather",
        "type": "function_call", "id": "fc_1", "status": "completed",
    },
    {"call_id": "c1", "output": "sunny, 24°C", "type": "function_call_output"},
    {
        "id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": "Arashiyama at dawn.", "annotations": [],
                     "logprobs": []}],
    },
    {"type": "x_custom", "payload": {"nested": [1, 2.5, None, True, "ü"]}},
]  # fmt: skip


async def test_every_item_kind_round_trips_exactly(tmp_path: Path) -> None:
    session = ThreadlineSession("trip", tmp_path / "t.db")
    try:
        assert isinstance(session, Session)
        await session.add_items(ITEMS)
        got = await session.get_items()
        assert json.dumps(got, ensure_ascii=False) == json.dumps(ITEMS, ensure_ascii=False)
        assert await session.get_items(limit=2) == ITEMS[-2:]
        # Also a threadline session like any other: roles, search, history.
        history = await session.store.get_history("trip")
        roles = [m.role for m in history.messages]
        assert roles == [
            "user",
            "system",
            "assistant",
            "assistant",
            "tool",
            "assistant",
            "assistant",
        ]
        hits = await session.search("Which place at dawn?")
        assert hits.hits[0].message_id == history.messages[5].id
        # A plain chat message in the key order ("role", "content") is kept as plain text.
        await session.add_items([{"role": "user", "content": "plain words"}])
        last = (await session.store.get_history("trip", limit=1)).messages[0]
        assert (last.role, last.content) == ("user", "plain words")
        assert (await session.get_items(limit=1)) == [{"role": "user", "content": "plain words"}]
    finally:
        await session.close()


async def test_limits_pop_and_clear(tmp_path: Path) -> None:
    settings = SessionSettings(limit=3)
    session = ThreadlineSession("s", tmp_path / "t.db", session_settings=settings)
    try:
        await session.add_items(ITEMS)
        assert await session.get_items() == ITEMS[-3:]  # session_settings.limit
        assert await session.get_items(limit=1) == ITEMS[-1:]  # an explicit limit wins
        assert await session.pop_item() == ITEMS[-1]
        assert await session.pop_item() == ITEMS[-2]
        assert await session.get_items(limit=10) == ITEMS[:-2]
        mine = await session.get_items(limit=1)
        mine[0]["changed"] = True  # the caller's to keep: the thread is not changed
        assert await session.get_items(limit=1) == ITEMS[-3:-2]
        await session.clear_session()
        assert await session.get_items() == []
        assert await session.pop_item() is None
        info = await session.store.get_session("s")  # the session stays
        assert (info.message_count, info.head_id) == (0, None)
    finally:
        await session.close()


async def test_create_false_refuses_a_session_that_does_not_exist(tmp_path: Path) -> None:
    session = ThreadlineSession("nope", tmp_path / "t.db", create=False)
    try:
        with pytest.raises(SessionNotFound):
            await session.get_items()
    finally:
        await session.close()


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _agent(model: ScriptedModel) -> Agent[Any]:
    return Agent(name="guide", instructions="Help plan trips.", model=model, tools=[weather])


async def test_runner_run_keeps_the_thread_across_turns(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "t.db") as store:
        session = ThreadlineSession("trip", store=store)
        model = ScriptedModel(
            [
                [function_call("weather", {"city": "Kyoto"}, call_id="c1")],
                [assistant_message("Sunny: go to Arashiyama.")],
                [assistant_message("Then Nara.", item_id="m2")],
            ]
        )
        first = await Runner.run(_agent(model), "What should I do in Kyoto?", session=session)
        second = await Runner.run(_agent(model), "And the next day?", session=session)

        assert (first.final_output, second.final_output) == (
            "Sunny: go to Arashiyama.",
            "Then Nara.",
        )
        seen = model.last_call.input  # type: ignore[union-attr]
        text = json.dumps(seen)
        assert "What should I do in Kyoto?" in text and "sunny in Kyoto" in text
        items = await session.get_items()
        kinds = [i.get("type", i.get("role")) for i in items]
        assert kinds == [
            "user",
            "function_call",
            "function_call_output",
            "message",
            "user",
            "message",
        ]
        history = await store.get_history("trip")
        assert history.messages[-1].role == "assistant" and len(history.messages) == 6


async def test_runner_run_streamed_writes_the_turn(tmp_path: Path) -> None:
    session = ThreadlineSession("s", tmp_path / "t.db")
    try:
        model = ScriptedModel([[assistant_message("streamed answer")]])
        result = Runner.run_streamed(_agent(model), "hello", session=session)
        async for _ in result.stream_events():
            pass
        assert result.final_output == "streamed answer"
        items = await session.get_items()
        assert items[0] == {"content": "hello", "role": "user"} and len(items) == 2
    finally:
        await session.close()


def test_runner_run_sync_on_a_session_of_its_own(tmp_path: Path) -> None:
    session = ThreadlineSession("s", tmp_path / "t.db")
    model = ScriptedModel([[assistant_message("one")], [assistant_message("two", item_id="m2")]])
    try:
        assert Runner.run_sync(_agent(model), "first", session=session).final_output == "one"
        assert Runner.run_sync(_agent(model), "second", session=session).final_output == "two"
    finally:  # run_sync keeps the thread's default event loop open for the next call
        policy = asyncio.get_event_loop_policy()
        policy.get_event_loop().close()
        policy.set_event_loop(None)

    async def check() -> None:
        try:
            items = await session.get_items()
            assert [i.get("content") for i in items if i.get("role") == "user"] == [
                "first",
                "second",
            ]
        finally:
            await session.close()

    anyio.run(check)


async def test_many_sessions_write_concurrently_on_one_store(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "t.db") as store:
        sessions = [ThreadlineSession(f"s{i}", store=store) for i in range(10)]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for s in sessions:
                    for n in range(10):
                        item = {"role": "user", "content": f"{s.session_id} item {n}"}
                        tasks.start_soon(s.add_items, [item])
        for s in sessions:
            got = await s.get_items()
            assert sorted(i["content"] for i in got) == sorted(
                f"{s.session_id} item {n}" for n in range(10)
            )
            info = await store.get_session(s.session_id)
            assert (info.message_count, info.branch_count) == (10, 1)  # linear


async def test_the_kept_thread_follows_every_writer_and_is_never_shared(tmp_path: Path) -> None:
    """get_items reads only what changed since its last call: whoever wrote it (another
    session object, a tool, a compaction, a pop), the result is the store's history."""
    async with Store.open(tmp_path / "t.db") as store:
        a, b = ThreadlineSession("t", store=store), ThreadlineSession("t", store=store)

        async def as_stored() -> list[Any]:
            return [to_item(m) for m in (await store.get_history("t")).messages]

        await a.add_items(ITEMS[:3])
        assert await a.get_items() == ITEMS[:3]
        mine = await a.get_items()
        mine[0]["content"] = "changed"
        mine[2]["summary"][0]["text"] = "changed too"
        assert await a.get_items() == ITEMS[:3]  # each call's items are its own
        await b.add_items(ITEMS[3:])
        assert await a.get_items() == ITEMS
        await store.append_messages("t", [{"role": "user", "content": "from a tool"}])
        assert (await a.get_items())[-1] == {"role": "user", "content": "from a tool"}
        await store.compact_session("t", "so far", keep_first=0, keep_last=1)
        got = await a.get_items()
        assert got == await as_stored() and got[0] == {"role": "user", "content": "so far"}
        await b.pop_item()
        assert await a.get_items() == await as_stored()
        await b.clear_session()
        assert await a.get_items() == []


_OTHER_PROCESS = """
import anyio, sys
from threadline.integrations.openai_agents import ThreadlineSession, to_item
async def main():
    session = ThreadlineSession("shared", sys.argv[1])
    try:
        for n in range(50):
            await session.add_items([{"role": "user", "content": f"B {n}"}])
    finally:
        await session.close()
anyio.run(main)
"""


async def test_two_processes_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    session = ThreadlineSession("shared", path)
    try:
        await session.get_items()  # creates the session before the other process starts
        other = await anyio.to_thread.run_sync(
            lambda: subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS, str(path)])
        )
        try:
            for n in range(50):
                await session.add_items([{"role": "user", "content": f"A {n}"}])
                if n % 10 == 0:  # read along: the kept thread takes the other's items too
                    assert len(await session.get_items()) >= n + 1
        finally:
            assert await anyio.to_thread.run_sync(other.wait, 60) == 0
        items = [i["content"] for i in await session.get_items()]
        assert len(items) == 100
        for who in "AB":
            assert [i for i in items if i.startswith(who)] == [f"{who} {n}" for n in range(50)]
        info = await session.store.get_session("shared")
        assert (info.message_count, info.branch_count) == (100, 1)
    finally:
        await session.close()


async def test_threadline_extras_fork_compact_prompt_and_context(tmp_path: Path) -> None:
    session = ThreadlineSession("s", tmp_path / "t.db")
    try:
        await session.add_items([{"role": "user", "content": f"turn {n}"} for n in range(12)])
        fork = await session.fork(title="alternative")
        await fork.add_items([{"role": "user", "content": "only in the fork"}])
        assert len(await fork.get_items()) == 13 and len(await session.get_items()) == 12
        await session.compact("Turns 0-9 were small talk.", keep_last=2)
        items = await session.get_items()
        assert items[0]["role"] == "user" and "small talk" in items[-3]["content"]
        await session.update_context("scratchpad", "plan: Kyoto")
        assert "plan: Kyoto" not in await session.system_prompt()  # frozen until refreshed
        await session.store.get_context("s", refresh=True)
        assert "plan: Kyoto" in await session.system_prompt()
    finally:
        await session.close()


def test_importing_threadline_never_imports_the_sdk() -> None:
    code = (
        "import sys, threadline, threadline.server.app, threadline.cli, threadline.integrations\n"
        "assert 'agents' not in sys.modules, 'agents was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

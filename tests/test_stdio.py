"""End to end over stdio: real ``threadline serve`` subprocesses driven by the SDK's Client.

Each test spawns one or more servers as ``python -m threadline serve --data-dir DIR`` and talks
to them the way an MCP host does, on both protocol eras where it matters: "auto" negotiates
2026-07-28, "legacy" forces the 2025-11-25 initialize handshake.
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any

import anyio
import mcp.client.stdio as mcp_stdio
import pytest
from anyio.abc import Process
from mcp import Client, MCPDeprecationWarning, StdioServerParameters, stdio_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.types import CallToolResult, ResourceUpdatedNotification, TextResourceContents

from tests.helpers import integrity, ok
from tests.test_tools import TOOLS

ERAS = pytest.mark.parametrize(
    ("mode", "version"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")]
)


# Generous on purpose: a cold interpreter importing mcp takes ~1-2 s on a slow 2-core box.
START_BOUND_S = 10.0


# ----------------------------------------------------------------------------------- helpers


def serve_params(data_dir: Path, *extra: str, script: Path | None = None) -> StdioServerParameters:
    """``python -m threadline serve`` (or a launcher script taking the same arguments)."""
    head = [str(script)] if script is not None else ["-m", "threadline"]
    return StdioServerParameters(
        command=sys.executable,
        args=[*head, "serve", "--data-dir", str(data_dir), *extra],
        # Only an allow-listed environment reaches the child; an empty THREADLINE_CONFIG makes
        # sure no config file of the machine is read.
        env={"THREADLINE_CONFIG": "", "PYTHONIOENCODING": "utf-8"},
    )


class Wire:
    """What the client's message handler saw: notifications and transport-level errors."""

    def __init__(self) -> None:
        self.notifications: list[Any] = []
        self.errors: list[Exception] = []
        self._changed = anyio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.errors.append(message)
        else:
            self.notifications.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    def updated_uris(self) -> list[str]:
        return [
            n.params.uri for n in self.notifications if isinstance(n, ResourceUpdatedNotification)
        ]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()


@pytest.fixture
def parse_errors(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """Lines the client could not parse as JSON-RPC (the SDK logs and drops them)."""
    caplog.set_level(logging.ERROR, logger="mcp.client.stdio")

    def errors() -> list[str]:
        return [
            f"{r.getMessage()}: {r.exc_info[1] if r.exc_info else ''}"
            for r in caplog.records
            if r.name == "mcp.client.stdio" and "parse" in r.getMessage().lower()
        ]

    yield errors


def ok_text(result: CallToolResult) -> str:
    assert not result.is_error, result.content
    return " ".join(getattr(block, "text", "") for block in result.content)


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result
    return " ".join(getattr(block, "text", "") for block in result.content)


async def create(client: Client, **arguments: Any) -> str:
    info = ok(await client.call_tool("create_session", arguments))
    return str(info["session_id"])


async def append(client: Client, session_id: str, *contents: Any, role: str = "user") -> list[str]:
    result = ok(
        await client.call_tool(
            "append_messages",
            {
                "session_id": session_id,
                "messages": [{"role": role, "content": c} for c in contents],
            },
        )
    )
    return list(result["message_ids"])


async def history(client: Client, session_id: str) -> list[dict[str, Any]]:
    page = ok(await client.call_tool("get_history", {"session_id": session_id, "limit": 500}))
    assert page["has_more"] is False
    return list(page["messages"])


def assert_chain(messages: list[dict[str, Any]]) -> None:
    """A linear history: every message hangs under the one before it."""
    assert messages, "empty history"
    assert messages[0]["parent_id"] is None
    for previous, message in itertools.pairwise(messages):
        assert message["parent_id"] == previous["id"], (previous, message)
    assert len({m["id"] for m in messages}) == len(messages)


def assert_exited_cleanly(processes: list[Process]) -> None:
    """Each server left by itself when its stdin closed (SIGTERM/SIGKILL would be negative)."""
    assert processes
    for process in processes:
        assert process.returncode == 0, f"server {process.pid} ended with {process.returncode}"


def stdio_with_stderr(
    params: StdioServerParameters, log: IO[str]
) -> AbstractAsyncContextManager[Any]:
    """A stdio transport whose server stderr goes to ``log`` (so the test can read it)."""
    return stdio_client(params, errlog=log)


# ------------------------------------------------------------- 1. start-up and round trips


@ERAS
async def test_round_trip_on_both_eras(
    tmp_path: Path, mode: str, version: str, spawned: list[Process], parse_errors: Any
) -> None:
    parts = [
        {"type": "text", "text": "see the call"},
        {"type": "tool_use", "id": "t1", "input": {"n": [1, 2.5, None, True, "ü"]}},
        {"nested": {"deep": [[], {}, ""]}},
    ]
    contents: list[Any] = [
        "hello 👋🏽 wörld — 漢字",
        "a\x00b",
        parts,
        "",
        'line\nbreak\ttab \\ "q"',
    ]
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path), mode=mode) as client:
            assert client.protocol_version == version
            assert client.server_info is not None
            assert client.server_info.name == "threadline"
            assert client.instructions and "session_id" in client.instructions

            tools = await client.list_tools()
            assert {t.name for t in tools.tools} == TOOLS

            sid = await create(client, title="Round trip ✨")
            ids = await append(client, sid, *contents)
            messages = await history(client, sid)
            assert [m["content"] for m in messages] == contents
            assert [m["id"] for m in messages] == ids
            assert_chain(messages)

            missing = await client.call_tool("get_history", {"session_id": "nope"})
            assert "session 'nope' not found" in error_text(missing)
            missing = await client.call_tool(
                "append_messages",
                {"session_id": "nope", "messages": [{"role": "user", "content": "x"}]},
            )
            assert "session 'nope' not found" in error_text(missing)

    assert_exited_cleanly(spawned)
    assert parse_errors() == []


# ------------------------------------------------------------ 2. two processes, one store


async def test_two_servers_on_one_data_dir_keep_sessions_apart(
    tmp_path: Path, spawned: list[Process]
) -> None:
    sequential, burst = 25, 10
    with anyio.fail_after(60):
        async with (
            Client(serve_params(tmp_path)) as one,
            Client(serve_params(tmp_path), mode="legacy") as two,
        ):
            clients = {"one": one, "two": two}
            sids = {name: await create(c, title=name) for name, c in clients.items()}

            async def in_order(name: str) -> None:
                for i in range(sequential):
                    await append(clients[name], sids[name], f"{name} seq {i}")

            async with anyio.create_task_group() as tg:
                for name in clients:
                    tg.start_soon(in_order, name)

            async with anyio.create_task_group() as tg:
                for name, c in clients.items():
                    for i in range(burst):
                        tg.start_soon(append, c, sids[name], f"{name} burst {i}")

            for name in clients:
                other = "two" if name == "one" else "one"
                # Read each session through the other process too: both see the same store.
                for reader in (clients[name], clients[other]):
                    messages = await history(reader, sids[name])
                    texts = [m["content"] for m in messages]
                    assert len(messages) == sequential + burst
                    assert texts[:sequential] == [f"{name} seq {i}" for i in range(sequential)]
                    assert sorted(texts[sequential:]) == sorted(
                        f"{name} burst {i}" for i in range(burst)
                    )
                    assert all(t.startswith(f"{name} ") for t in texts)
                    assert_chain(messages)

    assert_exited_cleanly(spawned)
    assert integrity(tmp_path / "local.db") == ("ok", "ok")


# ------------------------------------------------------ 3. concurrent appends, one client


async def test_concurrent_appends_through_one_client_stay_linear(tmp_path: Path) -> None:
    n = 30
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path)) as client:
            sid = await create(client)
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(append, client, sid, f"parallel {i}")
            messages = await history(client, sid)
            assert len(messages) == n
            assert sorted(m["content"] for m in messages) == sorted(
                f"parallel {i}" for i in range(n)
            )
            assert_chain(messages)
            info = ok(await client.call_tool("get_session", {"session_id": sid}))
            assert info["message_count"] == n
            assert info["head_id"] == messages[-1]["id"]
            assert info["branch_count"] == 1


# --------------------------------------------------------------- 4. stdout hygiene, logging

NOISY_LAUNCHER = textwrap.dedent(
    '''
    """threadline serve, plus tools that print (as a careless extension would)."""
    import os
    import sys

    import threadline.server
    from threadline.cli import main

    _build = threadline.server.build_server


    def build_server(runtime, lifespan=None):
        mcp = _build(runtime, lifespan=lifespan)

        @mcp.tool()
        def noisy() -> str:
            print("BUFFERED print")
            print("flushed", flush=True)
            sys.stdout.write("written then flushed\\n")
            sys.stdout.flush()
            os.write(1, b"raw fd 1 write\\n")
            return "ok"

        @mcp.tool()
        async def noisy_async() -> str:
            print("async flushed", flush=True)
            return "ok"

        @mcp.tool()
        def buffered_only() -> str:
            print("BUFFERED only, never flushed by the tool")
            return "ok"

        return mcp


    threadline.server.build_server = build_server  # cli._serve imports it at call time
    sys.exit(main(sys.argv[1:]))
    '''
)


@pytest.fixture
def noisy_script(tmp_path: Path) -> Path:
    script = tmp_path / "noisy_serve.py"
    script.write_text(NOISY_LAUNCHER)
    return script


@ERAS
async def test_printing_tool_does_not_corrupt_the_wire(
    tmp_path: Path,
    mode: str,
    version: str,
    noisy_script: Path,
    spawned: list[Process],
    parse_errors: Any,
) -> None:
    wire = Wire()
    stderr_path = tmp_path / "stderr.log"
    data = tmp_path / "data"
    with anyio.fail_after(30), stderr_path.open("w") as stderr:
        params = serve_params(data, script=noisy_script)
        async with Client(
            stdio_with_stderr(params, stderr), mode=mode, message_handler=wire
        ) as client:
            assert client.protocol_version == version
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == TOOLS | {"noisy", "noisy_async", "buffered_only"}
            sid = await create(client, title="noise")
            for i in range(5):
                for tool in ("noisy", "noisy_async"):
                    assert ok_text(await client.call_tool(tool, {})) == "ok"
                await append(client, sid, f"after noise {i}")
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(client.call_tool, "noisy", {})
            assert [m["content"] for m in await history(client, sid)] == [
                f"after noise {i}" for i in range(5)
            ]
            assert wire.errors == []
            assert parse_errors() == []

    assert_exited_cleanly(spawned)
    assert parse_errors() == []
    logged = stderr_path.read_text()
    for line in ("BUFFERED print", "flushed", "written then flushed", "raw fd 1 write"):
        assert logged.count(line) >= 15, (line, logged[-2000:])


async def test_buffered_print_does_not_reach_the_wire_at_exit(
    tmp_path: Path, noisy_script: Path, spawned: list[Process], parse_errors: Any
) -> None:
    """A print() nobody flushes must not reach the wire when the server exits.

    While serving, the SDK points fd 1 at stderr, but it restores fd 1 (the wire) on the way
    out, and the interpreter flushes sys.stdout's buffer at exit: without care in `threadline
    serve`, the client reads "BUFFERED only, ..." as a broken JSON-RPC line (seen at 143f8c9).
    """
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path, script=noisy_script)) as client:
            assert ok_text(await client.call_tool("buffered_only", {})) == "ok"
            assert ok(await client.call_tool("list_sessions", {}))["sessions"] == []
    assert_exited_cleanly(spawned)
    assert parse_errors() == []


async def test_debug_logging_goes_to_stderr_through_a_full_session(
    tmp_path: Path, spawned: list[Process], parse_errors: Any
) -> None:
    wire = Wire()
    stderr_path = tmp_path / "stderr.log"
    data = tmp_path / "data"
    with anyio.fail_after(40), stderr_path.open("w") as stderr:
        params = serve_params(data, "-v", "-v")
        async with Client(stdio_with_stderr(params, stderr), message_handler=wire) as client:
            sid = await create(client, title="Kyoto trip", metadata={"tag": "travel"})
            first, second = await append(client, sid, "temples and trains", "shinkansen 🚄")
            branch = ok(
                await client.call_tool(
                    "append_messages",
                    {
                        "session_id": sid,
                        "parent_id": first,
                        "messages": [{"role": "assistant", "content": "ryokan"}],
                    },
                )
            )
            assert ok(
                await client.call_tool("get_history", {"session_id": sid, "include_branches": True})
            )["branches"]
            assert (
                ok(await client.call_tool("set_head", {"session_id": sid, "message_id": second}))[
                    "head_id"
                ]
                == second
            )
            renamed = ok(
                await client.call_tool("rename_session", {"session_id": sid, "title": "Kyoto"})
            )
            assert renamed["title"] == "Kyoto"
            totals = ok(
                await client.call_tool(
                    "record_usage",
                    {"session_id": sid, "input_tokens": 10, "output_tokens": 5, "cost": 0.01},
                )
            )
            assert (totals["input_tokens"], totals["output_tokens"], totals["turns"]) == (10, 5, 1)
            ok(
                await client.call_tool(
                    "update_context",
                    {"session_id": sid, "label": "memory", "content": "Prefers trains."},
                )
            )
            view = ok(await client.call_tool("get_context", {"session_id": sid, "refresh": True}))
            assert "Prefers trains." in view["system_prompt"]
            hits = ok(await client.call_tool("session_search", {"query": "shinkansen"}))
            assert [h["message_id"] for h in hits["hits"]] == [second]
            fork = ok(await client.call_tool("fork_session", {"session_id": sid, "title": "alt"}))
            assert [m["content"] for m in await history(client, fork["session_id"])] == [
                "temples and trains",
                "shinkansen 🚄",
            ]
            for i in range(6):
                await append(client, sid, f"filler {i}")
            compacted = ok(
                await client.call_tool(
                    "compact_session",
                    {
                        "session_id": sid,
                        "summary": "They planned Kyoto.",
                        "keep_first": 1,
                        "keep_last": 2,
                    },
                )
            )
            assert compacted["replaced"] > 0
            assert any(m["summary_of"] for m in await history(client, sid)), (
                "no compaction summary in history"
            )
            deleted = ok(
                await client.call_tool(
                    "delete_messages",
                    {"session_id": sid, "message_id": branch["message_ids"][0]},
                )
            )
            assert deleted["messages_deleted"] == 1
            listed = ok(await client.call_tool("list_sessions", {}))
            assert {s["session_id"] for s in listed["sessions"]} == {sid, fork["session_id"]}
            gone = ok(await client.call_tool("delete_session", {"session_id": fork["session_id"]}))
            assert gone["session_id"] == fork["session_id"]
            again = await client.call_tool("get_session", {"session_id": fork["session_id"]})
            assert "not found" in error_text(again)
            assert wire.errors == []

    assert_exited_cleanly(spawned)
    assert parse_errors() == []
    logged = stderr_path.read_text()
    assert "DEBUG" in logged
    assert f"serving {data / 'local.db'} over stdio" in logged


# -------------------------------------------------------------------------- 5. start-up


async def test_start_up_time(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    runs = 5
    starts: list[float] = []
    with anyio.fail_after(60):
        for i in range(runs):
            began = time.perf_counter()
            async with Client(serve_params(tmp_path / str(i))) as client:
                tools = await client.list_tools()
                starts.append(time.perf_counter() - began)
                assert len(tools.tools) == len(TOOLS)

        imports: list[float] = []
        for _ in range(3):
            began = time.perf_counter()
            await anyio.run_process([sys.executable, "-c", "import threadline.server"])
            imports.append(time.perf_counter() - began)

    median, import_median = statistics.median(starts), statistics.median(imports)
    record_property("stdio_start_median_s", round(median, 3))
    record_property("import_threadline_server_median_s", round(import_median, 3))
    print(
        f"\nstdio start-up to first list_tools: median {median:.3f} s "
        f"(runs: {', '.join(f'{s:.3f}' for s in starts)}); "
        f"`python -c 'import threadline.server'`: median {import_median:.3f} s"
    )
    assert median < START_BOUND_S


# ---------------------------------------------------------------- 6. resources and prompt


@ERAS
async def test_resources_and_prompt(tmp_path: Path, mode: str, version: str) -> None:
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path), mode=mode) as client:
            sid = await create(client, title="Resources 📚", session_id="res-1")
            await append(client, sid, "What is the capital of Japan?")
            await append(client, sid, "Tokyo — 東京", role="assistant")

            listed = await client.list_resources()
            assert "threadline://sessions" in {r.uri for r in listed.resources}
            templates = {
                t.uri_template for t in (await client.list_resource_templates()).resource_templates
            }
            assert "threadline://sessions/{session_id}/history" in templates

            index = (await client.read_resource("threadline://sessions")).contents[0]
            assert isinstance(index, TextResourceContents)
            sessions = json.loads(index.text)["sessions"]
            assert [(s["session_id"], s["title"], s["message_count"]) for s in sessions] == [
                (sid, "Resources 📚", 2)
            ]

            info = (await client.read_resource(f"threadline://sessions/{sid}")).contents[0]
            assert isinstance(info, TextResourceContents)
            assert json.loads(info.text)["session_id"] == sid

            md = (await client.read_resource(f"threadline://sessions/{sid}/history")).contents[0]
            assert isinstance(md, TextResourceContents)
            assert md.mime_type == "text/markdown"
            assert md.text.startswith("# Resources 📚")
            assert "What is the capital of Japan?" in md.text
            assert "Tokyo — 東京" in md.text

            raw = (await client.read_resource(f"threadline://sessions/{sid}/history.json")).contents
            assert isinstance(raw[0], TextResourceContents)
            assert [m["content"] for m in json.loads(raw[0].text)["messages"]] == [
                "What is the capital of Japan?",
                "Tokyo — 東京",
            ]

            context = (await client.read_resource(f"threadline://sessions/{sid}/context")).contents
            assert isinstance(context[0], TextResourceContents)
            assert json.loads(context[0].text)["session_id"] == sid

            prompt = await client.get_prompt("resume_session", {"session_id": sid})
            texts = [m.content.text for m in prompt.messages]  # type: ignore[union-attr]
            assert [m.role for m in prompt.messages] == ["user", "user", "assistant"]
            assert sid in texts[0]
            assert texts[1:] == ["What is the capital of Japan?", "Tokyo — 東京"]


# --------------------------------------------------------------------- 7. notifications


async def test_legacy_subscription_gets_resource_updated(tmp_path: Path) -> None:
    """resources/subscribe then a write: notifications/resources/updated for that URI only.

    The SDK makes a ServerSession per request, so subscriptions must be keyed by the
    connection, not the session object (at 143f8c9 the notification never arrived).
    """
    wire = Wire()
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path), mode="legacy", message_handler=wire) as client:
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True
            watched = await create(client, title="watched")
            other = await create(client, title="other")
            uri = f"threadline://sessions/{watched}/history"
            with pytest.warns(MCPDeprecationWarning):
                await client.subscribe_resource(uri)

            await append(client, other, "not watched")
            await append(client, watched, "watched append")
            with anyio.fail_after(5):
                await wire.wait_for(lambda: uri in wire.updated_uris())
            assert f"threadline://sessions/{other}/history" not in wire.updated_uris()

            with pytest.warns(MCPDeprecationWarning):
                await client.unsubscribe_resource(uri)
            seen = len(wire.updated_uris())
            await append(client, watched, "after unsubscribe")
            await client.call_tool("list_sessions", {})  # a round trip after the append
            assert wire.updated_uris()[seen:].count(uri) == 0
            assert wire.errors == []


async def test_modern_listen_gets_resource_updated(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path)) as client:
            assert client.protocol_version == "2026-07-28"
            sid = await create(client, title="listened")
            uri = f"threadline://sessions/{sid}/history"
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                await append(client, sid, "heard?")
                with anyio.fail_after(5):
                    async for event in subscription:
                        if isinstance(event, ResourceUpdated) and event.uri == uri:
                            break


# ----------------------------------------------------------------------- 8. shutdown


@ERAS
async def test_shutdown_is_prompt_and_data_survives(
    tmp_path: Path, mode: str, version: str, spawned: list[Process]
) -> None:
    with anyio.fail_after(30):
        async with Client(serve_params(tmp_path), mode=mode) as client:
            sid = await create(client, title="durable", session_id="durable-1")
            ids = await append(client, sid, "kept 🗝️", "a\x00b", [{"type": "text", "text": "p"}])
            began = time.perf_counter()
        closing = time.perf_counter() - began
        print(f"\nclose took {closing:.3f} s")
        assert len(spawned) == 1
        assert spawned[0].returncode == 0
        # The SDK waits 2 s for a voluntary exit before SIGTERM; a clean server is well inside.
        assert closing < mcp_stdio.PROCESS_TERMINATION_TIMEOUT

        async with Client(serve_params(tmp_path), mode=mode) as client:
            messages = await history(client, sid)
            assert [m["id"] for m in messages] == ids
            assert [m["content"] for m in messages] == [
                "kept 🗝️",
                "a\x00b",
                [{"type": "text", "text": "p"}],
            ]
            info = ok(await client.call_tool("get_session", {"session_id": sid}))
            assert (info["title"], info["message_count"]) == ("durable", 3)

    assert_exited_cleanly(spawned)
    assert integrity(tmp_path / "local.db") == ("ok", "ok")


async def test_raw_hostile_lines_get_errors_and_the_server_lives(tmp_path: Path) -> None:
    """Rows 11, 13 and 14 of the hostile table, as raw JSON-RPC lines on the real stdio pipe:
    content nested 10,000 deep, a lone surrogate escape, and invalid UTF-8 bytes; then the
    server still answers and holds exactly the one valid message."""

    def line(message: dict[str, Any]) -> bytes:
        return json.dumps(message).encode() + b"\n"

    deep = '"leaf"'
    for _ in range(10_000):
        deep = f"[{deep}]"
    call = '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"append_messages",'
    hostile = [
        (call % 3 + '"arguments":{"session_id":"s","messages":[{"role":"user","content":'
         + deep + "}]}}}\n").encode(),
        (call % 4 + '"arguments":{"session_id":"s","messages":[{"role":"user","content":'
         '"bad \\ud800"}]}}}\n').encode(),
        (call % 5).encode() + b'"arguments":{"session_id":"s","messages":[{"role":"user",'
        b'"content":"caf\xe9 \xff"}]}}}\n',
    ]  # fmt: skip
    args = ["-m", "threadline", "serve", "--data-dir", str(tmp_path)]
    # stderr to a file: the SDK logs the unparsable line, more than a pipe buffer holds.
    with anyio.fail_after(30), (tmp_path / "stderr.log").open("wb") as stderr:
        async with await anyio.open_process([sys.executable, *args], stderr=stderr) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            buffered = b""

            async def reply(request_id: int) -> dict[str, Any]:
                nonlocal buffered
                while True:
                    while b"\n" in buffered:
                        raw, buffered = buffered.split(b"\n", 1)
                        message = json.loads(raw)
                        if message.get("id") == request_id:
                            return message  # type: ignore[no-any-return]
                    buffered += await proc.stdout.receive()  # type: ignore[union-attr]

            async def reply_to(request_id: int, raw: bytes) -> dict[str, Any]:
                await proc.stdin.send(raw)  # type: ignore[union-attr]
                return await reply(request_id)

            await proc.stdin.send(line({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "raw", "version": "0"}},
            }))  # fmt: skip
            assert "result" in await reply(1)
            await proc.stdin.send(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            await proc.stdin.send(line({
                "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "create_session", "arguments": {"session_id": "s"}},
            }))  # fmt: skip
            assert not (await reply(2))["result"]["isError"]
            # Too deep to parse, or a lone surrogate escape: pydantic-core refuses the line and
            # the SDK drops it unanswered (it cannot read the id); the server lives on.
            await proc.stdin.send(hostile[0])
            await proc.stdin.send(hostile[1])
            await proc.stdin.send(line({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}))
            assert len((await reply(6))["result"]["tools"]) == len(TOOLS)
            # Invalid UTF-8 becomes U+FFFD (the SDK's documented behaviour): stored, no error.
            assert not (await reply_to(5, hostile[2]))["result"]["isError"]
            await proc.stdin.send(line({
                "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "get_history", "arguments": {"session_id": "s"}},
            }))  # fmt: skip
            history = (await reply(9))["result"]["structuredContent"]
            assert [m["content"] for m in history["messages"]] == ["caf\ufffd \ufffd"]
            await proc.stdin.aclose()
            assert await proc.wait() == 0


def test_on_a_terminal_it_says_what_it_is_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """Started by hand (stdin a terminal, here a pseudo-terminal): one line on stderr says
    what the server is and how to stop it, and Ctrl-C ends it at once."""
    import os
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "threadline", "serve", "--data-dir",
                                  str(tmp_path)])  # fmt: skip
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while b"Ctrl-C stops it" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                seen += os.read(fd, 4096)
        assert b"an MCP server on stdio, waiting for a host" in seen
        assert b"threadline config claude-desktop" in seen
        os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 130
                return
            time.sleep(0.05)
        raise AssertionError("Ctrl-C did not stop the server")
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)

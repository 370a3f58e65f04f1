"""Workload 6: tool calls end to end through MCP, against a no-op tool on the same server.

Over streamable HTTP the server is a real uvicorn on a free loopback port in this process,
built by threadline's own ``build_http_app`` (static bearer-token auth, one user) with one
extra tool, ``noop``, that returns ``"ok"``: the floor of the transport, the SDK and the
server, measured on the same server, in the same run, by the same clients. In memory, the
SDK's ``Client(server)`` calls the same kind of server (the local, single-store runtime that
stdio uses) without any transport. Over stdio, ``Client(StdioServerParameters(...))`` spawns
that server (``threadline serve`` plus ``noop``, ``python -m bench.stdio_server``) as a
subprocess and talks to it over its stdin and stdout, as a desktop host does: one client.

Each client owns one session, seeded with 50 messages. The three tools take turns in rounds
(the order rotates), every client calling concurrently: ``noop``, ``append_messages`` with
one ~500-character message, ``get_history(limit=50)``. Throughput is calls over the wall
time of the tool's rounds; latency is per call, as the client sees it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer

import threadline.server.http as threadline_http
from bench.noop import add_noop
from bench.sizes import Results, Sizes, clock, scratch
from bench.stats import Latencies, Row
from bench.stdio import ToolFailed, call, serve_params, serving
from bench.text import WordSalad
from threadline.config import Config, Http
from threadline.server import LocalRuntime, build_server
from threadline.server.auth import StaticTokenVerifier, TokenFile

SEED_MESSAGES = 50
HISTORY_LIMIT = 50
TOOLS = ("noop", "append_messages", "get_history")
NOOP_LABEL = "noop tool, same server and transport"


@contextmanager
def with_noop_tool() -> Iterator[list[MCPServer[Any]]]:
    """While the block runs, ``build_http_app`` builds its server with the ``noop`` tool.

    ``build_http_app`` has no hook for extra tools and does not expose its ``MCPServer``, so
    its ``build_server`` is wrapped for the duration: the app is otherwise exactly the one
    ``threadline serve --transport streamable-http`` runs. The servers built are listed.
    """
    built: list[MCPServer[Any]] = []
    original = threadline_http.build_server

    def building(*args: Any, **kwargs: Any) -> MCPServer[Any]:
        mcp = add_noop(original(*args, **kwargs))
        built.append(mcp)
        return mcp

    with mock.patch.object(threadline_http, "build_server", building):
        yield built


def quiet_logging() -> None:
    """Constructing an ``MCPServer`` turns the root logger to INFO when nothing configured it,
    and then httpx2 logs every request: configure it first, at WARNING."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


@contextmanager
def loopback_socket() -> Iterator[socket.socket]:
    """A socket bound to a free loopback port: bound first, so no one else can take it.

    The protocol must be named: asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only on
    sockets whose ``proto`` is ``IPPROTO_TCP``, and connections accepted on a ``proto=0``
    socket inherit 0. With Nagle on, a response's body waits for the client's delayed ACK of
    its headers: every call then took ~44 ms instead of ~2 ms.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock
    finally:
        sock.close()


@asynccontextmanager
async def uvicorn_serving(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``app`` with uvicorn on ``sock``, in this process, while the block runs."""
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        with anyio.fail_after(30):
            while not server.started:  # noqa: ASYNC110 (uvicorn sets a bool, no event)
                await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True


# -- the servers and their clients -----------------------------------------------------------

Connect = Callable[[], AbstractAsyncContextManager[Client]]


@asynccontextmanager
async def http_target(directory: Path) -> AsyncIterator[Connect]:
    """threadline over streamable HTTP with a static bearer token (one user), plus ``noop``."""
    tokens = TokenFile(directory / "tokens.json")
    _, token = tokens.add("bench")
    with loopback_socket() as sock:
        port = sock.getsockname()[1]
        options = threadline_http.HttpOptions(verifier=StaticTokenVerifier(tokens))
        config = Config(http=Http(port=port))
        with with_noop_tool() as built:
            app = threadline_http.build_http_app(options, config, directory / "data")
        assert len(built) == 1, "build_http_app no longer calls build_server: fix bench/http.py"
        url = f"http://127.0.0.1:{port}{options.path}"
        tls = ssl.create_default_context()

        @asynccontextmanager
        async def connect() -> AsyncIterator[Client]:
            http = httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx2.Timeout(60.0),
                verify=tls,  # one context: httpx2 would load the CA store per client (~45 ms)
                trust_env=False,  # loopback: no proxy from the environment
            )
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                yield client

        async with uvicorn_serving(app, sock):
            yield connect


@asynccontextmanager
async def memory_target(directory: Path) -> AsyncIterator[Connect]:
    """threadline's server with the local runtime (as stdio serves it), in memory, plus noop.

    Every in-memory ``Client`` enters the server's lifespan, so the runtime is opened here
    once for all of them instead of through the lifespan.
    """
    runtime = LocalRuntime(directory / "data", Config())
    mcp = add_noop(build_server(runtime))
    async with runtime:

        @asynccontextmanager
        async def connect() -> AsyncIterator[Client]:
            async with Client(mcp) as client:
                yield client

        yield connect


@asynccontextmanager
async def stdio_target(directory: Path) -> AsyncIterator[Connect]:
    """``threadline serve`` over stdio in a subprocess (plus noop), one per client: a host
    spawns its own server. Run as ``python -m bench.stdio_server``, which builds the same
    server ``threadline serve`` does and adds ``noop``."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[Client]:
        async with serving(serve_params(directory / "data", noop=True)) as served:
            yield served.client

    yield connect


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Figures:
    """One tool at one client count: calls, their wall time, and per-call latencies; and of
    each call, the time the client spent validating the result against the tool's output
    schema (``jsonschema``, in the SDK's ``ClientSession.validate_tool_result``)."""

    calls: int = 0
    seconds: float = 0.0
    latencies: Latencies = field(default_factory=Latencies)
    validation: Latencies = field(default_factory=Latencies)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else float("nan")


class ValidationTimer:
    """Times the client's output-schema validation of each result, per tool, when on."""

    def __init__(self) -> None:
        self.sinks: dict[str, Latencies] | None = None

    def instrument(self, client: Client) -> None:
        session = client.session
        original = session.validate_tool_result

        async def timed(name: str, result: Any) -> None:
            t0 = clock()
            try:
                await original(name, result)
            finally:
                if self.sinks is not None and name in self.sinks:
                    self.sinks[name].add(clock() - t0)

        session.validate_tool_result = timed  # type: ignore[method-assign]


async def _measure(
    clients: Sequence[Client],
    sessions: Sequence[str],
    texts: Sequence[Iterator[str]],
    sizes: Sizes,
    timer: ValidationTimer,
) -> dict[str, Figures]:
    """Each tool's throughput and latencies with ``len(clients)`` clients calling at once."""
    k = len(clients)
    each = max(1, sizes.e2e_calls // (sizes.e2e_rounds * k))
    figures = {tool: Figures() for tool in TOOLS}

    def request(tool: str, i: int) -> dict[str, Any]:
        if tool == "append_messages":
            message = {"role": "user", "content": next(texts[i])}
            return {"session_id": sessions[i], "messages": [message]}
        if tool == "get_history":
            return {"session_id": sessions[i], "limit": HISTORY_LIMIT}
        return {}

    async def worker(tool: str, i: int, latencies: Latencies) -> None:
        client = clients[i]
        for _ in range(each):
            arguments = request(tool, i)
            t0 = clock()
            out = await call(client, tool, arguments)
            latencies.add(clock() - t0)
            if tool == "get_history" and len(out["messages"]) != HISTORY_LIMIT:
                raise ToolFailed(f"get_history returned {len(out['messages'])} messages")

    for i in range(k):  # warm up: connections, caches, each tool's first call
        for tool in TOOLS:
            await call(clients[i], tool, request(tool, i))
    timer.sinks = {tool: fig.validation for tool, fig in figures.items()}
    try:
        for r in range(sizes.e2e_rounds):
            order = TOOLS[r % len(TOOLS) :] + TOOLS[: r % len(TOOLS)]
            for tool in order:
                fig = figures[tool]
                start = clock()
                async with anyio.create_task_group() as tasks:
                    for i in range(k):
                        tasks.start_soon(worker, tool, i, fig.latencies)
                fig.seconds += clock() - start
                fig.calls += each * k
    finally:
        timer.sinks = None
    return figures


async def _run_target(
    target: Callable[[Path], AbstractAsyncContextManager[Connect]],
    sizes: Sizes,
    salad: WordSalad,
    seed: int,
    levels: Sequence[int],
) -> dict[int, dict[str, Figures]]:
    """Open the largest number of clients once; each concurrency level uses the first k."""
    out: dict[int, dict[str, Figures]] = {}
    most = max(levels)
    per_client = sizes.e2e_calls * len(levels) + 16  # appends each client may make
    with scratch() as directory:
        async with target(directory) as connect, AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect()) for _ in range(most)]
            timer = ValidationTimer()
            for client in clients:
                timer.instrument(client)
            sessions: list[str] = []
            texts: list[Iterator[str]] = []
            for i, client in enumerate(clients):
                info = await call(client, "create_session", {"title": f"bench {i}"})
                sessions.append(info["session_id"])
                seeded = [
                    {"role": "user" if j % 2 == 0 else "assistant", "content": text}
                    for j, text in enumerate(salad.messages(SEED_MESSAGES, seed=seed + i))
                ]
                await call(
                    client, "append_messages", {"session_id": sessions[i], "messages": seeded}
                )
                texts.append(iter(salad.messages(per_client, seed=seed + 1000 + i)))
            for k in levels:
                out[k] = await _measure(clients[:k], sessions[:k], texts[:k], sizes, timer)
    return out


Target = Callable[[Path], AbstractAsyncContextManager[Connect]]
# key: (label, target, whether several clients share one server)
TARGETS: dict[str, tuple[str, Target, bool]] = {
    "http": ("streamable HTTP, bearer token", http_target, True),
    "memory": ("in-memory Client(server)", memory_target, True),
    # A stdio server has one client (the host that spawned it): 1 client only.
    "stdio": ("stdio subprocess", stdio_target, False),
}


async def end_to_end(sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workload 6: append_messages and get_history vs noop, over HTTP, stdio and in memory."""
    quiet_logging()
    details: dict[str, Any] = {}
    results.details["end_to_end"] = details
    for n, (key, (label, target, shared)) in enumerate(TARGETS.items()):
        levels = sizes.e2e_clients if shared else (1,)
        figures = await _run_target(target, sizes, salad, seed=6000 + 100 * n, levels=levels)
        details[key] = {
            str(k): {
                tool: {
                    "calls": f.calls,
                    "seconds": f.seconds,
                    "rate_per_s": f.rate,
                    "latency": f.latencies.summary_ms(),
                    # empty (no NaN in the JSON) if the SDK ever stops validating results
                    "client_output_validation": (
                        f.validation.summary_ms() if f.validation.samples else None
                    ),
                }
                for tool, f in per_tool.items()
            }
            for k, per_tool in figures.items()
        }
        for k, per_tool in figures.items():
            work = f"6. {label}, {k} client{'s' if k > 1 else ''}"
            noop = per_tool["noop"]
            for tool, name in (
                ("append_messages", "append_messages"),
                ("get_history", f"get_history({HISTORY_LIMIT})"),
            ):
                fig = per_tool[tool]
                results.add(
                    Row(work, f"{name} calls/s", fig.rate, "/s", "higher", NOOP_LABEL, noop.rate)
                )
                for q in (50, 99):
                    results.add(
                        Row(
                            work,
                            f"{name} p{q}",
                            fig.latencies.p(q) * 1e3,
                            "ms",
                            "lower",
                            NOOP_LABEL,
                            noop.latencies.p(q) * 1e3,
                        )
                    )
                if fig.validation.samples:
                    results.add(
                        Row(
                            work,
                            f"{name} p50 of which client validates output",
                            fig.validation.p(50) * 1e3,
                            "ms",
                            "lower",
                        )
                    )

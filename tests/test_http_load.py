"""Load over streamable HTTP: 20 users x 5 concurrent clients each on one real uvicorn server.

Every client owns one session and runs a short mixed loop (append, read the history back,
now and then search for its user's tag), half of them on the 2026-07-28 era ("auto"), half
on the 2025-11-25 handshake ("legacy"). Afterwards each user must see exactly their own five
sessions, each history exactly what its client wrote and in that order, and nothing of any
other user, whatever they search for.
"""

from __future__ import annotations

import sqlite3
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.helpers import loopback_socket, ok, uvicorn_serving
from threadline.config import Config, Http
from threadline.paths import STATIC_ISSUER, USERS_DIR, user_file
from threadline.server.auth import StaticTokenVerifier, TokenFile
from threadline.server.http import HttpOptions, build_http_app

USERS = 20
CLIENTS = 5  # per user, all at once
ITERATIONS = 6  # per client: append, read back; search every SEARCH_EVERY
SEARCH_EVERY = 3
BOUND_S = 45.0  # each run; about 15 s on a 2-core box (the short one about 10 s)
DEFAULT_CAPACITY = Http().store_capacity
# Fewer store slots than users: stores are closed and reopened all the time under load, so a
# shorter loop (SHORT iterations) is enough to stress that.
FEW_SLOTS = 8
SHORT = 3
Mode = Literal["auto", "legacy"]
ERAS: dict[Mode, str] = {"auto": "2026-07-28", "legacy": "2025-11-25"}


def user_name(u: int) -> str:
    return f"user{u:02d}"


def tag(u: int) -> str:
    """A word only user ``u``'s messages contain (no tag is a substring of another)."""
    return f"qzv{u:02d}tag"


def text(u: int, c: int, seq: int) -> str:
    return f"{tag(u)} client {c} seq {seq:03d}: " + "plain filler words to read " * 4


@dataclass
class Served:
    url: str
    data_dir: Path
    tokens: dict[int, str]
    app: Any
    capacity: int
    iterations: int  # of each client's loop
    # One TLS context for every client: httpx2 builds one per client otherwise, loading the
    # system's CA store each time (~45 ms; 120 clients). The URL is http:// anyway.
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)


@pytest.fixture(
    params=[
        pytest.param((DEFAULT_CAPACITY, ITERATIONS), id="default-slots"),
        pytest.param((FEW_SLOTS, SHORT), id="fewer-slots-than-users"),
    ]
)
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """A real uvicorn server on a free loopback port, static tokens for ``USERS`` users."""
    token_file = TokenFile(tmp_path / "tokens.json")
    tokens = {u: token_file.add(user_name(u))[1] for u in range(USERS)}
    data_dir = tmp_path / "data"
    capacity, iterations = request.param
    with loopback_socket() as sock:
        port = sock.getsockname()[1]
        options = HttpOptions(verifier=StaticTokenVerifier(token_file))
        config = Config(http=Http(port=port, store_capacity=capacity))
        app = build_http_app(options, config, data_dir)
        async with uvicorn_serving(app, sock, backlog=512):
            url = f"http://127.0.0.1:{port}/mcp"
            yield Served(url, data_dir, tokens, app, capacity, iterations)


@dataclass
class Ledger:
    """What each client wrote and saw; the test checks it against the server afterwards."""

    sessions: dict[tuple[int, int], str] = field(default_factory=dict)
    written: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    calls: int = 0


def client_for(served: Served, u: int, mode: Mode) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {served.tokens[u]}"},
        timeout=httpx2.Timeout(30.0),
        verify=served.tls,
        trust_env=False,  # loopback: no proxy from the environment, no .netrc
    )
    client = Client(streamable_http_client(served.url, http_client=http), mode=mode)
    return http, client


async def call(
    client: Client, ledger: Ledger, who: str, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """One tool call; a tool error is recorded (not raised), so every client runs to the end."""
    result: CallToolResult = await client.call_tool(tool, arguments)
    ledger.calls += 1
    if result.is_error or result.structured_content is None:
        words = " ".join(getattr(block, "text", "") for block in result.content)
        ledger.errors.append(f"{who} {tool}: {words}")
        return {}
    return ok(result)


async def run_client(served: Served, ledger: Ledger, u: int, c: int, mode: Mode) -> None:
    who = f"{user_name(u)}/c{c} ({mode})"
    http, client = client_for(served, u, mode)
    async with http, client:
        if client.protocol_version != ERAS[mode]:
            ledger.errors.append(f"{who}: negotiated {client.protocol_version}")
        info = await call(
            client, ledger, who, "create_session", {"title": f"{user_name(u)} client {c}"}
        )
        if not info:
            return
        sid = info["session_id"]
        ledger.sessions[u, c] = sid
        mine = ledger.written[u, c] = []
        for seq in range(served.iterations):
            content = text(u, c, seq)
            role = "user" if seq % 2 == 0 else "assistant"
            appended = await call(
                client,
                ledger,
                who,
                "append_messages",
                {"session_id": sid, "messages": [{"role": role, "content": content}]},
            )
            if appended:
                mine.append(content)
            page = await call(client, ledger, who, "get_history", {"session_id": sid, "limit": 5})
            seen = [m["content"] for m in page.get("messages", [])]
            if seen != mine[-5:]:
                ledger.errors.append(f"{who} get_history after seq {seq}: {seen} != {mine[-5:]}")
            if seq % SEARCH_EVERY == 1:
                found = await call(client, ledger, who, "session_search", {"query": tag(u)})
                hits = found.get("hits", [])
                if not hits:
                    ledger.errors.append(f"{who} session_search {tag(u)}: no hits")
                for hit in hits:
                    if tag(u) not in hit["snippet"]:
                        ledger.errors.append(f"{who} session_search: foreign hit {hit}")


async def verify_user(served: Served, ledger: Ledger, u: int, failures: list[str]) -> None:
    """Exactly this user's five sessions, each history exactly as written, no other user's tag."""
    who = f"{user_name(u)}/verify"
    http, client = client_for(served, u, "auto")
    async with http, client:
        listed = await call(client, ledger, who, "list_sessions", {"limit": 200})
        ids = {s["session_id"] for s in listed.get("sessions", [])}
        expected = {ledger.sessions[u, c] for c in range(CLIENTS) if (u, c) in ledger.sessions}
        if ids != expected or len(expected) != CLIENTS:
            failures.append(f"{who}: sessions {sorted(ids)} != {sorted(expected)}")
        for c in range(CLIENTS):
            sid = ledger.sessions.get((u, c))
            if sid is None:
                continue
            page = await call(client, ledger, who, "get_history", {"session_id": sid, "limit": 500})
            contents = [m["content"] for m in page.get("messages", [])]
            if contents != ledger.written[u, c] or len(contents) != served.iterations:
                failures.append(f"{who}: history of c{c} {contents} != {ledger.written[u, c]}")
            if page.get("has_more"):
                failures.append(f"{who}: history of c{c} has more than it should")
        own = await call(client, ledger, who, "session_search", {"query": tag(u), "limit": 50})
        if len(own.get("hits", [])) != min(50, CLIENTS * served.iterations):
            failures.append(f"{who}: own tag found {len(own.get('hits', []))} hits")
        for other in range(USERS):
            if other == u:
                continue
            found = await call(client, ledger, who, "session_search", {"query": tag(other)})
            if found.get("hits"):
                failures.append(f"{who}: found {user_name(other)}'s tag: {found['hits']}")


async def test_twenty_users_five_clients_each(served: Served) -> None:
    ledger = Ledger()
    with anyio.fail_after(BOUND_S):
        async with anyio.create_task_group() as tasks:
            for u in range(USERS):
                for c in range(CLIENTS):
                    mode: Mode = "auto" if (u + c) % 2 == 0 else "legacy"
                    tasks.start_soon(run_client, served, ledger, u, c, mode)
        assert ledger.errors == []
        assert len(ledger.sessions) == USERS * CLIENTS
        n = served.iterations
        per_client = 1 + 2 * n + len(range(1, n, SEARCH_EVERY))
        assert ledger.calls == USERS * CLIENTS * per_client

        failures: list[str] = []
        async with anyio.create_task_group() as tasks:
            for u in range(USERS):
                tasks.start_soon(verify_user, served, ledger, u, failures)
        assert ledger.errors == []
        assert failures == []

    # One store file per user, holding that user's messages and no one else's; and the cache
    # back within its bound once the calls are over.
    files = sorted((served.data_dir / USERS_DIR).glob("*.db"))
    assert len(files) == USERS
    for u in range(USERS):
        path = user_file(served.data_dir, (STATIC_ISSUER, user_name(u)))
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT coalesce(body, content) FROM messages").fetchall()
        finally:
            conn.close()
        assert len(rows) == CLIENTS * served.iterations, user_name(u)
        assert all(row[0].startswith(tag(u)) for row in rows), user_name(u)
    assert served.app.state.stores.open_count <= served.capacity

"""Stateless replicas on one PostgreSQL database (issue 16): 1, 2 and 3 server processes
(``threadline serve --transport streamable-http --stateless --database URL``), 20 users with 5
clients each, every client on the replicas in turn (client ``i`` on replica ``i % n``). Each
client appends to a thread of its own and reads it back (``get_history(limit=20)``), in turns,
for a fixed time. Printed per replica count: calls per second, p50 and p99 of a call, and the
check after the run: every client finds exactly the messages it was acknowledged, in order
(lost), and no session of another user (crossed)::

    python -m bench.replicas postgresql://user:password@127.0.0.1:5432/postgres

The server's role must be able to create a database and a role (the store connects as an
ordinary role of its own, as it must).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from threadline.server.auth import TokenFile

USERS = 20
CLIENTS = 5  # per user
SECONDS = 10.0


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def _replica(url: str, tokens: Path) -> AsyncIterator[str]:
    port = _port()
    args = ["-m", "threadline", "serve", "--transport", "streamable-http", "--stateless"]
    args += ["--port", str(port), "--database", url, "--tokens-file", str(tokens)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        await process.wait()


@asynccontextmanager
async def _client(url: str, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def _round(url: str, replicas: int, tokens: TokenFile, who: dict[str, str]) -> dict[str, Any]:
    latencies: list[float] = []
    sent: dict[tuple[str, int], list[str]] = {}
    calls = 0
    async with AsyncExitStack() as stack:
        urls = [
            await stack.enter_async_context(_replica(url, tokens.path)) for _ in range(replicas)
        ]

        async def client(user: str, i: int) -> None:
            nonlocal calls
            async with _client(urls[i % replicas], who[user]) as c:
                made = await c.call_tool("create_session", {"title": f"{user} {i}"})
                sid = (made.structured_content or {})["session_id"]
                mine = sent.setdefault((user, i), [sid])
                end = time.perf_counter() + SECONDS
                n = 0
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    text = f"{user}/{i}/{n}"
                    result = await c.call_tool(
                        "append_messages",
                        {"session_id": sid, "messages": [{"role": "user", "content": text}]},
                    )
                    if not result.is_error:
                        mine.append(text)
                    await c.call_tool("get_history", {"session_id": sid, "limit": 20})
                    latencies.append((time.perf_counter() - t0) / 2)
                    calls += 2
                    n += 1

        start = time.perf_counter()
        await asyncio.gather(*(client(u, i) for u in who for i in range(CLIENTS)))
        seconds = time.perf_counter() - start
        lost = crossed = 0
        for (user, i), (sid, *texts) in sent.items():  # each client checks its own thread
            async with _client(urls[(i + 1) % replicas], who[user]) as c:
                page = await c.call_tool("get_history", {"session_id": sid})
                got = [m["content"] for m in (page.structured_content or {})["messages"]]
                lost += got != texts
                other = next(u for u in who if u != user)
                foreign = await c.call_tool("list_sessions", {"title": f"{other} "})
                crossed += bool((foreign.structured_content or {}).get("sessions"))
    latencies.sort()
    return {
        "calls/s": calls / seconds,
        "p50 ms": 1000 * statistics.median(latencies),
        "p99 ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "lost": lost,
        "crossed": crossed,
    }


async def run(server: str) -> list[tuple[int, dict[str, Any]]]:
    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{name}' NOSUPERUSER NOBYPASSRLS")
    await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    base = urlsplit(server)
    url = urlunsplit(
        base._replace(netloc=f"{name}:{name}@{base.hostname}:{base.port}", path=f"/{name}")
    )
    out = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            tokens = TokenFile(Path(directory) / "tokens.json")
            who = {f"user{u}": tokens.add(f"user{u}")[1] for u in range(USERS)}
            for replicas in (1, 2, 3):
                out.append((replicas, await _round(url, replicas, tokens, who)))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a PostgreSQL server's URL (may create databases and roles)")
    figures = asyncio.run(run(parser.parse_args().url))
    print(f"{USERS} users x {CLIENTS} clients, {SECONDS:g} s a round, append + history turns")
    print("| replicas | calls/s | p50 ms | p99 ms | lost | crossed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for replicas, row in figures:
        print(
            f"| {replicas} | {row['calls/s']:,.0f} | {row['p50 ms']:.1f} | {row['p99 ms']:.1f} "
            f"| {row['lost']} | {row['crossed']} |"
        )


if __name__ == "__main__":
    main()

"""Small helpers shared by tests."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.types import CallToolResult

from threadline.server import wire

# The backend contract: a test marked with it runs on a SQLite file and on a PostgreSQL
# database (the ``store`` fixture), asserting the same of both.
BACKENDS = pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)


def integrity(path: Path) -> tuple[str, str]:
    """(``PRAGMA integrity_check``, FTS5 integrity checks of both indexes) on a fresh connection.

    The FTS check runs with rank 1, so it also compares the index with the messages: an entry
    left by a deleted message, or a message never indexed, fails it. Close the store first
    (closing indexes what waits).
    """
    conn = sqlite3.connect(path)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        for table in ("fts_trigram", "fts_words"):
            conn.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")
        return check, "ok"
    finally:
        conn.close()


def dump(path: Path) -> list[tuple[object, ...]]:
    """Every row of the user tables, for before/after comparisons."""
    conn = sqlite3.connect(path)
    try:
        rows: list[tuple[object, ...]] = []
        for table in ("sessions", "messages", "compactions", "context_blocks", "usage"):
            rows += [(table, *r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
        return rows
    finally:
        conn.close()


def lock_is_free(path: Path) -> bool:
    """True when a fresh connection takes the write lock within 2 s: no transaction is left
    open (the store's own background indexing holds it for a few milliseconds at most)."""
    conn = sqlite3.connect(path, timeout=2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@contextmanager
def loopback_socket() -> Iterator[socket.socket]:
    """A TCP socket bound to a free loopback port, for uvicorn to serve on.

    Bound before the server starts, so no other process can take the port in between; made
    with ``IPPROTO_TCP``, or asyncio leaves Nagle on for accepted connections (~40 ms a reply).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock
    finally:
        sock.close()


@asynccontextmanager
async def uvicorn_serving(app: Any, sock: socket.socket, **options: Any) -> AsyncIterator[None]:
    """Serve ``app`` with uvicorn on ``sock`` in this process while the block runs."""
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn sets a bool, no event)
                await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a successful tool call (and its text block says the same:
    compact JSON without nulls, or for a history page a transcript naming every message)."""
    assert not result.is_error, result.content
    page = result.structured_content
    assert page is not None
    text: str = result.content[0].text  # type: ignore[union-attr]
    if "messages" in page and "has_more" in page:
        assert text.startswith(f"session {page['session_id']}: ")
        assert all(f"[{m['id']}] " in text for m in page["messages"])
    else:
        assert json.loads(text) == wire.quiet(page)
    return page


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    return ok(await client.call_tool(tool, args))


async def eventually(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether ``condition`` holds within ``seconds`` (for state that no event announces)."""
    deadline = anyio.current_time() + seconds
    while not condition() and anyio.current_time() < deadline:  # noqa: ASYNC110
        await anyio.sleep(0.01)
    return condition()


# -- raw HTTP ---------------------------------------------------------------------------------

MODERN, LEGACY = "2026-07-28", "2025-11-25"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "raw-http-test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
HEX_DB = re.compile(r"^[0-9a-f]{32}\.db$")

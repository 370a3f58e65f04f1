"""The fault tests' harness (``test_faults.py``): servers to start, privileges to drop, a
store to damage, and the ledger that checks every acknowledged write afterwards."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import random
import sqlite3
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import httpx2
import pytest
from anyio.abc import Process
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.helpers import INITIALIZE, integrity, loopback_socket, uvicorn_serving
from threadline import Config, Store
from threadline.server.auth import StaticTokenVerifier, TokenFile
from threadline.server.http import HttpOptions, build_http_app

Record = Callable[[str, object], None]
Call = Callable[[str, dict[str, Any]], Awaitable[CallToolResult]]

NOBODY = 65534
SOAK_S = float(os.environ.get("THREADLINE_SOAK") or 12)

# What the tools say (connection._MESSAGES, schema refusals); the tests look for these words.
DAMAGED = "the database file is damaged"
NOT_A_DATABASE = "is not a SQLite database; it was left untouched"
NEWER = "newer than this threadline understands"
READ_ONLY = "the database is read-only here; nothing was written"
CANNOT_OPEN = "the database file cannot be opened"
FULL = (
    "storage is full (disk or file size limit); nothing was written",
    "disk I/O error (is the disk full or failing?); nothing was written",
)
# SQLite's and Python's own words, which must never reach a client.
RAW = (
    "sqlite3",
    "malformed",
    "file is not a database",
    "readonly database",
    "database or disk is full",
    "unable to open",
    "locked",
    "Traceback",
    "Errno",
    "Error:",
)

ENV = {
    "THREADLINE_CONFIG": "",
    "PYTHONIOENCODING": "utf-8",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}


# ----------------------------------------------------------------------------------- helpers


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of a directory with its SHA-256."""
    return {p.name: digest(p) for p in sorted(directory.iterdir()) if p.is_file()}


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def assert_clear(result: CallToolResult, *sentences: str) -> str:
    """A tool error that says one of ``sentences`` in threadline's words, nothing of SQLite's."""
    assert result.is_error, f"expected an error, got {result.structured_content}"
    text = text_of(result)
    prefix, _, said = text.partition(": ")
    assert prefix.startswith("Error executing tool "), text
    assert any(s in said for s in sentences), text
    for raw in RAW:
        assert raw not in said, text
    return said


def batch(tag: str, content: str = "") -> list[dict[str, str]]:
    return [
        {"id": f"{tag}-{k}", "role": "user", "content": f"{tag} {k} {content}"} for k in range(3)
    ]


def check_ledger(
    path: Path, session_id: str, acked: set[str], issued: set[str] | None = None
) -> Counter[str]:
    """Every acknowledged tag is stored, each tag whole (3 messages side by side), the session a
    single chain; returns the messages per tag."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT pk, id, parent_pk FROM messages WHERE session_id = ? ORDER BY pk",
            (session_id,),
        ).fetchall()
        (count,) = conn.execute(
            "SELECT message_count FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
    finally:
        conn.close()
    assert count == len(rows), f"{session_id}: message_count {count} != {len(rows)} rows"
    if rows:
        assert rows[0][2] is None
    for before, row in itertools.pairwise(rows):
        assert row[2] == before[0], f"{session_id}: {row[1]} does not hang under {before[1]}"
    ids = [row[1] for row in rows]
    per_tag = Counter(mid.rsplit("-", 1)[0] for mid in ids)
    partial = {tag: n for tag, n in per_tag.items() if n != 3}
    assert not partial, f"{session_id}: partial batches {partial}"
    for at in range(0, len(ids), 3):
        tag = ids[at].rsplit("-", 1)[0]
        assert ids[at : at + 3] == [f"{tag}-0", f"{tag}-1", f"{tag}-2"], ids[at : at + 3]
    lost = acked - set(per_tag)
    assert not lost, f"{session_id}: acknowledged but lost: {sorted(lost)[:5]}"
    if issued is not None:
        assert set(per_tag) <= issued, set(per_tag) - issued
    return per_tag


def consistent(path: Path) -> None:
    """integrity_check, the FTS check, and every session's count matching its rows."""
    assert integrity(path) == ("ok", "ok")
    conn = sqlite3.connect(path)
    try:
        wrong = conn.execute(
            "SELECT id FROM sessions s WHERE message_count != "
            "(SELECT count(*) FROM messages m WHERE m.session_id = s.id)"
        ).fetchall()
    finally:
        conn.close()
    assert wrong == []


def damaged(path: Path) -> bool:
    """Whether SQLite's integrity_check finds damage (or cannot even finish)."""
    conn = sqlite3.connect(path)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone() != ("ok",))
    except sqlite3.DatabaseError:
        return True
    finally:
        conn.close()


def figures(record: Record, **values: object) -> None:
    for name, value in values.items():
        record(name, value)
    print("\n" + ", ".join(f"{k}={v}" for k, v in values.items()))


# -- privileges and namespaces ----------------------------------------------------------------


@functools.cache
def _refused(*command: str) -> str | None:
    """Why ``command`` cannot run here, or None when it exits 0."""
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"


def need_userns() -> None:
    why = _refused(
        "unshare", "-Urm", "sh", "-c",
        "mount -t tmpfs -o size=64k tmpfs /tmp && mount --bind /tmp /tmp "
        "&& mount -o remount,ro,bind /tmp",
    )  # fmt: skip
    if why is not None:
        pytest.skip(f"no unprivileged user and mount namespaces here: {why}")


def as_nobody() -> list[str]:
    """The command prefix that runs a server where file modes apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    why = _refused(*prefix, sys.executable, "-c", "import threadline.server")
    if why is not None:
        pytest.skip(f"cannot run the server as an unprivileged user: {why}")
    return prefix


def give_to_nobody(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            os.chown(path, NOBODY, NOBODY)


def read_only_mount(directory: Path) -> list[str]:
    """The command prefix that runs a server with ``directory`` bind-mounted read-only."""
    need_userns()
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    return ["unshare", "-Urm", "sh", "-c", script, "sh", str(directory)]


# -- servers ------------------------------------------------------------------------------------


def stdio_params(data_dir: Path, prefix: Sequence[str] = ()) -> StdioServerParameters:
    command = [*prefix, sys.executable, "-m", "threadline", "serve", "--data-dir", str(data_dir)]
    return StdioServerParameters(command=command[0], args=command[1:], env=ENV)


@asynccontextmanager
async def stdio(params: StdioServerParameters, log: IO[str]) -> AsyncIterator[Client]:
    async with Client(stdio_client(params, errlog=log)) as client:
        yield client


def assert_exited_cleanly(processes: list[Process]) -> None:
    assert processes
    for process in processes:
        assert process.returncode == 0, f"server {process.pid} ended with {process.returncode}"


async def serve_once(
    data_dir: Path, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[bytes]:
    """``threadline serve`` over stdio, sent one initialize request and then end of input."""
    command = [*prefix, sys.executable, "-m", "threadline", "serve", "--data-dir", str(data_dir)]
    with anyio.fail_after(30):
        return await anyio.run_process(
            command, input=json.dumps(INITIALIZE).encode() + b"\n", check=False, env=ENV
        )


@asynccontextmanager
async def http_server(data_dir: Path, tokens: TokenFile, config: Config) -> AsyncIterator[str]:
    """uvicorn in this process on a free loopback port; yields the MCP URL."""
    with loopback_socket() as sock:
        port = sock.getsockname()[1]
        config = config.model_copy(update={"http": config.http.model_copy(update={"port": port})})
        app = build_http_app(HttpOptions(verifier=StaticTokenVerifier(tokens)), config, data_dir)
        async with uvicorn_serving(app, sock, timeout_graceful_shutdown=5):
            yield f"http://127.0.0.1:{port}/mcp"


def http_for(token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(30.0),
        trust_env=False,
    )


@asynccontextmanager
async def http_client(url: str, token: str, mode: str = "auto") -> AsyncIterator[Client]:
    http = http_for(token)
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client


# -- the store the damage is done to ------------------------------------------------------------

WORDS = {"A": "alphaword", "B": "bravoword", "C": "charlieword"}


def content(sid: str, i: int, j: int) -> str:
    return f"{WORDS[sid]} {i}/{j} " + "lorem ipsum dolor sit amet " * 22


def contents(sid: str) -> list[str]:
    return [content(sid, i, j) for i in range(10) for j in range(3)]


async def populate(path: Path) -> None:
    """Sessions A, B and C, 30 messages of ~600 characters each (several pages per session)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    async with Store.open(path) as store:
        for sid in "ABC":
            await store.create_session(session_id=sid, title=f"session {sid}")
            for i in range(10):
                await store.append_messages(
                    sid,
                    [{"id": f"{sid}{i}-{j}", "role": "user", "content": content(sid, i, j)}
                     for j in range(3)],
                )  # fmt: skip


def _varint(data: bytes | bytearray, at: int) -> tuple[int, int]:
    value = 0
    for k in range(9):
        byte = data[at + k]
        if k == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + k + 1
    raise AssertionError("unreachable")


def _leaf_rowids(data: bytes | bytearray, pageno: int, size: int) -> list[int]:
    """The rowids on one table b-tree leaf page (SQLite file format, section 1.6)."""
    page = data[(pageno - 1) * size : pageno * size]
    if page[0] != 0x0D:
        return []
    (cells,) = struct.unpack(">H", page[3:5])
    rowids = []
    for cell in range(cells):
        (offset,) = struct.unpack(">H", page[8 + 2 * cell : 10 + 2 * cell])
        _, offset = _varint(page, offset)  # payload size
        rowids.append(_varint(page, offset)[0])
    return rowids


def corrupt_page(path: Path) -> int:
    """Overwrite, in the middle of the closed file, a page holding only some of A's messages."""
    conn = sqlite3.connect(path)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            leaves = [
                row[0]
                for row in conn.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf' "
                    "ORDER BY pageno"
                )
            ]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find a page to damage")
        a_rows = {row[0] for row in conn.execute("SELECT pk FROM messages WHERE session_id = 'A'")}
    finally:
        conn.close()
    data = bytearray(path.read_bytes())
    for pageno in leaves[1:-1]:
        rowids = _leaf_rowids(data, pageno, size)
        if rowids and set(rowids) <= a_rows:
            break
    else:
        raise AssertionError("no page holds only session A's messages")
    garbage = bytearray(random.Random(pageno).randbytes(size))
    garbage[0] = 0x00  # not a page type: SQLite sees the damage whenever it reads the page
    data[(pageno - 1) * size : pageno * size] = garbage
    path.write_bytes(data)
    return pageno


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def not_a_database(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(path.stat().st_size))


def newer_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()


DAMAGE: dict[str, tuple[Callable[[Path], Any], str]] = {
    "truncated": (truncate, DAMAGED),
    "not-a-database": (not_a_database, NOT_A_DATABASE),
    "newer-schema": (newer_schema, NEWER),
}

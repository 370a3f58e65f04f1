"""Serving a PostgreSQL database: ``serve --database URL`` over stdio, stateless HTTP replicas
that serve any user on any replica (each user alone in the database), and the CLI's
``--database``. Real server processes and a real PostgreSQL server."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import asyncpg
import httpx2
import pytest
from anyio.abc import Process
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.helpers import call, eventually
from tests.pgserver import Database
from tests.test_transfer import build_rich
from threadline import Store
from threadline.cli import main
from threadline.paths import LOCAL_STORE, STATIC_ISSUER, user_key
from threadline.server.auth import TokenFile

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Replica:
    url: str  # its MCP endpoint
    process: Process


@asynccontextmanager
async def _replica(url: str, tokens: Path, log: Path) -> AsyncIterator[Replica]:
    """A server process serving the database over stateless Streamable HTTP; killed (SIGKILL)
    when the block ends."""
    port = _free_port()
    args = ["serve", "--transport", "streamable-http", "--stateless", "--port", str(port)]
    args += ["--database", url, "--tokens-file", str(tokens), "--data-dir", str(log.parent)]
    with log.open("ab") as err:
        process = await anyio.open_process([sys.executable, "-m", "threadline", *args], stderr=err)
    try:
        assert await eventually(lambda: _listening(port), 30), log.read_text()
        yield Replica(f"http://127.0.0.1:{port}/mcp", process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@asynccontextmanager
async def _client(url: str, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(10, read=60)
    )
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def test_replicas_serve_any_user_on_any_replica_and_keep_users_apart(
    pg_database: Database, tmp_path: Path
) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    alice, bob = tokens.add("alice")[1], tokens.add("bob")[1]
    log = tmp_path / "servers.log"
    with anyio.fail_after(120):
        async with (
            _replica(pg_database.url, tokens.path, log) as a,
            _replica(pg_database.url, tokens.path, log) as b,
        ):
            async with _client(a.url, alice) as on_a:
                made = await call(on_a, "create_session", title="alice's plans")
                sid = made["session_id"]
                await call(on_a, "append_messages", session_id=sid, messages=[
                    {"role": "user", "content": "written through replica A"}])  # fmt: skip
            async with _client(b.url, alice) as on_b:
                await call(on_b, "append_messages", session_id=sid, messages=[
                    {"role": "assistant", "content": "and through replica B"}])  # fmt: skip
                page = await call(on_b, "get_history", session_id=sid)
                assert [m["content"] for m in page["messages"]] == [
                    "written through replica A",
                    "and through replica B",
                ]
            async with _client(a.url, bob) as bob_on_a:
                listed = await call(bob_on_a, "list_sessions")
                assert listed["sessions"] == []
                denied = await bob_on_a.call_tool("get_history", {"session_id": sid})
                assert denied.is_error and "not found" in str(denied.content[0])
    # The database holds alice's rows under her key, as her file would be named.
    async with Store.open(pg_database.url, user=user_key((STATIC_ISSUER, "alice"))) as store:
        assert (await store.get_session(sid)).message_count == 2
    assert f"{pg_database.role}:{pg_database.role}@" not in log.read_text()  # no password


async def test_stdio_serves_the_local_users_sessions_in_the_database(
    pg_database: Database, tmp_path: Path
) -> None:
    args = ["-m", "threadline", "serve", "--database", pg_database.url]
    params = StdioServerParameters(
        command=sys.executable, args=[*args, "--data-dir", str(tmp_path)]
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            made = await call(client, "create_session", session_id="over-stdio")
            await call(client, "append_messages", session_id=made["session_id"], messages=[
                {"role": "user", "content": "hello"}])  # fmt: skip
    async with Store.open(pg_database.url, user="local") as store:
        assert [m.content for m in (await store.get_history("over-stdio")).messages] == ["hello"]
    assert not (tmp_path / "local.db").exists()  # nothing went to a file


async def test_the_cli_reads_and_writes_a_users_sessions_in_the_database(
    pg_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Store.open(pg_database.url, user="local") as store:
        await store.create_session(session_id="mine", title="local one")
    async with Store.open(pg_database.url, user=user_key((STATIC_ISSUER, "alice"))) as store:
        await store.create_session(session_id="hers", title="alice's")

    def sessions(*extra: str) -> list[str]:
        argv = ["sessions", "list", "--json", "--database", pg_database.url, *extra]
        assert main(argv) == 0
        return [s["session_id"] for s in json.loads(capsys.readouterr().out)]

    assert await anyio.to_thread.run_sync(sessions) == ["mine"]
    assert await anyio.to_thread.run_sync(sessions, "--user", "alice") == ["hers"]
    bad = await anyio.to_thread.run_sync(main, ["sessions", "list", "--database", "mysql://x"])
    assert bad != 0
    err = capsys.readouterr().err
    assert "--database: must be a postgresql:// URL" in err and "Traceback" not in err


async def test_prune_from_the_cli_deletes_the_users_old_sessions_in_the_database(
    pg_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Store.open(pg_database.url, user="local") as store:
        for sid in ("old", "new"):
            await store.create_session(session_id=sid)
    admin = await asyncpg.connect(pg_database.admin_url)
    try:
        await admin.execute(
            "UPDATE sessions SET updated_at = '2020-01-01T00:00:00.000000Z' WHERE id = 'old'"
        )
    finally:
        await admin.close()
    argv = ["prune", "--database", pg_database.url, "--inactive-for", "30d", "--yes"]
    assert await anyio.to_thread.run_sync(main, argv) == 0
    assert "deleted 1 session" in capsys.readouterr().out
    async with Store.open(pg_database.url, user="local") as store:
        assert [s.session_id for s in (await store.list_sessions()).sessions] == ["new"]


async def test_export_and_import_move_a_users_store_between_backends(
    pg_database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a"
    source.mkdir()
    await build_rich(source / LOCAL_STORE)

    async def cli(*argv: str | Path) -> None:
        assert await anyio.to_thread.run_sync(main, [str(a) for a in argv]) == 0

    db = ("--database", pg_database.url)
    await cli("export", "-o", tmp_path / "from-sqlite.jsonl", "--data-dir", source)
    await cli("import", tmp_path / "from-sqlite.jsonl", *db, "--user", "alice")
    said = capsys.readouterr().out
    assert "imported 5 sessions" in said and "None" not in said and "@127.0.0.1" in said
    await cli("export", "-o", tmp_path / "from-pg.jsonl", *db, "--user", "alice")
    await cli("import", tmp_path / "from-pg.jsonl", "--data-dir", tmp_path / "b")
    await cli("export", "-o", tmp_path / "back.jsonl", "--data-dir", tmp_path / "b")
    bodies = [
        (tmp_path / name).read_text(encoding="utf-8").split("\n", 1)[1]
        for name in ("from-sqlite.jsonl", "from-pg.jsonl", "back.jsonl")
    ]
    assert bodies[0] == bodies[1] == bodies[2]
    async with Store.open(pg_database.url, user="local") as store:  # alice's, not local's
        assert (await store.list_sessions()).sessions == []


async def test_doctor_checks_a_database_without_changing_it(
    pg_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    def doctor(url: str) -> tuple[int, str]:
        code = main(["doctor", "--database", url])
        return code, capsys.readouterr().out

    code, out = await anyio.to_thread.run_sync(doctor, pg_database.url)
    assert "schema 0; the next server start migrates it" in out  # and doctor did not
    async with Store.open(pg_database.url):
        pass
    code, out = await anyio.to_thread.run_sync(doctor, pg_database.url)
    assert "ok    database: " in out and "row-level security: enabled and forced" in out
    assert f"{pg_database.role}:{pg_database.role}@" not in out  # the password is not shown
    code, out = await anyio.to_thread.run_sync(doctor, pg_database.admin_url)
    assert code == 1 and "FAIL  database role: the role is a superuser" in out
    code, out = await anyio.to_thread.run_sync(doctor, "postgresql://x:secret@127.0.0.1:1/db")
    assert code == 1 and "FAIL  database: " in out and "unavailable" in out
    assert "secret" not in out


async def test_a_write_on_one_replica_is_announced_to_a_listener_on_another(
    pg_database: Database, tmp_path: Path
) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    alice, bob = tokens.add("alice")[1], tokens.add("bob")[1]
    log = tmp_path / "servers.log"
    with anyio.fail_after(60):
        async with (
            _replica(pg_database.url, tokens.path, log) as a,
            _replica(pg_database.url, tokens.path, log) as b,
            _client(a.url, alice) as alice_on_a,
            _client(b.url, alice) as alice_on_b,
            _client(a.url, bob) as bob_on_a,
            _client(b.url, bob) as bob_on_b,
        ):
            sid = (await call(alice_on_b, "create_session", title="a"))["session_id"]
            bob_sid = (await call(bob_on_b, "create_session", title="b"))["session_id"]
            mine = f"threadline://sessions/{sid}/history"
            theirs = f"threadline://sessions/{bob_sid}/history"
            note = [{"role": "user", "content": "written on B"}]
            async with (
                alice_on_a.listen(resource_subscriptions=[mine]) as alice_hears,
                bob_on_a.listen(resource_subscriptions=[mine, theirs]) as bob_hears,
            ):
                await call(alice_on_b, "append_messages", session_id=sid, messages=note)
                async for event in alice_hears:  # on A, of a write on B
                    assert getattr(event, "uri", None) == mine
                    break
                # Bob hears his own write on B, and nothing of alice's before it.
                await call(bob_on_b, "append_messages", session_id=bob_sid, messages=note)
                async for event in bob_hears:
                    assert getattr(event, "uri", None) == theirs
                    break

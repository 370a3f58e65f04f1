"""Fault injection through real servers: damaged files, a full disk, read-only storage, SIGTERM
under load, four processes on one file, and a storm of cancelled calls.

Servers are real: ``python -m threadline serve`` subprocesses driven by the SDK's stdio client,
``threadline serve --transport streamable-http`` subprocesses, or uvicorn on a loopback port in
this process. Faults are real too: bytes overwritten in a closed file, ``RLIMIT_FSIZE`` on the
server process (lifted again with ``prlimit`` while it runs), a 2 MiB tmpfs in an unprivileged
user namespace, a read-only bind mount, file modes enforced by running the server as ``nobody``
(``setpriv``; root ignores modes), SIGTERM, and calls abandoned by the client.

Every write the tests send is a batch of three messages ``<tag>-0..2`` (or a fork with the tag
as its title), so the files can be checked afterwards: every acknowledged tag is present, each
tag has exactly 0 or 3 messages, side by side, each hanging under the one before.

Soak: ``THREADLINE_SOAK=<seconds>`` runs the four-process test that long (default 12 s), e.g.
``THREADLINE_SOAK=1800 pytest tests/test_faults.py -k four_stdio_servers -s``.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import httpx2
import pytest
from anyio.abc import Process
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from tests.faults import (
    CANNOT_OPEN,
    DAMAGE,
    DAMAGED,
    ENV,
    FULL,
    READ_ONLY,
    SOAK_S,
    WORDS,
    as_nobody,
    assert_clear,
    assert_exited_cleanly,
    batch,
    check_ledger,
    consistent,
    contents,
    corrupt_page,
    damaged,
    digest,
    figures,
    give_to_nobody,
    http_client,
    http_for,
    http_server,
    need_userns,
    populate,
    read_only_mount,
    serve_once,
    snapshot,
    stdio,
    stdio_params,
    text_of,
)
from tests.helpers import INITIALIZE, lock_is_free, ok
from threadline import Config, Store, StoreError
from threadline.paths import STATIC_ISSUER, user_file
from threadline.server import LocalRuntime, build_server
from threadline.server.auth import TokenFile

Record = Callable[[str, object], None]
Call = Callable[[str, dict[str, Any]], Awaitable[CallToolResult]]

# ---------------------------------------------------------- 1. damaged and foreign files


def _setup_refusal(case: str, tmp_path: Path, public_tmp: Path) -> tuple[Path, list[str]]:
    """A data directory whose store the server must refuse, and the command prefix to use."""
    if case in DAMAGE:
        data = tmp_path / "data"
        anyio.run(populate, data / "local.db")
        DAMAGE[case][0](data / "local.db")
        return data, []
    if case == "read-only-directory":
        prefix = as_nobody()
        data = public_tmp / "data"
        anyio.run(populate, data / "local.db")
        give_to_nobody(data, data / "local.db")
        data.chmod(0o555)  # and no -wal or -shm: SQLite cannot create them
        return data, prefix
    assert case == "read-only-mount"
    data = tmp_path / "data"
    prefix = read_only_mount(data)
    anyio.run(populate, data / "local.db")
    return data, prefix


REFUSALS = {
    **{case: sentence for case, (_, sentence) in DAMAGE.items()},
    "read-only-directory": READ_ONLY,
    "read-only-mount": CANNOT_OPEN,
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_stdio_server_refuses_a_store_it_cannot_serve_and_leaves_it_untouched(
    tmp_path: Path, public_tmp: Path, case: str
) -> None:
    data, prefix = _setup_refusal(case, tmp_path, public_tmp)
    before = snapshot(data)

    done = anyio.run(serve_once, data, prefix)

    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0, stderr
    assert REFUSALS[case] in stderr, stderr
    assert b'"result"' not in done.stdout  # it never claimed to be serving
    assert snapshot(data) == before  # not re-initialised, not migrated, no -wal left behind


def test_stdio_refusal_is_one_clear_line_on_stderr(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "local.db").write_bytes(b"not a database at all\n" * 100)

    done = anyio.run(serve_once, data)

    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1
    assert stderr.splitlines() == [
        f"threadline: {data / 'local.db'} is not a SQLite database; it was left untouched"
    ], stderr


def test_the_commands_error_messages_name_exist() -> None:
    """Every `threadline ...` command an error message tells people to run exists."""
    from threadline.storage.connection import _MESSAGES

    named = {
        m.group(1) for text in _MESSAGES.values() for m in re.finditer(r"`threadline (\w+)", text)
    }
    for command in named:
        done = subprocess.run(
            [sys.executable, "-m", "threadline", command, "--help"],
            capture_output=True,
            env=ENV,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)


async def test_a_store_with_a_damaged_page_takes_no_writes(tmp_path: Path) -> None:
    path = tmp_path / "user.db"
    await populate(path)
    corrupt_page(path)
    before = digest(path)

    with pytest.raises(StoreError, match="damaged"):
        async with Store.open(path) as store:
            await store.append_messages("B", [{"role": "user", "content": "one more"}])

    assert digest(path) == before


async def test_a_store_file_the_server_may_not_read_is_refused_clearly(public_tmp: Path) -> None:
    prefix = as_nobody()
    path = public_tmp / "user.db"
    await populate(path)
    path.chmod(0o600)  # owned by root (or by us, then made unreadable below)
    if not prefix:
        path.chmod(0o000)
    script = (
        "import sys, anyio\n"
        "from threadline import Store\n"
        "async def main():\n"
        "    try:\n"
        "        await Store.open(sys.argv[1])\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "anyio.run(main)\n"
    )
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [*prefix, sys.executable, "-c", script, str(path)], env=ENV, check=False
        )
    said = done.stdout.decode()
    assert said.startswith("StoreUnusable"), said
    assert CANNOT_OPEN in said, said


async def test_stdio_server_serves_what_a_damaged_page_spares(
    tmp_path: Path, spawned: list[Process], record_property: Record
) -> None:
    data = tmp_path / "data"
    await populate(data / "local.db")
    page = corrupt_page(data / "local.db")
    before = snapshot(data)

    with anyio.fail_after(60), (tmp_path / "stderr.log").open("w") as log:
        async with stdio(stdio_params(data), log) as client:
            listed = ok(await client.call_tool("list_sessions", {}))
            assert {s["session_id"] for s in listed["sessions"]} == {"A", "B", "C"}
            for sid in "BC":  # untouched sessions read in full
                page_ = ok(await client.call_tool("get_history", {"session_id": sid}))
                assert [m["content"] for m in page_["messages"]] == contents(sid)
            hits = ok(await client.call_tool("session_search", {"query": WORDS["B"]}))["hits"]
            assert hits and {h["session_id"] for h in hits} == {"B"}
            assert ok(await client.call_tool("get_session", {"session_id": "A"}))["title"]
            # The damaged session: a clear error, again and again, and the server lives on.
            for tool, args in [
                ("get_history", {"session_id": "A"}),
                ("get_history", {"session_id": "A", "limit": 500, "include_compacted": True}),
                ("fork_session", {"session_id": "A"}),
                ("get_history", {"session_id": "A"}),
            ]:
                assert_clear(await client.call_tool(tool, args), DAMAGED)
            searched = await client.call_tool("session_search", {"query": WORDS["A"]})
            if searched.is_error:
                assert_clear(searched, DAMAGED)
            assert ok(await client.call_tool("get_history", {"session_id": "B", "limit": 3}))

    assert_exited_cleanly(spawned)
    assert snapshot(data) == before  # reads only: the file is exactly as the damage left it
    assert damaged(data / "local.db")  # left as it was: not repaired, not re-initialised
    figures(record_property, damaged_page=page)


async def test_http_damaged_users_get_clear_errors_while_other_users_keep_working(
    tmp_path: Path, record_property: Record
) -> None:
    data = tmp_path / "data"
    tokens = TokenFile(tmp_path / "tokens.json")
    damaged = ["corrupt-page", *DAMAGE]
    healthy = ["healthy-0", "healthy-1", "healthy-2"]
    secret = {name: tokens.add(name)[1] for name in damaged + healthy}
    files = {name: user_file(data, (STATIC_ISSUER, name)) for name in secret}
    for name in damaged:
        await populate(files[name])
        if name == "corrupt-page":
            corrupt_page(files[name])
        else:
            DAMAGE[name][0](files[name])
    before = {name: digest(files[name]) for name in damaged}
    acked: dict[str, set[str]] = {name: set() for name in healthy}
    errors_seen: Counter[str] = Counter()

    async def keep_working(url: str, name: str) -> None:
        async with http_client(url, secret[name]) as client:
            ok(await client.call_tool("create_session", {"session_id": "work"}))
            for n in range(15):
                tag = f"{name}-n{n}"
                ok(await client.call_tool(
                    "append_messages", {"session_id": "work", "messages": batch(tag)}
                ))  # fmt: skip
                acked[name].add(tag)
                history = ok(await client.call_tool("get_history", {"session_id": "work"}))
                assert history["messages"][-1]["id"] == f"{tag}-2"

    async def refused(url: str, name: str) -> None:
        sentence = DAMAGE[name][1]
        async with http_client(url, secret[name]) as client:
            for _ in range(3):  # refused every time, never opened "a little"
                for tool, args in [
                    ("list_sessions", {}),
                    ("get_history", {"session_id": "B"}),
                    ("append_messages", {"session_id": "B", "messages": batch("x")}),
                    ("create_session", {"title": "new"}),
                ]:
                    assert_clear(await client.call_tool(tool, args), sentence)
                    errors_seen[name] += 1

    async def partly_served(url: str) -> None:
        async with http_client(url, secret["corrupt-page"]) as client:
            for _ in range(3):
                listed = ok(await client.call_tool("list_sessions", {}))
                assert {s["session_id"] for s in listed["sessions"]} == {"A", "B", "C"}
                history = ok(await client.call_tool("get_history", {"session_id": "C"}))
                assert [m["content"] for m in history["messages"]] == contents("C")
                found = ok(await client.call_tool("session_search", {"query": WORDS["B"]}))
                assert found["hits"] and {h["session_id"] for h in found["hits"]} == {"B"}
                assert_clear(await client.call_tool("get_history", {"session_id": "A"}), DAMAGED)
                errors_seen["corrupt-page"] += 1

    with anyio.fail_after(90):
        async with http_server(data, tokens, Config()) as url:
            async with anyio.create_task_group() as tasks:
                for name in healthy:
                    tasks.start_soon(keep_working, url, name)
                for name in DAMAGE:
                    tasks.start_soon(refused, url, name)
                tasks.start_soon(partly_served, url)
            assert {name: digest(files[name]) for name in damaged} == before

    assert {name: digest(files[name]) for name in damaged} == before
    for name in damaged:  # nothing was created next to a refused file either
        assert not files[name].with_name(files[name].name + "-wal").exists()
    for name in healthy:
        assert check_ledger(files[name], "work", acked[name]) == Counter(
            {tag: 3 for tag in acked[name]}
        )
        consistent(files[name])
    figures(record_property, damaged_user_errors=sum(errors_seen.values()))


# ------------------------------------------------------------------------------ 2. full disk

LIMITED = """
import resource, runpy, sys
soft, hard = int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
sys.argv = ["threadline", *sys.argv[2:]]
runpy.run_module("threadline", run_name="__main__", alter_sys=True)
"""

# A 2 MiB tmpfs with 1.4 MB of ballast; the files are copied out when the server has exited
# (the tmpfs goes with the namespace).
TMPFS = (
    'mount -t tmpfs -o size=2m tmpfs "$1" && head -c 1400000 /dev/zero > "$1/ballast" '
    '&& "$3" -m threadline serve --data-dir "$1"; rc=$?; cp "$1"/local.db* "$2"/; exit $rc'
)
FSIZE_LIMIT = 768 * 1024
BIG = "x" * 2000  # per message: a batch is ~6 KB


@pytest.mark.parametrize("how", ["rlimit-fsize", "tmpfs"])
async def test_full_disk_refuses_writes_clearly_keeps_reads_and_recovers_without_restart(
    tmp_path: Path, spawned: list[Process], record_property: Record, how: str
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    if how == "tmpfs":
        need_userns()
        command = ["unshare", "-Urm", "sh", "-c", TMPFS, "sh", str(data), str(out), sys.executable]
        params = StdioServerParameters(command=command[0], args=command[1:], env=ENV)
    else:
        args = ["-c", LIMITED, str(FSIZE_LIMIT), "serve", "--data-dir", str(data)]
        params = StdioServerParameters(command=sys.executable, args=args, env=ENV)
    acked: set[str] = set()
    issued: set[str] = set()
    errors: list[str] = []

    async def fill(client: Client, w: int) -> None:
        """Append big batches until three in a row are refused."""
        refused = 0
        for n in range(400):
            tag = f"full-w{w}n{n}"
            issued.add(tag)
            result = await client.call_tool(
                "append_messages", {"session_id": "ledger", "messages": batch(tag, BIG)}
            )
            if result.is_error:
                errors.append(assert_clear(result, *FULL))
                refused += 1
                if refused == 3:
                    return
            else:
                acked.add(tag)
                refused = 0

    with anyio.fail_after(90), (tmp_path / "stderr.log").open("w") as log:
        async with stdio(params, log) as client:
            server = spawned[0]
            ok(await client.call_tool("create_session", {"session_id": "ledger"}))
            quiet = batch("quiet", "a quiet kestrel word")
            ok(await client.call_tool("create_session", {"session_id": "quiet", "messages": quiet}))
            async with anyio.create_task_group() as tasks:
                for w in range(6):
                    tasks.start_soon(fill, client, w)
            full_acked = len(acked)
            assert full_acked > 0 and errors, (full_acked, errors)

            # Full: every batch acknowledged is there whole, and nothing else; reads work.
            info = ok(await client.call_tool("get_session", {"session_id": "ledger"}))
            assert info["message_count"] == 3 * full_acked
            last = ok(await client.call_tool("get_history", {"session_id": "ledger", "limit": 3}))
            tail = [m["id"] for m in last["messages"]]
            tag = tail[0].rsplit("-", 1)[0]
            assert tag in acked and tail == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
            hits = ok(await client.call_tool("session_search", {"query": "kestrel"}))["hits"]
            assert {h["message_id"] for h in hits} == {m["id"] for m in quiet}
            assert len(ok(await client.call_tool("list_sessions", {}))["sessions"]) == 2
            again = await client.call_tool(
                "append_messages", {"session_id": "ledger", "messages": batch("again", BIG)}
            )
            assert_clear(again, *FULL)
            # Smaller writes may still fit in what is left; each lands or is refused clearly.
            outcomes = {}
            for tool, args in [
                ("create_session", {"title": "while full"}),
                ("update_context", {"session_id": "quiet", "label": "scratchpad", "content": BIG}),
                ("record_usage", {"session_id": "quiet", "input_tokens": 1, "output_tokens": 2}),
                ("fork_session", {"session_id": "quiet"}),
                ("rename_session", {"session_id": "quiet", "title": "renamed"}),
            ]:
                result = await client.call_tool(tool, args)
                outcomes[tool] = assert_clear(result, *FULL) if result.is_error else "ok"
            assert (
                ok(await client.call_tool("get_session", {"session_id": "ledger"}))["message_count"]
                == 3 * full_acked
            )

            # Space returns: writes work again, in the same server process.
            if how == "tmpfs":
                inside = Path(f"/proc/{server.pid}/root") / str(data).lstrip("/")
                (inside / "ballast").unlink()
            else:
                hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (hard, hard))

            async def resume(w: int) -> None:
                for n in range(3):
                    tag = f"back-w{w}n{n}"
                    issued.add(tag)
                    ok(await client.call_tool(
                        "append_messages", {"session_id": "ledger", "messages": batch(tag)}
                    ))  # fmt: skip
                    acked.add(tag)

            async with anyio.create_task_group() as tasks:
                for w in range(6):
                    tasks.start_soon(resume, w)
            ok(await client.call_tool("create_session", {"title": "after"}))
            ok(await client.call_tool(
                "update_context", {"session_id": "quiet", "label": "memory", "content": "back"}
            ))  # fmt: skip
            info = ok(await client.call_tool("get_session", {"session_id": "ledger"}))
            assert info["message_count"] == 3 * len(acked)

    assert len(spawned) == 1  # recovered in the same process
    assert_exited_cleanly(spawned)
    path = (out if how == "tmpfs" else data) / "local.db"
    assert check_ledger(path, "ledger", acked, issued) == Counter({tag: 3 for tag in acked})
    consistent(path)
    figures(
        record_property,
        full_how=how,
        full_acked_before_full=full_acked,
        full_refused=len(errors),
        full_acked_total=len(acked),
        full_small_writes=json.dumps(outcomes),
    )


# ------------------------------------------------------------------------ 3. read-only storage

CRASHED_WRITER = (
    "import os, sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('PRAGMA wal_autocheckpoint = 0')\n"
    "conn.execute(\"UPDATE sessions SET title = 'from the wal' WHERE id = 'A'\")\n"
    "os._exit(0)  # like a killed server: -wal and -shm stay\n"
)

WRITES: list[tuple[str, dict[str, Any]]] = [
    ("append_messages", {"session_id": "B", "messages": batch("ro")}),
    ("create_session", {"title": "new"}),
    ("rename_session", {"session_id": "B", "title": "renamed"}),
    ("update_context", {"session_id": "B", "label": "memory", "content": "a fact"}),
    ("record_usage", {"session_id": "B", "input_tokens": 1, "output_tokens": 1}),
    ("fork_session", {"session_id": "B"}),
    ("set_head", {"session_id": "B", "message_id": "B0-0"}),
    ("delete_messages", {"session_id": "C", "message_id": "C9-2"}),
    ("delete_session", {"session_id": "C"}),
    ("compact_session", {"session_id": "B", "summary": "s", "keep_first": 1, "keep_last": 1}),
    ("get_context", {"session_id": "B", "refresh": True}),
]


@pytest.mark.parametrize("where", ["read-only-file", "read-only-mount-after-a-crash"])
async def test_read_only_store_serves_reads_and_refuses_every_write_clearly(
    tmp_path: Path, public_tmp: Path, spawned: list[Process], where: str
) -> None:
    if where == "read-only-file":
        prefix = as_nobody()
        data = public_tmp / "data"
        await populate(data / "local.db")
        give_to_nobody(data, data / "local.db")
        (data / "local.db").chmod(0o444)
        title_a = "session A"
    else:
        data = tmp_path / "data"
        prefix = read_only_mount(data)
        await populate(data / "local.db")
        await anyio.run_process([sys.executable, "-c", CRASHED_WRITER, str(data / "local.db")])
        assert (data / "local.db-wal").exists()
        title_a = "from the wal"
    before = digest(data / "local.db")

    async def reads(client: Client) -> None:
        listed = ok(await client.call_tool("list_sessions", {}))
        assert {s["session_id"] for s in listed["sessions"]} == {"A", "B", "C"}
        history = ok(await client.call_tool("get_history", {"session_id": "B"}))
        assert [m["content"] for m in history["messages"]] == contents("B")
        hits = ok(await client.call_tool("session_search", {"query": WORDS["C"]}))["hits"]
        assert hits and {h["session_id"] for h in hits} == {"C"}
        assert ok(await client.call_tool("get_session", {"session_id": "A"}))["title"] == title_a
        assert ok(await client.call_tool("get_context", {"session_id": "B"}))["blocks"]

    with anyio.fail_after(60), (tmp_path / "stderr.log").open("w") as log:
        async with stdio(stdio_params(data, prefix), log) as client:
            await reads(client)
            for tool, args in WRITES:
                assert_clear(await client.call_tool(tool, args), READ_ONLY)
            await reads(client)  # nothing crashed, nothing changed

    assert_exited_cleanly(spawned)
    assert digest(data / "local.db") == before


# ------------------------------------------------------------------------------- 4. shutdown


async def test_sigterm_stops_a_busy_stdio_server_promptly_and_loses_nothing(
    tmp_path: Path, spawned: list[Process], record_property: Record
) -> None:
    data = tmp_path / "data"
    acked: set[str] = set()
    issued: set[str] = set()
    errors: list[str] = []
    signalled = anyio.Event()

    async def writer(client: Client, w: int) -> None:
        for n in itertools.count():
            tag = f"w{w}n{n}"
            issued.add(tag)
            try:
                result = await client.call_tool(
                    "append_messages", {"session_id": "ledger", "messages": batch(tag)}
                )
            except Exception:
                if signalled.is_set():
                    return  # the server is gone; this call was never acknowledged
                raise
            if result.is_error:
                errors.append(text_of(result))
            else:
                acked.add(tag)

    with anyio.fail_after(60), (tmp_path / "stderr.log").open("w") as log:
        try:
            async with stdio(stdio_params(data), log) as client:
                ok(await client.call_tool("create_session", {"session_id": "ledger"}))
                server = spawned[0]
                async with anyio.create_task_group() as tasks:
                    for w in range(8):
                        tasks.start_soon(writer, client, w)
                    while len(acked) < 200:  # noqa: ASYNC110 (the ledger is the event)
                        await anyio.sleep(0.01)
                    began = time.monotonic()
                    signalled.set()
                    server.send_signal(signal.SIGTERM)
                    code = await server.wait()
                    exit_s = time.monotonic() - began
        except Exception:  # the client notices the server is gone as it likes
            if not signalled.is_set():
                raise

    assert errors == []
    assert exit_s < 5, f"SIGTERM took {exit_s:.2f} s"
    path = data / "local.db"
    wal_left = path.with_name("local.db-wal").exists()
    conn = sqlite3.connect(path)  # before threadline touches the file again
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    per_tag = check_ledger(path, "ledger", acked, issued)
    async with Store.open(path) as store:  # reopens, recovers the WAL, indexes what waits
        assert (await store.get_session("ledger")).message_count == 3 * len(per_tag)
        last = (await store.get_history("ledger", limit=1)).messages[0].id
        ok_after = await store.append_messages("ledger", batch("after"))
        assert ok_after.message_ids == ["after-0", "after-1", "after-2"]
    assert last.endswith("-2")
    consistent(path)
    figures(
        record_property,
        sigterm_stdio_exit_code=code,
        sigterm_stdio_exit_s=round(exit_s, 3),
        sigterm_stdio_acked=len(acked),
        sigterm_stdio_landed_unacked=len(per_tag) - len(acked),
        sigterm_stdio_wal_left=wal_left,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigterm_stops_a_busy_http_server_promptly_and_closes_every_store(
    tmp_path: Path, record_property: Record
) -> None:
    data = tmp_path / "data"
    tokens = TokenFile(tmp_path / "tokens.json")
    users = ["u0", "u1", "u2"]
    secret = {u: tokens.add(u)[1] for u in users}
    port = _free_port()
    command = [
        sys.executable, "-m", "threadline", "serve", "--transport", "streamable-http",
        "--port", str(port), "--tokens-file", str(tokens.path), "--data-dir", str(data),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    acked: dict[tuple[str, str], set[str]] = {}
    issued: dict[tuple[str, str], set[str]] = {}
    signalled = anyio.Event()

    async def client_loop(user: str, mode: str) -> None:
        key = (user, mode)
        acked[key], issued[key] = set(), set()
        try:
            async with http_client(url, secret[user], mode) as client:
                ok(await client.call_tool("create_session", {"session_id": mode}))

                async def writer(w: int) -> None:
                    for n in itertools.count():
                        tag = f"{user}{mode}w{w}n{n}"
                        issued[key].add(tag)
                        result = await client.call_tool(
                            "append_messages", {"session_id": mode, "messages": batch(tag)}
                        )
                        ok(result)
                        acked[key].add(tag)

                async with anyio.create_task_group() as tasks:
                    for w in range(2):
                        tasks.start_soon(writer, w)
        except Exception:
            if not signalled.is_set():
                raise

    with anyio.fail_after(60), (tmp_path / "stderr.log").open("wb") as log:
        async with await anyio.open_process(command, stderr=log, env=ENV) as server:
            async with httpx2.AsyncClient(trust_env=False) as probe:
                for _ in range(400):
                    try:
                        if (await probe.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        await anyio.sleep(0.025)
            async with anyio.create_task_group() as tasks:
                for user in users:
                    for mode in ("auto", "legacy"):
                        tasks.start_soon(client_loop, user, mode)
                while sum(map(len, acked.values())) < 200:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                began = time.monotonic()
                signalled.set()
                server.send_signal(signal.SIGTERM)
                code = await server.wait()
                exit_s = time.monotonic() - began

    assert exit_s < 5, f"SIGTERM took {exit_s:.2f} s"
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert code in (0, -signal.SIGTERM), (tmp_path / "stderr.log").read_text()
    landed = 0
    for user in users:
        path = user_file(data, (STATIC_ISSUER, user))
        assert not path.with_name(path.name + "-wal").exists(), f"{user}'s store was not closed"
        for mode in ("auto", "legacy"):
            landed += len(check_ledger(path, mode, acked[user, mode], issued[user, mode]))
        consistent(path)
        async with Store.open(path) as store:  # and threadline opens it again
            sizes = [(await store.get_session(mode)).message_count for mode in ("auto", "legacy")]
        assert sum(sizes) >= 3 * (len(acked[user, "auto"]) + len(acked[user, "legacy"]))
    figures(
        record_property,
        sigterm_http_exit_code=code,
        sigterm_http_exit_s=round(exit_s, 3),
        sigterm_http_acked=sum(map(len, acked.values())),
        sigterm_http_landed=landed,
    )


# ----------------------------------------------------------------------- 5. several processes


async def test_four_stdio_servers_on_one_file_lose_nothing_and_keep_the_wal_bounded(
    tmp_path: Path, spawned: list[Process], record_property: Record
) -> None:
    data = tmp_path / "data"
    path = data / "local.db"
    data.mkdir()
    async with Store.open(path) as store:
        await store.create_session(session_id="shared")
    acked: dict[str, set[str]] = {}
    issued: dict[str, set[str]] = {}
    errors: list[str] = []
    wal_sizes: list[int] = []
    db_sizes: list[int] = []
    calls = Counter[str]()
    stop = anyio.Event()
    filler = " lorem ipsum dolor sit amet" * 15

    async def server(p: int, log: IO[str]) -> None:
        async with stdio(stdio_params(data), log) as client:
            own = f"own{p}"
            ok(await client.call_tool("create_session", {"session_id": own}))

            async def writer(w: int, sid: str) -> None:
                for n in itertools.count():
                    if stop.is_set():
                        return
                    tag = f"p{p}w{w}n{n}"
                    issued.setdefault(sid, set()).add(tag)
                    result = await client.call_tool(
                        "append_messages", {"session_id": sid, "messages": batch(tag, filler)}
                    )
                    calls["append"] += 1
                    if result.is_error:
                        errors.append(text_of(result))
                    else:
                        acked.setdefault(sid, set()).add(tag)

            async def reader() -> None:
                while not stop.is_set():
                    for tool, args in [
                        ("get_history", {"session_id": own, "limit": 20}),
                        ("get_history", {"session_id": "shared", "limit": 5}),
                        ("session_search", {"query": f"p{p}w0", "limit": 5}),
                        ("list_sessions", {}),
                    ]:
                        result = await client.call_tool(tool, args)
                        calls["read"] += 1
                        if result.is_error:
                            errors.append(text_of(result))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(writer, 0, own)
                tasks.start_soon(writer, 1, own)
                tasks.start_soon(writer, 2, "shared")
                tasks.start_soon(reader)

    async def monitor() -> None:
        wal = path.with_name("local.db-wal")
        while not stop.is_set():
            if wal.exists():
                wal_sizes.append(wal.stat().st_size)
            db_sizes.append(path.stat().st_size)
            await anyio.sleep(0.05)

    logs = [(tmp_path / f"stderr{p}.log").open("w") for p in range(4)]
    try:
        with anyio.fail_after(SOAK_S + 60):
            async with anyio.create_task_group() as tasks:
                for p in range(4):
                    tasks.start_soon(server, p, logs[p])
                tasks.start_soon(monitor)
                await anyio.sleep(SOAK_S)
                stop.set()
    finally:
        for log in logs:
            log.close()

    assert errors == [], errors[:5]
    for p in range(4):
        logged = (tmp_path / f"stderr{p}.log").read_text().lower()
        assert "locked" not in logged and "busy" not in logged, logged[-2000:]
    assert len(spawned) == 4
    assert_exited_cleanly(spawned)
    wal_max = max(wal_sizes, default=0)
    assert wal_max < 64 * 1024 * 1024
    # Checkpoints ran while the servers wrote: the main file grew under them.
    assert max(db_sizes) > db_sizes[0], (db_sizes[0], max(db_sizes))
    assert not path.with_name("local.db-wal").exists()  # every connection closed at the end
    total = 0
    for sid in issued:
        total += len(check_ledger(path, sid, acked.get(sid, set()), issued[sid]))
    assert total == sum(map(len, acked.values()))  # every write was acknowledged
    conn = sqlite3.connect(path)
    try:
        shared = [r[0] for r in conn.execute(
            "SELECT id FROM messages WHERE session_id = 'shared' ORDER BY pk"
        )]  # fmt: skip
    finally:
        conn.close()
    switches = sum(a[:2] != b[:2] for a, b in itertools.pairwise(shared))
    assert switches > 4, "the four servers did not write to one session at the same time"
    consistent(path)
    figures(
        record_property,
        four_processes_s=SOAK_S,
        four_processes_acked_batches=total,
        four_processes_calls=sum(calls.values()),
        four_processes_wal_max_bytes=wal_max,
        four_processes_db_bytes=path.stat().st_size,
    )


# --------------------------------------------------------------------- 6. cancellation storm


@dataclass
class Storm:
    """Calls abandoned at random moments, and what became of each."""

    name: str
    rng: random.Random
    max_delay: float
    width: int = 16
    appends: set[str] = field(default_factory=set)
    forks: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    cancelled: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    _n: itertools.count[int] = field(default_factory=itertools.count)

    async def one(self, call: Call) -> bool:
        """One call, abandoned after a random delay; True if it was abandoned."""
        tag = f"{self.name}-{next(self._n)}"
        if self.rng.random() < 0.15:
            self.forks.add(tag)
            tool, args = "fork_session", {"session_id": "source", "title": tag}
        else:
            self.appends.add(tag)
            tool, args = "append_messages", {"session_id": "storm", "messages": batch(tag)}
        start, cut = self.rng.uniform(0, self.max_delay), self.rng.uniform(0, self.max_delay)
        await anyio.sleep(start)  # calls of a round start, and are cut, at scattered moments
        with anyio.move_on_after(cut) as scope:
            result = await call(tool, args)
        if scope.cancelled_caught:
            self.cancelled += 1
            return True
        self.completed += 1
        if result.is_error:
            self.errors.append(text_of(result))
        else:
            self.acked.add(tag)
        return False

    async def run(self, call: Call, target: int) -> None:
        while self.cancelled < target:
            abandoned = 0

            async def one() -> None:
                nonlocal abandoned
                cut = await self.one(call)
                abandoned += cut

            async with anyio.create_task_group() as tasks:
                for _ in range(self.width):
                    tasks.start_soon(one)
            # Keep roughly half of the calls abandoned, however fast this machine is: shorter
            # delays when most calls finish first, longer ones when most are cut short.
            share = abandoned / self.width
            if share < 0.3:
                self.max_delay = max(self.max_delay / 1.5, 0.00001)
            elif share > 0.7:
                self.max_delay = min(self.max_delay * 1.5, 1.0)


async def seed(call: Call) -> list[str]:
    """The storm's sessions: ``storm`` for appends, ``source`` (5 messages) for forks, and
    ``steady`` for writes that are never cancelled."""
    source = [f"source message {i}" for i in range(5)]
    messages = [{"role": "user", "content": c} for c in source]
    ok(await call("create_session", {"session_id": "source", "messages": messages}))
    ok(await call("create_session", {"session_id": "storm"}))
    ok(await call("create_session", {"session_id": "steady"}))
    return source


async def steady(call: Call, stop: anyio.Event, acked: set[str], prefix: str) -> None:
    """Writes that nobody cancels, running through the storm: every one must succeed."""
    for n in itertools.count():
        if stop.is_set():
            return
        tag = f"{prefix}-{n}"
        ok(await call("append_messages", {"session_id": "steady", "messages": batch(tag)}))
        acked.add(tag)


async def settle_and_time(call: Call, path: Path, prefix: str, acked: set[str]) -> list[float]:
    """One more write (a cancelled caller returns at once, while the writer finishes what it took;
    it serves in order, so once this one is done all are), then the lock must be free and the
    next calls fast."""
    settle = f"{prefix}-settle"
    ok(await call("append_messages", {"session_id": "storm", "messages": batch(settle)}))
    acked.add(settle)
    assert lock_is_free(path), f"{prefix}: the write lock is held after the storm"
    times = []
    for n in range(40):
        began = time.perf_counter()
        tag = f"{prefix}-next{n}"
        ok(await call("append_messages", {"session_id": "storm", "messages": batch(tag)}))
        times.append(time.perf_counter() - began)
        acked.add(tag)
    assert lock_is_free(path)
    return times


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[98]


def check_storm(path: Path, source: list[str], storms: list[Storm], extra: set[str]) -> int:
    """All or nothing per call; returns how many abandoned calls landed anyway."""
    appends = set().union(*(s.appends for s in storms))
    forks = set().union(*(s.forks for s in storms))
    acked = set().union(*(s.acked for s in storms))
    per_tag = check_ledger(path, "storm", (acked - forks) | extra, appends | extra)
    conn = sqlite3.connect(path)
    try:
        forked = conn.execute(
            "SELECT id, title FROM sessions WHERE parent_session_id = 'source'"
        ).fetchall()
        titles = Counter(title for _, title in forked)
        assert all(n == 1 for n in titles.values()), titles
        assert set(titles) <= forks
        assert acked & forks <= set(titles), "an acknowledged fork is missing"
        for sid, title in forked:
            copied = [r[0] for r in conn.execute(
                "SELECT content FROM messages WHERE session_id = ? ORDER BY pk", (sid,)
            )]  # fmt: skip
            assert copied == source, f"fork {title} is partial: {copied}"
    finally:
        conn.close()
    for storm in storms:
        assert storm.errors == [], storm.errors[:5]
    landed = (set(per_tag) - extra) | set(titles)
    issued = appends | forks
    # The cancellations really cut work short: some abandoned calls never landed.
    assert len(acked) <= len(landed) < len(issued)
    return len(landed) - len(acked)


# A write lock left held by a cancelled call makes the next write wait out the busy timeout
# (10 s); the calls after a storm must stay far below that. (Not a speed bound: a shared
# machine's pauses reach 0.1 s now and then.)
LOCK_LEFT_OVER = Config().busy_timeout / 10


async def test_cancellation_storm_in_memory(tmp_path: Path, record_property: Record) -> None:
    # No idle-time search indexing, so that a held write lock can only be a left-over.
    runtime = LocalRuntime(tmp_path, Config(index_delay=60))
    storm = Storm("mem", random.Random(20260601), max_delay=0.005)
    steady_acked: set[str] = set()
    extra: set[str] = set()
    with anyio.fail_after(120):
        async with Client(build_server(runtime, lifespan=runtime)) as client:
            source = await seed(client.call_tool)
            stop = anyio.Event()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(steady, client.call_tool, stop, steady_acked, "steady")
                await storm.run(client.call_tool, 400)
                stop.set()
            times = await settle_and_time(client.call_tool, runtime.path, "mem", extra)

    assert p99(times) < LOCK_LEFT_OVER, times
    landed_anyway = check_storm(runtime.path, source, [storm], extra)
    check_ledger(runtime.path, "steady", steady_acked, steady_acked)
    consistent(runtime.path)
    figures(
        record_property,
        storm_memory_cancelled=storm.cancelled,
        storm_memory_completed=storm.completed,
        storm_memory_cancelled_but_landed=landed_anyway,
        storm_memory_steady_writes=len(steady_acked),
        storm_memory_next_call_p99_ms=round(p99(times) * 1000, 1),
    )


class RawLegacy:
    """A 2025-11-25 streamable-HTTP session spoken by hand: abandoning a call closes its
    connection, and no notifications/cancelled is ever sent."""

    def __init__(self, http: httpx2.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        self._ids = itertools.count(2)

    async def open(self) -> None:
        response = await self.http.post(self.url, json=INITIALIZE, headers=self.headers)
        assert response.status_code == 200, response.text
        self.headers["mcp-session-id"] = response.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = "2025-11-25"
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        response = await self.http.post(self.url, json=initialized, headers=self.headers)
        assert response.status_code == 202, response.text

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        request_id = next(self._ids)
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        response = await self.http.post(self.url, json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        if response.headers.get("content-type", "").startswith("application/json"):
            messages = [response.json()]
        else:  # an SSE stream: data lines
            messages = [
                json.loads(line[5:])
                for line in response.text.splitlines()
                if line.startswith("data:") and line[5:].strip()
            ]
        for message in messages:
            if message.get("id") == request_id:
                return CallToolResult.model_validate(message["result"])
        raise AssertionError(f"no answer to request {request_id}: {response.text[:500]}")


async def test_cancellation_storm_over_http(tmp_path: Path, record_property: Record) -> None:
    data = tmp_path / "data"
    tokens = TokenFile(tmp_path / "tokens.json")
    names = ["modern", "legacy", "disconnect"]
    secret = {name: tokens.add(name)[1] for name in names}
    rng = random.Random(20260602)
    storms = {name: Storm(name, random.Random(rng.random()), max_delay=0.03) for name in names}
    steady_acked: dict[str, set[str]] = {name: set() for name in names}
    extra: dict[str, set[str]] = {name: set() for name in names}
    sources: dict[str, list[str]] = {}
    times: dict[str, list[float]] = {}
    files = {name: user_file(data, (STATIC_ISSUER, name)) for name in names}

    async def sdk(url: str, name: str, mode: str) -> None:
        """Cancelled by the SDK: notifications/cancelled (2025-11-25), or the request's own POST
        aborted, which is the 2026-07-28 spelling of a cancel over HTTP."""
        async with http_client(url, secret[name], mode) as client:
            await drive(name, client.call_tool, client.call_tool)

    async def disconnect(url: str) -> None:
        """Cancelled by dropping the connection mid-request; the steady writer has its own."""
        async with http_for(secret["disconnect"]) as http, http_for(secret["disconnect"]) as other:
            raw, calm = RawLegacy(http, url), RawLegacy(other, url)
            await raw.open()
            await calm.open()
            await drive("disconnect", raw.call_tool, calm.call_tool)

    all_done, timing = anyio.Event(), anyio.Lock()

    async def drive(name: str, call: Call, calm: Call) -> None:
        sources[name] = await seed(calm)
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(steady, calm, stop, steady_acked[name], f"{name}-steady")
            await storms[name].run(call, 200)
            stop.set()
        if all(name in times or storms[name].cancelled >= 200 for name in names):
            all_done.set()
        await all_done.wait()  # time the next calls once no storm runs, one user at a time
        async with timing:
            times[name] = await settle_and_time(calm, files[name], name, extra[name])

    with anyio.fail_after(150):
        async with (
            http_server(data, tokens, Config(index_delay=60)) as url,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(sdk, url, "modern", "auto")
            tasks.start_soon(sdk, url, "legacy", "legacy")
            tasks.start_soon(disconnect, url)

    values: dict[str, object] = {}
    for name in names:
        assert p99(times[name]) < LOCK_LEFT_OVER, (name, times[name])
        landed_anyway = check_storm(files[name], sources[name], [storms[name]], extra[name])
        check_ledger(files[name], "steady", steady_acked[name], steady_acked[name])
        consistent(files[name])
        values |= {
            f"storm_http_{name}_cancelled": storms[name].cancelled,
            f"storm_http_{name}_completed": storms[name].completed,
            f"storm_http_{name}_cancelled_but_landed": landed_anyway,
            f"storm_http_{name}_steady_writes": len(steady_acked[name]),
            f"storm_http_{name}_next_call_p99_ms": round(p99(times[name]) * 1000, 1),
        }
    figures(record_property, **values)


# ------------------------------------------------- read-only data directory (issue 13, item 13)


def test_a_stdio_server_on_a_read_only_data_directory_says_so_in_one_line(
    public_tmp: Path,
) -> None:
    prefix = as_nobody() or read_only_mount(public_tmp)
    data = public_tmp / "data"
    data.mkdir()
    data.chmod(0o755)  # root's: nobody cannot create the store in it
    command = [*prefix, sys.executable, "-m", "threadline", "serve", "--data-dir", str(data)]
    done = subprocess.run(command, input=b"", capture_output=True, timeout=60, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("threadline: ") and "the data directory is read-only" in err, err
    assert list(data.iterdir()) == []

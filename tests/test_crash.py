"""Crash consistency: real servers SIGKILLed under load; every acknowledged write survives.

The kill -9 ledger of the reliability plan (section 5.1), against real ``threadline serve``
processes. A write is *acknowledged* when its MCP tool response reached the client; the ledger
records every acknowledged write, and after each kill the store must hold all of them.

Two scenarios, each a series of cycles on one data directory whose state accumulates:

* **stdio**: two ``threadline serve`` processes on one data directory (the duplicate servers a
  desktop host starts), each driven over its pipes by a tiny JSON-RPC line client (initialize
  with protocol 2025-11-25, notifications/initialized, tools/call), so killing needs no client
  shutdown machinery.
* **HTTP**: one ``threadline serve --transport streamable-http --stateless`` process with three
  users signed in by static tokens, driven by raw JSON-RPC POSTs with each user's bearer token.

Each cycle starts the servers, creates the cycle's sessions and resets the "memory" block,
then keeps many calls in flight per server (per user over HTTP): three writers appending
batches of 3 messages with unique ids, one forking a session, one compacting a session with a
summary, one appending a unique fact to "memory". 50-400 ms into the load every server process
gets SIGKILL (one cycle in ten: 0-300 ms after start, while the server starts up). Replies
already on the wire when it died count as acknowledged too. Then each store file is checked:
``PRAGMA integrity_check`` on the file as the kill left it; reopened with ``threadline.Store``
(sessions and histories read back) and closed; ``PRAGMA integrity_check`` and the FTS5
integrity check (``tests.helpers.integrity``); every acknowledged batch present exactly once,
whole and in order, no partial batch anywhere, every session a single chain whose
``message_count`` matches its rows; every acknowledged fork present with exactly the copied
prefix of its source; every acknowledged compaction present with its summary (and visible in
the history unless a newer compaction hides it); every acknowledged fact in the block, no line
torn or doubled. The sessions, batches, forks and compactions of earlier cycles are checked
again after every later kill (facts only until the next cycle resets the block).

Most server processes start "warm": ``python -c WARM serve ...`` imports threadline, waits for
a go line on stdin (read byte by byte, so nothing of the protocol is buffered away), then runs
``threadline.cli.main(["serve", ...])``, which is what the ``threadline`` command runs; the
next cycle's servers import (about a second of CPU each) while this cycle runs. One cycle in
ten starts its servers cold with ``python -m threadline serve``.

The default run makes 30 stdio cycles (2 kills each) and 40 HTTP cycles (1 kill each): 100
kills in about two minutes on a 2-core machine, each test asserting its share. A soak runs N
cycles of each scenario instead:

    THREADLINE_SOAK=2000 pytest tests/test_crash.py -s

(``-s`` shows the summary line of each scenario: cycles, kills, acknowledged writes checked).
In a soak, each scenario moves to a fresh data directory every ``SOAK_DIR_CYCLES`` cycles, so
that a cycle's checks (which re-read the whole store) stay about as fast as in the default run.

A kill while a new store file is being created leaves no store at all (it is built under a
temporary name and published whole), so the restarted server creates it again:
``test_kill_while_creating_a_store_leaves_a_file_that_opens``. The main harness still lets its
first cycle create the stores before it starts killing.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import httpx2
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.helpers import integrity
from threadline import Store
from threadline.paths import STATIC_ISSUER, user_file
from threadline.server.auth import TokenFile

SOAK = int(os.environ.get("THREADLINE_SOAK") or 0)
STDIO_CYCLES = SOAK or 30  # two kills each
HTTP_CYCLES = SOAK or 40  # one kill each
SOAK_DIR_CYCLES = 200
EARLY_EVERY = 10  # cycle % 10 == 9: the kill lands 0-300 ms after start (start-up, handshake)
COLD_EVERY = 10  # cycle % 10 == 5: servers start as `python -m threadline serve`
KILL_AFTER_S = (0.05, 0.4)  # after the load started
EARLY_KILL_AFTER_S = (0.0, 0.3)  # after the go line
CYCLE_BOUND_S = 60.0
PROTOCOL = "2025-11-25"
POOL = 3  # sessions written per cycle
ROTATE = 4  # cycles before the writers move to a new set of sessions
WRITERS = 3  # append workers per server (per user over HTTP)
FORK_PAUSE_S, COMPACT_PAUSE_S, FACT_PAUSE_S = 0.06, 0.03, 0.01
USERS = ("alice", "bob", "carol")
# Tool errors a correct server gives this workload (a compaction with too short a tail, a
# full block); any other tool error fails the test.
EXPECTED_ERRORS = ("has nothing to compact", "would hold")
LINE = re.compile(r"epoch c\d+|fact \w+ n\d+")
FILLER = "plain words for the search index, ünïcödé and all"

# Imports what `threadline serve` needs, waits for one line on stdin, then serves.
WARM = r"""
import os, sys
import mcp.server.stdio, uvicorn
import threadline.cli, threadline.server, threadline.server.auth, threadline.server.http
line = b""
while not line.endswith(b"\n"):
    byte = os.read(0, 1)
    if not byte:
        raise SystemExit(0)
    line += byte
raise SystemExit(threadline.cli.main(sys.argv[1:]))
"""
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")},
    "THREADLINE_CONFIG": "",
    "PYTHONIOENCODING": "utf-8",
}


class Dead(Exception):
    """The server went away before replying: the call is not acknowledged."""


class ToolFailed(Exception):
    """The server replied with a tool error (or a JSON-RPC error)."""


Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def tool_result(reply: dict[str, Any]) -> dict[str, Any]:
    if "error" in reply:
        raise ToolFailed(f"JSON-RPC error: {reply['error']}")
    result: dict[str, Any] = reply["result"]
    if result.get("isError"):
        raise ToolFailed(" ".join(block.get("text", "") for block in result["content"]))
    structured: dict[str, Any] = result["structuredContent"]
    return structured


# -- server processes -------------------------------------------------------------------------


@dataclass
class Child:
    proc: Process
    warm: bool
    port: int = 0
    killed: bool = False

    async def go(self) -> None:
        if self.warm:
            assert self.proc.stdin is not None
            await self.proc.stdin.send(b"go\n")

    def kill(self) -> None:
        self.killed = True
        with contextlib.suppress(ProcessLookupError):  # gone already: assert_killed says how
            self.proc.kill()  # SIGKILL


class Children:
    """Every server process of a scenario; whatever still runs at the end is ended by pid."""

    def __init__(self, log: IO[bytes]) -> None:
        self.log = log
        self.all: list[Child] = []

    async def spawn(self, args: list[str], *, warm: bool, port: int = 0) -> Child:
        head = ["-c", WARM] if warm else ["-m", "threadline"]
        proc = await anyio.open_process([sys.executable, *head, *args], stderr=self.log, env=ENV)
        child = Child(proc, warm, port)
        self.all.append(child)
        return child

    async def aclose(self) -> None:
        for child in self.all:
            if child.proc.returncode is None:
                child.proc.kill()
            await child.proc.aclose()


@contextlib.asynccontextmanager
async def children(log_path: Path) -> AsyncIterator[Children]:
    with log_path.open("ab") as log:
        running = Children(log)
        try:
            yield running
        finally:
            with anyio.CancelScope(shield=True):
                await running.aclose()


def log_tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- clients ----------------------------------------------------------------------------------


class StdioClient:
    """JSON-RPC over a server's pipes: one line per message, replies matched by id."""

    def __init__(self, child: Child) -> None:
        assert child.proc.stdin is not None and child.proc.stdout is not None
        self.child = child
        self.stdin = child.proc.stdin
        self.out = BufferedByteReceiveStream(child.proc.stdout)
        self.pending: dict[int, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self.ids = itertools.count(1)
        self.dead = False
        self.lock = anyio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        try:
            async with self.lock:
                await self.stdin.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise Dead from exc

    async def read_replies(self) -> None:
        """Until the pipe ends: replies written before the kill are acknowledged too."""
        try:
            while True:
                message = json.loads(await self.out.receive_until(b"\n", 1 << 24))
                if "method" in message:  # a request or notification from the server
                    if "id" in message:
                        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
                        if message["method"] == "ping":
                            reply["result"] = {}
                        else:
                            reply["error"] = {"code": -32601, "message": "not supported"}
                        with contextlib.suppress(Dead):
                            await self.send(reply)
                    continue
                waiter = self.pending.pop(message.get("id"), None)
                if waiter is not None:
                    waiter[1].append(message)
                    waiter[0].set()
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            self.dead = True
            for event, _ in self.pending.values():
                event.set()
            self.pending.clear()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.dead:
            raise Dead
        rid = next(self.ids)
        event, box = anyio.Event(), []
        self.pending[rid] = (event, box)
        try:
            await self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        except Dead:
            self.pending.pop(rid, None)
            raise
        await event.wait()
        if not box:
            raise Dead
        return box[0]

    async def initialize(self) -> None:
        reply = await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "crash-ledger", "version": "0"},
            },
        )
        assert "result" in reply, reply
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return tool_result(await self.request("tools/call", {"name": tool, "arguments": arguments}))


class HttpClient:
    """Raw JSON-RPC POSTs to a stateless streamable-HTTP server, as one user."""

    def __init__(self, http: httpx2.AsyncClient, url: str, token: str, child: Child) -> None:
        self.http = http
        self.url = url
        self.child = child
        self.headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "MCP-Protocol-Version": PROTOCOL,
        }
        self.ids = itertools.count(1)
        self.unexpected: list[str] = []

    def _lost(self, what: str) -> Dead:
        """No reply: fine once the server was killed; before that, a failure to report."""
        if not self.child.killed:
            self.unexpected.append(what)
        return Dead(what)

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.child.killed:
            raise Dead
        rid = next(self.ids)
        body = {
            "jsonrpc": "2.0",
            "id": rid,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }
        try:
            response = await self.http.post(
                self.url, content=json.dumps(body).encode(), headers=self.headers
            )
        except httpx2.TransportError as exc:
            raise self._lost(f"{tool}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise self._lost(f"{tool}: HTTP {response.status_code} {response.text[:200]}")
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("id") == rid:
                    return tool_result(message)
        if response.headers.get("content-type", "").startswith("application/json"):
            return tool_result(response.json())
        raise self._lost(f"{tool}: no reply in {response.text[:200]!r}")


# -- the ledger ---------------------------------------------------------------------------------


@dataclass
class Fork:
    source: str
    from_id: str | None
    count: int


@dataclass
class Ledger:
    """Acknowledged writes to one store file."""

    path: Path
    pool: list[str] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)  # created by the setup
    batches: dict[str, str] = field(default_factory=dict)  # tag -> session
    forks: dict[str, Fork] = field(default_factory=dict)  # new session -> what it copied
    compactions: dict[int, tuple[str, str]] = field(
        default_factory=dict
    )  # pk -> (session, summary)
    epoch: str | None = None  # this cycle's memory reset, once acknowledged
    facts: list[str] = field(default_factory=list)  # acknowledged since the reset
    unexpected: list[str] = field(default_factory=list)
    acked: Counter[str] = field(default_factory=Counter)  # every acknowledgement, by kind

    async def attempt(self, call: Call, tool: str, arguments: dict[str, Any]) -> Any:
        """The call's result; None after an expected tool error. Dead propagates."""
        try:
            return await call(tool, arguments)
        except ToolFailed as exc:
            if not any(expected in str(exc) for expected in EXPECTED_ERRORS):
                self.unexpected.append(f"{tool}: {exc}")
            return None


async def setup(call: Call, ledger: Ledger, cycle: int) -> None:
    """The cycle's sessions (created once per ROTATE cycles) and a reset of "memory"."""
    ledger.pool = [f"p{cycle // ROTATE}x{k}" for k in range(POOL)]
    for sid in ledger.pool:
        try:
            await call("create_session", {"session_id": sid, "title": f"pool {sid}"})
        except ToolFailed as exc:
            assert "already exists" in str(exc), exc
        else:
            ledger.sessions.add(sid)
            ledger.acked["sessions"] += 1
    epoch = f"epoch c{cycle}"
    await call(
        "update_context",
        {"session_id": ledger.pool[0], "label": "memory", "content": epoch, "mode": "replace"},
    )
    ledger.epoch = epoch
    ledger.acked["memory resets"] += 1


async def writer(call: Call, ledger: Ledger, prefix: str, rng: random.Random) -> None:
    for n in itertools.count():
        tag = f"{prefix}n{n}"
        sid = rng.choice(ledger.pool)
        batch = [
            {"id": f"{tag}-{k}", "role": ("user", "assistant")[k % 2], "content": f"{tag} {FILLER}"}
            for k in range(3)
        ]
        if await ledger.attempt(call, "append_messages", {"session_id": sid, "messages": batch}):
            ledger.batches[tag] = sid
            ledger.acked["batches"] += 1


async def forker(call: Call, ledger: Ledger, prefix: str, rng: random.Random) -> None:
    for n in itertools.count():
        source = rng.choice(ledger.pool)
        info = await ledger.attempt(
            call, "fork_session", {"session_id": source, "title": f"{prefix} fork {n}"}
        )
        if info:
            ledger.forks[info["session_id"]] = Fork(
                source, info["forked_from_message_id"], info["message_count"]
            )
            ledger.acked["forks"] += 1
        await anyio.sleep(FORK_PAUSE_S)


async def compactor(call: Call, ledger: Ledger, prefix: str, rng: random.Random) -> None:
    for n in itertools.count():
        sid = rng.choice(ledger.pool)
        summary = f"summary {prefix} n{n}: what was said, in brief"
        arguments = {"session_id": sid, "summary": summary, "keep_first": 1, "keep_last": 2}
        result = await ledger.attempt(call, "compact_session", arguments)
        if result:
            pk = int(result["summary_id"].removeprefix("compaction:"))
            ledger.compactions[pk] = (sid, summary)
            ledger.acked["compactions"] += 1
        await anyio.sleep(COMPACT_PAUSE_S)


async def rememberer(call: Call, ledger: Ledger, prefix: str, rng: random.Random) -> None:
    for n in itertools.count():
        fact = f"fact {prefix} n{n}"
        arguments = {
            "session_id": rng.choice(ledger.pool),
            "label": "memory",
            "content": fact,
            "mode": "append",
        }
        if await ledger.attempt(call, "update_context", arguments):
            ledger.facts.append(fact)
            ledger.acked["facts"] += 1
        await anyio.sleep(FACT_PAUSE_S)


async def until_dead(work: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(Dead):
        await work()


async def together(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run the jobs concurrently; Dead (once) if any of them met a dead server."""
    done: list[bool] = []

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        await job()
        done.append(True)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(until_dead, functools.partial(run, job))
    if len(done) < len(jobs):
        raise Dead


def start_load(tg: TaskGroup, call: Call, ledger: Ledger, prefix: str, rng: random.Random) -> None:
    """The concurrent workers of one server (or user): they run until the server dies."""
    jobs = [(writer, f"{prefix}w{w}") for w in range(WRITERS)]
    jobs += [(forker, f"{prefix}f"), (compactor, f"{prefix}c"), (rememberer, prefix)]
    for job, name in jobs:
        own = random.Random(rng.random())

        async def work(job: Any = job, name: str = name, own: random.Random = own) -> None:
            await job(call, ledger, name, own)

        tg.start_soon(until_dead, work)


# -- the checks ---------------------------------------------------------------------------------


def rows_of(path: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def verify(ledger: Ledger, where: str) -> int:
    """Check the store against the ledger after a kill; the number of entries checked."""
    path = ledger.path
    assert not ledger.unexpected, f"{where}: unexpected errors: {ledger.unexpected[:5]}"
    if not path.exists():
        assert not ledger.sessions, f"{where}: {path} is gone"
        return 0

    # SQLite on the file exactly as the kill left it (it recovers the WAL by itself).
    assert rows_of(path, "PRAGMA integrity_check") == [("ok",)], where

    # What the next server does: open (recover, index what waits), read, close.
    shown: dict[str, tuple[int, int, list[str]]] = {}
    async with Store.open(path) as store:
        for sid in ledger.pool:
            if sid in ledger.sessions:
                info = await store.get_session(sid)
                history = await store.get_history(sid)
                shown[sid] = (
                    info.message_count,
                    info.compactions,
                    [m.id for m in history.messages],
                )
    assert integrity(path) == ("ok", "ok"), where

    rows = rows_of(path, "SELECT pk, session_id, id, parent_pk, depth FROM messages")
    by_key = {(sid, mid): (pk, parent) for pk, sid, mid, parent, _ in rows}
    by_pk = {pk: (mid, parent) for pk, _, mid, parent, _ in rows}
    per_session: defaultdict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for pk, sid, mid, _, depth in rows:
        per_session[sid].append((depth, mid, pk))

    # No batch landed in part, in any session (forks copy whole batches: heads end batches).
    per_tag = Counter((sid, mid.rsplit("-", 1)[0]) for _, sid, mid, _, _ in rows)
    partial = sorted(key for key, n in per_tag.items() if n != 3)
    assert not partial, f"{where}: partial batches: {partial[:5]}"

    # Every session is one chain from its head that holds all its rows, as counted.
    sessions = {
        sid: (count, head, parent, lineage, from_id)
        for sid, count, head, parent, lineage, from_id in rows_of(
            path,
            "SELECT id, message_count, head_pk, parent_session_id, lineage, "
            "forked_from_message_id FROM sessions",
        )
    }
    for sid, (count, head, *_) in sessions.items():
        chain = 0
        pk = head
        while pk is not None:
            chain += 1
            pk = by_pk[pk][1]
        assert chain == count == len(per_session.get(sid, ())), (where, sid, chain, count)

    # Acknowledged sessions and batches: present, each batch exactly once, whole, in order.
    lost_sessions = sorted(ledger.sessions - sessions.keys())
    assert not lost_sessions, f"{where}: acknowledged sessions lost: {lost_sessions}"
    lost = []
    for tag, sid in ledger.batches.items():
        keys = [(sid, f"{tag}-{k}") for k in range(3)]
        if not all(key in by_key for key in keys):
            lost.append((tag, sid, sum(key in by_key for key in keys)))
            continue
        pks = [by_key[key][0] for key in keys]
        assert by_key[keys[1]][1] == pks[0] and by_key[keys[2]][1] == pks[1], (where, tag)
    assert not lost, f"{where}: acknowledged batches lost ({len(lost)}): {lost[:5]}"

    # Acknowledged forks: the new session holds exactly the source's path up to the fork point.
    for new, fork in ledger.forks.items():
        assert new in sessions, f"{where}: acknowledged fork {new} of {fork.source} lost"
        assert sessions[new][2:] == (fork.source, "fork", fork.from_id), (where, new)
        copied = [mid for _, mid, _ in sorted(per_session.get(new, []))]
        assert len(copied) == fork.count, (where, new, len(copied), fork.count)
        path_ids: list[str] = []
        pk = by_key[(fork.source, fork.from_id)][0] if fork.from_id is not None else None
        while pk is not None:
            path_ids.append(by_pk[pk][0])
            pk = by_pk[pk][1]
        assert copied == path_ids[::-1], f"{where}: fork {new} is not its source's prefix"

    # Acknowledged compactions: present with their summary; counted; the newest one visible.
    compactions = {
        pk: (sid, summary)
        for pk, sid, summary in rows_of(path, "SELECT pk, session_id, summary FROM compactions")
    }
    missing = {pk: c for pk, c in ledger.compactions.items() if compactions.get(pk) != c}
    assert not missing, f"{where}: acknowledged compactions lost: {list(missing.items())[:5]}"
    for sid, (count, n_compactions, history_ids) in shown.items():
        assert count == sessions[sid][0], (where, sid)
        assert n_compactions == sum(s == sid for s, _ in compactions.values()), (where, sid)
        acked = [pk for pk, (s, _) in ledger.compactions.items() if s == sid]
        newest = max((pk for pk, (s, _) in compactions.items() if s == sid), default=None)
        if acked and newest == max(acked):
            assert f"compaction:{newest}" in history_ids, (where, sid, newest)

    # The memory block: this cycle's reset first, every acknowledged fact, no torn line.
    ((content,),) = rows_of(
        path, "SELECT content FROM context_blocks WHERE label = 'memory' AND session_id = ''"
    ) or [("",)]
    lines = content.split("\n") if content else []
    torn = [line for line in lines if not LINE.fullmatch(line)]
    assert not torn, f"{where}: torn lines in memory: {torn[:5]}"
    assert len(lines) == len(set(lines)), f"{where}: a fact landed twice"
    if ledger.epoch is not None:
        assert lines[:1] == [ledger.epoch], (where, lines[:1])
    forgotten = [fact for fact in ledger.facts if fact not in set(lines)]
    assert not forgotten, f"{where}: acknowledged facts lost: {forgotten[:5]}"

    checked = (
        len(ledger.sessions)
        + len(ledger.batches)
        + len(ledger.forks)
        + len(ledger.compactions)
        + len(ledger.facts)
        + (ledger.epoch is not None)
    )
    ledger.epoch, ledger.facts = None, []  # the next reset replaces the block
    return checked


# -- the scenarios ------------------------------------------------------------------------------


@dataclass
class Stats:
    name: str
    started: float = field(default_factory=time.monotonic)
    cycles: int = 0
    kills: int = 0
    early: int = 0
    cold: int = 0
    checks: int = 0  # ledger entries verified, summed over every check (re-checks included)
    acked: Counter[str] = field(default_factory=Counter)

    def report(self, record_property: Callable[[str, object], None]) -> None:
        total = sum(self.acked.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.acked.items()))
        seconds = time.monotonic() - self.started
        print(
            f"\n[crash ledger] {self.name}: {self.cycles} cycles, {self.kills} kills "
            f"({self.early} in start-up, {self.cold} cold starts), {total} acknowledged writes "
            f"({kinds}), {self.checks} ledger checks, 0 lost, 0 partial, {seconds:.0f} s"
        )
        for key, value in (
            ("cycles", self.cycles),
            ("kills", self.kills),
            ("acknowledged_writes", total),
            ("ledger_checks", self.checks),
            ("seconds", round(seconds, 1)),
        ):
            record_property(f"{self.name}_{key}", value)
        for kind, n in self.acked.items():
            record_property(f"{self.name}_acknowledged_{kind.replace(' ', '_')}", n)


def data_dir(tmp_path: Path, cycle: int) -> Path:
    path = tmp_path / f"data{cycle // SOAK_DIR_CYCLES}"
    path.mkdir(exist_ok=True)
    return path


def is_early(cycle: int) -> bool:
    return cycle % EARLY_EVERY == EARLY_EVERY - 1


def is_cold(cycle: int) -> bool:
    return cycle % COLD_EVERY == COLD_EVERY // 2


async def kill_at_random(
    servers: list[Child], loaded: anyio.Event, rng: random.Random, early: bool
) -> None:
    if early:
        await anyio.sleep(rng.uniform(*EARLY_KILL_AFTER_S))
    else:
        await loaded.wait()
        await anyio.sleep(rng.uniform(*KILL_AFTER_S))
    for server in servers:
        server.kill()
    for server in servers:
        await server.proc.wait()


def assert_killed(servers: list[Child], log: Path, where: str) -> None:
    codes = [server.proc.returncode for server in servers]
    assert codes == [-signal.SIGKILL] * len(servers), f"{where}: {codes}\n{log_tail(log)}"


async def stdio_cycle(
    servers: list[Child], ledger: Ledger, cycle: int, rng: random.Random, early: bool
) -> None:
    clients = [StdioClient(server) for server in servers]
    loaded = anyio.Event()

    async def load() -> None:
        try:
            await together([client.initialize for client in clients])
            await setup(clients[0].call, ledger, cycle)
        except Dead:
            return
        finally:
            loaded.set()
        async with anyio.create_task_group() as tg:
            for i, client in enumerate(clients):
                start_load(tg, client.call, ledger, f"c{cycle}s{i}", rng)

    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.read_replies)
        tg.start_soon(until_dead, load)
        await kill_at_random(servers, loaded, rng, early)
    # Once the pipes ended, every worker saw Dead and the task group ended by itself.


async def test_two_stdio_servers_on_one_directory_survive_kill_9(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    stats = Stats("stdio")
    rng = random.Random(0x5EED)
    log = tmp_path / "servers.stderr"
    ledgers: dict[Path, Ledger] = {}

    def command(cycle: int) -> list[str]:
        return ["serve", "--data-dir", str(data_dir(tmp_path, cycle))]

    async with children(log) as spawned:
        warm = [await spawned.spawn(command(0), warm=True) for _ in range(2)]
        for cycle in range(STDIO_CYCLES):
            where = f"stdio cycle {cycle}"
            with anyio.fail_after(CYCLE_BOUND_S):
                if is_cold(cycle):
                    servers = [await spawned.spawn(command(cycle), warm=False) for _ in range(2)]
                    stats.cold += 2
                else:
                    servers = warm
                    for server in servers:
                        await server.go()
                nxt = cycle + 1
                if nxt < STDIO_CYCLES and not is_cold(nxt):
                    warm = [await spawned.spawn(command(nxt), warm=True) for _ in range(2)]
                path = data_dir(tmp_path, cycle) / "local.db"
                ledger = ledgers.setdefault(path, Ledger(path))
                before = sum(ledger.acked.values())
                await stdio_cycle(servers, ledger, cycle, rng, early=is_early(cycle))
                assert_killed(servers, log, where)
                stats.kills += len(servers)
                stats.early += len(servers) * is_early(cycle)
                stats.checks += await verify(ledger, where)
                if not is_early(cycle):
                    assert sum(ledger.acked.values()) > before, f"{where}: nothing acknowledged"
            stats.cycles += 1
    for ledger in ledgers.values():
        stats.acked.update(ledger.acked)
    stats.report(record_property)
    assert stats.kills == 2 * STDIO_CYCLES
    assert SOAK or stats.kills >= 60  # with the HTTP test's 40: at least 100
    assert stats.acked["batches"] >= STDIO_CYCLES  # a load, not a formality (~50 a cycle here)
    assert stats.acked["forks"] and stats.acked["compactions"] and stats.acked["facts"]


async def http_cycle(
    server: Child,
    tokens: dict[str, str],
    ledgers: dict[str, Ledger],
    cycle: int,
    rng: random.Random,
    early: bool,
) -> list[str]:
    """One cycle against one HTTP server; the failures the clients saw before the kill."""
    base = f"http://127.0.0.1:{server.port}"
    loaded = anyio.Event()
    timeout = httpx2.Timeout(CYCLE_BOUND_S)
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx2.AsyncClient(timeout=timeout, limits=limits) as http:
        clients = {user: HttpClient(http, base + "/mcp", tokens[user], server) for user in USERS}

        async def healthy() -> None:
            while not server.killed:
                with contextlib.suppress(httpx2.TransportError):
                    if (await http.get(base + "/healthz")).status_code == 200:
                        return
                if server.proc.returncode is not None:
                    raise Dead  # exited by itself: assert_killed reports it
                await anyio.sleep(0.02)
            raise Dead

        async def load() -> None:
            try:
                await healthy()
                await together(
                    [
                        functools.partial(setup, c.call, ledgers[u], cycle)
                        for u, c in clients.items()
                    ]
                )
            except Dead:
                return
            finally:
                loaded.set()
            async with anyio.create_task_group() as tg:
                for user, client in clients.items():
                    start_load(tg, client.call, ledgers[user], f"c{cycle}{user}", rng)

        async with anyio.create_task_group() as tg:
            tg.start_soon(until_dead, load)
            await kill_at_random([server], loaded, rng, early)
    return [what for client in clients.values() for what in client.unexpected]


async def test_http_server_with_several_users_survives_kill_9(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    stats = Stats("http")
    rng = random.Random(0xC0FFEE)
    log = tmp_path / "server.stderr"
    tokens_file = TokenFile(tmp_path / "tokens.json")
    tokens = {user: tokens_file.add(user)[1] for user in USERS}
    ledgers: dict[tuple[Path, str], Ledger] = {}

    async def spawn(cycle: int, *, warm: bool) -> Child:
        port = free_port()
        args = [
            "serve",
            "--transport",
            "streamable-http",
            "--stateless",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--tokens-file",
            str(tokens_file.path),
            "--data-dir",
            str(data_dir(tmp_path, cycle)),
        ]
        return await spawned.spawn(args, warm=warm, port=port)

    async with children(log) as spawned:
        warm = await spawn(0, warm=True)
        for cycle in range(HTTP_CYCLES):
            where = f"http cycle {cycle}"
            with anyio.fail_after(CYCLE_BOUND_S):
                if is_cold(cycle):
                    server = await spawn(cycle, warm=False)
                    stats.cold += 1
                else:
                    server = warm
                    await server.go()
                nxt = cycle + 1
                if nxt < HTTP_CYCLES and not is_cold(nxt):
                    warm = await spawn(nxt, warm=True)
                directory = data_dir(tmp_path, cycle)
                users = {}
                for user in USERS:
                    path = user_file(directory, (STATIC_ISSUER, user))
                    users[user] = ledgers.setdefault((directory, user), Ledger(path))
                before = sum(sum(ledger.acked.values()) for ledger in users.values())
                failures = await http_cycle(server, tokens, users, cycle, rng, is_early(cycle))
                assert not failures, f"{where}: {failures[:5]}\n{log_tail(log)}"
                assert_killed([server], log, where)
                stats.kills += 1
                stats.early += is_early(cycle)
                for user, ledger in users.items():
                    stats.checks += await verify(ledger, f"{where}, {user}")
                if not is_early(cycle):
                    after = sum(sum(ledger.acked.values()) for ledger in users.values())
                    assert after > before, f"{where}: nothing acknowledged"
            stats.cycles += 1
    for ledger in ledgers.values():
        stats.acked.update(ledger.acked)
    stats.report(record_property)
    assert stats.kills == HTTP_CYCLES
    assert SOAK or stats.kills >= 40  # with the stdio test's 60: at least 100
    assert stats.acked["batches"] >= HTTP_CYCLES  # ~10 a cycle here
    assert stats.acked["forks"] and stats.acked["compactions"] and stats.acked["facts"]


# -- a kill while a new store file is being created ----------------------------------------------

STALL_WHILE_CREATING = r"""
import sys, time, anyio
from threadline import Store
from threadline.storage import schema

def stall(*args, **kwargs):  # where the kill lands: a new file exists, nothing is written yet
    print("created", flush=True)
    time.sleep(60)

schema._enable_wal = stall

async def main(path):
    async with Store.open(path):
        pass

anyio.run(main, sys.argv[1])
"""


async def test_kill_while_creating_a_store_leaves_a_file_that_opens(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    with anyio.fail_after(30):
        async with await anyio.open_process(
            [sys.executable, "-c", STALL_WHILE_CREATING, str(path)], stderr=subprocess.DEVNULL
        ) as proc:
            assert proc.stdout is not None
            out = BufferedByteReceiveStream(proc.stdout)
            assert await out.receive_until(b"\n", 100) == b"created"
            proc.kill()
            assert await proc.wait() == -signal.SIGKILL
    # A new store is built under a temporary name and published whole: nothing was published.
    assert not path.exists()
    assert [p.name.startswith(".local.db.") for p in tmp_path.iterdir()] == [True]
    async with Store.open(path) as store:  # the restarted server
        await store.create_session(session_id="after")
    assert integrity(path) == ("ok", "ok")

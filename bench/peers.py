"""Peer libraries on the concurrent-appends workload: the OpenAI Agents SDK's SQLite sessions.

``openai-agents`` is in the ``bench`` extra, not a dependency: when it is missing, the peers
are skipped (their rows say how to install it) and the rest of the suite runs.

Each session of the workload is its own ``SQLiteSession(session_id, db_path)`` on one shared
file, as an application keeping many conversations in one database would hold them; every
message is one ``add_items([item])`` call, all sessions at once, the items alternating as a
``Runner`` run writes them (``turn_item``): the user's input ``{"role": "user", "content":
text}``, the reply as the SDK's output message item. The sessions are constructed (schema
created) before the clock starts, as threadline's sessions are created before its clock
starts; closing them is timed, as threadline's close is. The SDK is used as shipped: its
connections use WAL and SQLite's default ``synchronous`` (FULL), each operation runs in a
worker thread through ``asyncio.to_thread``, and all sessions on one file share one
process-wide lock.
"""

from __future__ import annotations

import importlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench.stats import Latencies, Run

INSTALL_HINT = "skipped (pip install -e '.[bench]')"


@dataclass(frozen=True)
class Peer:
    """One peer: how to name it, where it lives, and how to open a session of it."""

    key: str
    label: str
    module: str
    attribute: str
    open: Callable[[type[Any], str, Path], Any]


def _plain(cls: type[Any], sid: str, path: Path) -> Any:
    return cls(sid, path)


def _advanced(cls: type[Any], sid: str, path: Path) -> Any:
    # Keyword-only; create_tables=True creates (and claims) its structure tables in the file.
    return cls(session_id=sid, db_path=path, create_tables=True)


PEERS: tuple[Peer, ...] = (
    Peer(
        "sdk_sqlite_session",
        "openai-agents SQLiteSession",
        "agents.memory.sqlite_session",
        "SQLiteSession",
        _plain,
    ),
    Peer(
        "sdk_advanced_sqlite_session",
        "openai-agents AdvancedSQLiteSession",
        "agents.extensions.memory.advanced_sqlite_session",
        "AdvancedSQLiteSession",
        _advanced,
    ),
)


def load(peer: Peer) -> type[Any] | None:
    """The peer's session class, or None when ``openai-agents`` is not installed."""
    try:
        module = importlib.import_module(peer.module)
    except ImportError:
        return None
    cls = getattr(module, peer.attribute, None)
    return cls if isinstance(cls, type) else None


def version() -> str | None:
    try:
        from importlib.metadata import version as installed

        return installed("openai-agents")
    except Exception:
        return None


def turn_item(i: int, text: str) -> dict[str, Any]:
    """The ``i``-th item of a thread as a ``Runner`` run writes it: the user's input as a
    plain message, the model's reply as the SDK's output message item."""
    if i % 2 == 0:
        return {"role": "user", "content": text}
    return {
        "id": f"msg_{i}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


async def appends(
    peer: Peer, cls: type[Any], path: Path, sids: Sequence[str], texts: Sequence[Sequence[str]]
) -> Run:
    """The concurrent-appends workload on ``peer``: one session object per session, one file.

    Must run on asyncio (the SDK awaits ``asyncio.to_thread``); ``anyio.run`` defaults to it.
    """
    perf = time.perf_counter
    latencies = Latencies()
    sessions = [peer.open(cls, sid, path) for sid in sids]

    async def session(store: Any, session_texts: Sequence[str]) -> None:
        for i, text in enumerate(session_texts):
            item = turn_item(i, text)
            t0 = perf()
            await store.add_items([item])
            latencies.add(perf() - t0)

    try:
        start = perf()
        async with anyio.create_task_group() as tg:
            for store, session_texts in zip(sessions, texts, strict=True):
                tg.start_soon(session, store, session_texts)
        for store in sessions:
            store.close()
        seconds = perf() - start
    finally:
        for store in sessions:
            store.close()
    count = sum(len(t) for t in texts)
    # Every message is there, or the figure means nothing.
    with closing(sqlite3.connect(path)) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM agent_messages").fetchone()
    assert stored == count, (peer.key, stored, count)
    return Run(seconds=seconds, count=count, latencies=latencies)


async def adapter_appends(path: Path, sids: Sequence[str], texts: Sequence[Sequence[str]]) -> Run:
    """The same workload through threadline's own ``ThreadlineSession`` (the Agents SDK's
    ``Session`` over one shared store), item for item as the SDK's sessions get it."""
    from threadline import Store
    from threadline.integrations.openai_agents import ThreadlineSession

    perf = time.perf_counter
    latencies = Latencies()
    store = await Store.open(path)
    try:
        sessions = [ThreadlineSession(sid, store=store) for sid in sids]
        for one in sessions:  # created before the clock, as the peers' tables are
            await one.get_items(limit=1)

        async def session(one: Any, session_texts: Sequence[str]) -> None:
            for i, text in enumerate(session_texts):
                item = turn_item(i, text)
                t0 = perf()
                await one.add_items([item])
                latencies.add(perf() - t0)

        start = perf()
        async with anyio.create_task_group() as tg:
            for one, session_texts in zip(sessions, texts, strict=True):
                tg.start_soon(session, one, session_texts)
        await store.close()
        seconds = perf() - start
    finally:
        await store.close()
    count = sum(len(t) for t in texts)
    with closing(sqlite3.connect(path)) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    assert stored == count, ("adapter", stored, count)
    return Run(seconds=seconds, count=count, latencies=latencies)


async def reads(
    kind: str,
    path: Path,
    sids: Sequence[str],
    texts: Sequence[Sequence[str]],
    calls: int,
    *,
    turns: bool = False,
) -> Run:
    """All sessions at once, on the SDK's ``SQLiteSession`` (``kind="sdk"``) or on
    ``ThreadlineSession`` over one shared store (``"adapter"``).

    Reads (``turns=False``): each session holds its texts as items, written before the clock
    starts, and reads its whole thread with ``get_items()`` ``calls`` times. Turns: each
    session starts empty and runs its texts as ``Runner`` turns do: ``get_items()``, then
    ``add_items`` of the user's item, then of the reply; one latency per turn."""
    from threadline import Store
    from threadline.integrations.openai_agents import ThreadlineSession

    perf = time.perf_counter
    latencies = Latencies()
    store = await Store.open(path) if kind == "adapter" else None
    if store is not None:
        sessions: list[Any] = [ThreadlineSession(sid, store=store) for sid in sids]
    else:
        cls = load(PEERS[0])
        assert cls is not None
        sessions = [cls(sid, path) for sid in sids]
    try:
        for one, session_texts in zip(sessions, texts, strict=True):
            if not turns:
                await one.add_items([turn_item(i, text) for i, text in enumerate(session_texts)])
            else:
                await one.get_items(limit=1)  # created before the clock

        async def read(one: Any, session_texts: Sequence[str]) -> None:
            for _ in range(calls):
                t0 = perf()
                got = await one.get_items()
                latencies.add(perf() - t0)
                assert len(got) == len(session_texts), (kind, len(got))

        async def turn(one: Any, session_texts: Sequence[str]) -> None:
            for i in range(0, len(session_texts) - 1, 2):
                t0 = perf()
                got = await one.get_items()
                await one.add_items([turn_item(i, session_texts[i])])
                await one.add_items([turn_item(i + 1, session_texts[i + 1])])
                latencies.add(perf() - t0)
                assert len(got) == i, (kind, len(got), i)

        start = perf()
        async with anyio.create_task_group() as tg:
            for one, session_texts in zip(sessions, texts, strict=True):
                tg.start_soon(turn if turns else read, one, session_texts)
        seconds = perf() - start
    finally:
        if store is not None:
            await store.close()
        else:
            for one in sessions:
                one.close()
    count = sum(len(t) // 2 for t in texts) if turns else calls * len(sids)
    return Run(seconds=seconds, count=count, latencies=latencies)

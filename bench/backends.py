"""The store on PostgreSQL next to the store on SQLite, and next to a peer on the same server
(issue 16), in one run, trials alternating:

- **appends**: 20 sessions written at once, 200 messages each, one ``append_messages`` call
  per message (the peer: the OpenAI Agents SDK's ``SQLAlchemySession`` over asyncpg, one
  ``add_items`` call per item, all sessions on one engine);
- **history**: 20 tasks reading their session's newest 50 messages, 100 times each;
- **fork**: a 1,000-message session forked, 5 times.

The PostgreSQL database is analyzed after the appends, as autovacuum would have done in a
database in use (a fresh one has no statistics, and its first plans walk paths by scans).

Run it against a server you may write to (it creates a database of its own and drops it)::

    python -m bench.backends postgresql://user:password@127.0.0.1:5432/postgres

``python -m tests.pgserver`` starts a throwaway server and prints such a URL.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from threadline import Config, Store

SESSIONS = 20
APPENDS = 200
READS = 100
FORK_LENGTH = 1_000
TRIALS = 3
TEXT = "a message of an ordinary length, about the weather and the trains to Kyoto " * 4


async def _appends(store: Store, tag: str) -> float:
    """Appends per second, ``SESSIONS`` sessions at once."""
    sids = [
        (await store.create_session(session_id=f"{tag}-{s}")).session_id for s in range(SESSIONS)
    ]

    async def one(sid: str) -> None:
        for i in range(APPENDS):
            await store.append_messages(sid, [{"role": "user", "content": f"{i} {TEXT}"}])

    start = time.perf_counter()
    await asyncio.gather(*(one(sid) for sid in sids))
    return SESSIONS * APPENDS / (time.perf_counter() - start)


async def _history(store: Store, tag: str) -> float:
    """History pages (newest 50) per second, ``SESSIONS`` readers at once."""
    sids = [f"{tag}-{s}" for s in range(SESSIONS)]

    async def one(sid: str) -> None:
        for _ in range(READS):
            await store.get_history(sid, limit=50)

    start = time.perf_counter()
    await asyncio.gather(*(one(sid) for sid in sids))
    return SESSIONS * READS / (time.perf_counter() - start)


async def _fork(store: Store, tag: str) -> float:
    """Milliseconds per fork of a ``FORK_LENGTH``-message session (median of 5)."""
    sid = (await store.create_session(session_id=f"{tag}-long")).session_id
    for start in range(0, FORK_LENGTH, 100):
        batch = [{"role": "user", "content": f"{i} {TEXT}"} for i in range(start, start + 100)]
        await store.append_messages(sid, batch)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        await store.fork_session(sid)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def _peer_appends(url: str, tag: str) -> float | None:
    """The same appends through ``SQLAlchemySession`` (None without SQLAlchemy)."""
    try:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
        from sqlalchemy.ext.asyncio import create_async_engine
    except ImportError:
        return None
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        sessions = [
            SQLAlchemySession(f"{tag}-{s}", engine=engine, create_tables=True)
            for s in range(SESSIONS)
        ]
        await sessions[0].get_items(limit=1)  # the tables, before the clock

        async def one(session: Any) -> None:
            for i in range(APPENDS):
                await session.add_items([{"role": "user", "content": f"{i} {TEXT}"}])

        start = time.perf_counter()
        await asyncio.gather(*(one(s) for s in sessions))
        return SESSIONS * APPENDS / (time.perf_counter() - start)
    finally:
        await engine.dispose()


Opener = Callable[[str], Awaitable[Store]]


async def admin_on(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def run(server: str) -> dict[str, dict[str, list[float]]]:
    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f"CREATE DATABASE {name}")
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            openers: dict[str, Opener] = {
                "sqlite": lambda tag: Store.open(Path(directory) / f"{tag}.db", Config()),
                "postgres": lambda tag: Store.open(url, Config(), user=tag),
            }
            for trial in range(TRIALS):
                for backend, opener in openers.items():
                    tag = f"t{trial}-{backend}"
                    store = await opener(tag)
                    try:
                        row = figures.setdefault(backend, {})
                        row.setdefault("appends/s", []).append(await _appends(store, tag))
                        if backend == "postgres":  # as autovacuum does in a live database
                            await admin_on(url, "ANALYZE")
                        row.setdefault("history pages/s", []).append(await _history(store, tag))
                        row.setdefault("fork ms", []).append(await _fork(store, tag))
                    finally:
                        await store.close()
                peer = await _peer_appends(url, f"t{trial}-peer")
                if peer is not None:
                    figures.setdefault("peer", {}).setdefault("appends/s", []).append(peer)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a PostgreSQL server's URL (a role that may CREATE DATABASE)")
    figures = asyncio.run(run(parser.parse_args().url))
    sqlite, postgres = figures["sqlite"], figures["postgres"]
    print(f"medians of {TRIALS} alternating trials, {SESSIONS} sessions at once")
    print("| figure | PostgreSQL | SQLite | ratio |\n| --- | --- | --- | --- |")
    for key in sqlite:
        pg, lite = statistics.median(postgres[key]), statistics.median(sqlite[key])
        print(f"| {key} | {pg:,.1f} | {lite:,.1f} | {pg / lite:.2f}x |")
    if "peer" in figures:
        pg = statistics.median(postgres["appends/s"])
        peer = statistics.median(figures["peer"]["appends/s"])
        label = "appends/s, SQLAlchemySession on the same server in the SQLite column"
        print(f"| {label} | {pg:,.1f} | {peer:,.1f} | {pg / peer:.2f}x |")


if __name__ == "__main__":
    main()

"""Which PostgreSQL driver the PostgreSQL backend uses (issue 16): psycopg 3 or asyncpg.

Both run the same two workloads against one server, in one process, trials alternating:

- **appends**: 20 tasks, each appending 200 messages to its own session, one transaction per
  append as the store writes them (lock the session row, insert the message, move the head);
- **history**: 20 tasks reading their session's newest 50 messages, 200 times each.

Each driver gets a pool of 10 connections and its own fresh tables. Run it against a server
you may write to (it creates and drops the ``bench_*`` tables)::

    python -m bench.drivers postgresql://user@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

SESSIONS = 20
APPENDS = 200
READS = 200
POOL = 10
TRIALS = 5

_SCHEMA = """
DROP TABLE IF EXISTS bench_messages, bench_sessions;
CREATE TABLE bench_sessions (id text PRIMARY KEY, head bigint);
CREATE TABLE bench_messages (
    pk bigserial PRIMARY KEY,
    session_id text NOT NULL REFERENCES bench_sessions,
    parent_pk bigint,
    role text NOT NULL,
    content text NOT NULL
);
CREATE INDEX ON bench_messages (session_id, pk);
"""
_LOCK = "SELECT head FROM bench_sessions WHERE id = $1 FOR UPDATE"
_INSERT = (
    "INSERT INTO bench_messages (session_id, parent_pk, role, content) "
    "VALUES ($1, $2, $3, $4) RETURNING pk"
)
_HEAD = "UPDATE bench_sessions SET head = $1 WHERE id = $2"
_HISTORY = (
    "SELECT pk, role, content FROM bench_messages WHERE session_id = $1 ORDER BY pk DESC LIMIT 50"
)


def _psycopg(sql: str) -> str:
    """asyncpg's ``$1`` placeholders as psycopg's ``%s`` (the statements hold no other ``$``)."""
    for n in range(9, 0, -1):
        sql = sql.replace(f"${n}", "%s")
    return sql


class Psycopg:
    name = "psycopg 3 (AsyncConnectionPool)"

    async def open(self, url: str) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(url, min_size=POOL, max_size=POOL, open=False)
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    async def script(self, sql: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql)

    async def append(self, sid: str, text: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_psycopg(_LOCK), (sid,))
            (head,) = await cur.fetchone() or (None,)
            cur = await conn.execute(_psycopg(_INSERT), (sid, head, "user", text))
            (pk,) = await cur.fetchone() or (None,)
            await conn.execute(_psycopg(_HEAD), (pk, sid))

    async def history(self, sid: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_psycopg(_HISTORY), (sid,))
            return len(await cur.fetchall())


class Asyncpg:
    name = "asyncpg (its pool)"

    async def open(self, url: str) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)

    async def close(self) -> None:
        await self.pool.close()

    async def script(self, sql: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(sql)

    async def append(self, sid: str, text: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            head = await conn.fetchval(_LOCK, sid)
            pk = await conn.fetchval(_INSERT, sid, head, "user", text)
            await conn.execute(_HEAD, pk, sid)

    async def history(self, sid: str) -> int:
        async with self.pool.acquire() as conn:
            return len(await conn.fetch(_HISTORY, sid))


Driver = Psycopg | Asyncpg


async def _timed(tasks: list[Callable[[], Awaitable[Any]]]) -> float:
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for task in tasks:
            group.create_task(task())
    return time.perf_counter() - start


async def trial(driver: Driver, url: str) -> tuple[float, float]:
    """One trial on fresh tables: (appends/s, history reads/s)."""
    await driver.open(url)
    try:
        await driver.script(_SCHEMA)
        sids = [f"s{i}" for i in range(SESSIONS)]
        values = ", ".join(f"('{sid}', NULL)" for sid in sids)
        await driver.script(f"INSERT INTO bench_sessions VALUES {values}")
        text = "a message of about the length of a chat turn, " * 6

        def writer(sid: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                for _ in range(APPENDS):
                    await driver.append(sid, text)

            return run

        def reader(sid: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                for _ in range(READS):
                    assert await driver.history(sid) == 50

            return run

        appends = await _timed([writer(sid) for sid in sids])
        reads = await _timed([reader(sid) for sid in sids])
        await driver.script("DROP TABLE bench_messages, bench_sessions")
    finally:
        await driver.close()
    return SESSIONS * APPENDS / appends, SESSIONS * READS / reads


async def main(url: str) -> None:
    drivers: list[Driver] = [Psycopg(), Asyncpg()]
    rates: dict[str, list[tuple[float, float]]] = {d.name: [] for d in drivers}
    for n in range(TRIALS):
        for driver in drivers if n % 2 == 0 else drivers[::-1]:
            rates[driver.name].append(await trial(driver, url))
    print(f"| driver | appends/s ({SESSIONS} tasks) | history(50) reads/s ({SESSIONS} tasks) |")
    print("| --- | --- | --- |")
    for name, runs in rates.items():
        appends = statistics.median(r[0] for r in runs)
        reads = statistics.median(r[1] for r in runs)
        print(f"| {name} | {appends:,.0f} | {reads:,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a PostgreSQL URL the benchmark may create tables in")
    asyncio.run(main(parser.parse_args().url))

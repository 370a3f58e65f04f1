"""The PostgreSQL engine on a real server: transactions scoped to a user, a bounded wait when
every connection is busy, a server restart survived, cancellation leaving nothing behind."""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import asyncpg
import pytest

from tests.pgserver import Cluster, Database, database
from threadline.storage import StoreError, StoreUnusable
from threadline.storage.postgres.engine import Database as Engine
from threadline.storage.postgres.errors import UNAVAILABLE

pytestmark = pytest.mark.anyio

SESSION = (
    "INSERT INTO sessions (user_id, id, system_prompt, prompt_rendered_at, created_at, "
    "updated_at) VALUES (current_setting('threadline.user'), $1, '', '', '2026', '2026')"
)


async def ids(engine: Engine, user: str) -> list[str]:
    async with engine.transaction(user) as conn:
        return [r["id"] for r in await conn.fetch("SELECT id FROM sessions ORDER BY id")]


async def test_each_transaction_sees_and_writes_only_its_users_rows(
    pg_database: Database,
) -> None:
    engine = await Engine.open(pg_database.url)
    try:
        for user, sid in (("alice", "a1"), ("bob", "b1"), ("alice", "a2")):
            async with engine.transaction(user) as conn:
                await conn.execute(SESSION, sid)
        assert await ids(engine, "alice") == ["a1", "a2"]
        assert await ids(engine, "bob") == ["b1"]
        assert await ids(engine, "carol") == []
        # The setting ends with the transaction: a connection lent next carries no user.
        async with engine.transaction("alice") as conn:
            pass
        admin = await asyncpg.connect(pg_database.admin_url)
        try:
            (n,) = await admin.fetchrow("SELECT count(*) FROM sessions")
        finally:
            await admin.close()
        assert n == 3
    finally:
        await engine.close()


async def test_a_failing_or_cancelled_transaction_writes_nothing(pg_database: Database) -> None:
    engine = await Engine.open(pg_database.url, size=2)
    try:
        with pytest.raises(RuntimeError):
            async with engine.transaction("alice") as conn:
                await conn.execute(SESSION, "half")
                raise RuntimeError("the operation failed after its first statement")
        with anyio.move_on_after(0.2):
            async with engine.transaction("alice") as conn:
                await conn.execute(SESSION, "cancelled")
                await anyio.sleep(10)  # cancelled here, its insert made
        assert await ids(engine, "alice") == []
        # Both connections went back to the pool clean: two transactions at once still work.
        async with engine.transaction("alice") as one, engine.transaction("alice") as two:
            await one.execute(SESSION, "x")
            await two.execute(SESSION, "y")
        assert await ids(engine, "alice") == ["x", "y"]
    finally:
        await engine.close()


async def test_every_connection_busy_is_a_bounded_wait_and_a_clear_error(
    pg_database: Database,
) -> None:
    engine = await Engine.open(pg_database.url, size=2, acquire_timeout=0.3)
    try:
        async with engine.transaction("alice"), engine.transaction("bob"):
            with anyio.fail_after(10), pytest.raises(StoreError) as busy:  # never a hang
                async with engine.transaction("carol"):
                    pass
        assert str(busy.value) == "every database connection stayed busy for 0.3 s; try again"
        assert await ids(engine, "carol") == []  # free again once the others ended
    finally:
        await engine.close()


async def test_a_server_restart_is_unavailable_then_recovers_by_itself(
    pg_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """An immediate shutdown (as a crash) while the pool holds connections: calls say the
    database is unavailable, acknowledged writes survive, and once the server is back the
    same engine works again without being reopened."""
    async with database(pg_cluster.url) as db:
        engine = await Engine.open(db.url, size=3)
        try:
            async with engine.transaction("alice") as conn:
                await conn.execute(SESSION, "before")
            pg_cluster.stop("immediate")
            for _ in range(3):
                with pytest.raises(StoreError) as down:
                    await ids(engine, "alice")
                assert str(down.value) == UNAVAILABLE
            pg_cluster.start()
            assert await ids(engine, "alice") == ["before"]
            async with engine.transaction("alice") as conn:
                await conn.execute(SESSION, "after")
            assert await ids(engine, "alice") == ["after", "before"]
        finally:
            await engine.close()
    traced = [r for r in caplog.records if r.exc_info or r.levelno >= 30]
    assert traced == []  # no traceback, no warning in the log either


async def test_opening_a_database_that_cannot_be_reached_or_entered_says_why(
    pg_database: Database,
) -> None:
    wrong = pg_database.url.replace(f":{pg_database.role}@", ":wrong@")
    with pytest.raises(StoreUnusable) as refused:
        await Engine.open(wrong)
    assert str(refused.value) == "the database refused the login (role or password)"
    port = pg_database.url.rsplit(":", 1)[1].split("/")[0]
    gone = pg_database.url.replace(f":{port}/", ":1/")
    with pytest.raises(StoreError) as unreachable:
        await Engine.open(gone)
    assert str(unreachable.value) == UNAVAILABLE


async def test_concurrent_transactions_of_many_users_stay_apart(pg_database: Database) -> None:
    engine = await Engine.open(pg_database.url, size=5)
    try:

        async def write(user: str) -> None:
            for n in range(10):
                async with engine.transaction(user) as conn:
                    await conn.execute(SESSION, f"{user}-{n}")

        await asyncio.gather(*(write(f"u{i}") for i in range(10)))
        for i in range(10):
            assert await ids(engine, f"u{i}") == sorted(f"u{i}-{n}" for n in range(10))
    finally:
        await engine.close()


async def test_a_listener_hears_notifications_and_listens_again_after_a_restart(
    pg_cluster: Cluster,
) -> None:
    async with database(pg_cluster.url) as db:
        engine = await Engine.open(db.url, size=2)
        heard: list[str] = []
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(engine.listen, "channel", heard.append)

                async def announced(text: str) -> bool:
                    for _ in range(100):  # the listener may still be connecting
                        with contextlib.suppress(StoreError):
                            await engine.notify("channel", text)
                        await anyio.sleep(0.1)
                        if text in heard:
                            return True
                    return False

                with anyio.fail_after(60):
                    assert await announced("before")
                    pg_cluster.stop("immediate")
                    pg_cluster.start()
                    assert await announced("after")
                tasks.cancel_scope.cancel()
        finally:
            await engine.close()

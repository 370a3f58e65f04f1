"""The PostgreSQL schema on a real server: migrations under a lock, a newer schema refused,
row-level security as a wall between users, and the driver's errors as sentences."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from tests.pgserver import Database
from threadline.storage import StoreError, StoreUnusable
from threadline.storage.postgres import schema
from threadline.storage.postgres.errors import UNAVAILABLE, translate

pytestmark = pytest.mark.anyio

SESSION = (
    "INSERT INTO sessions (user_id, id, system_prompt, prompt_rendered_at, created_at, "
    "updated_at) VALUES ($1, $2, '', '', '2026-01-01', '2026-01-01')"
)


async def as_user(conn: asyncpg.Connection, user: str | None) -> None:
    """What the store does at the start of every transaction."""
    await conn.execute("SELECT set_config('threadline.user', $1, true)", user or "")


async def test_a_new_database_migrates_to_the_latest_schema_once(pg_database: Database) -> None:
    conn = await asyncpg.connect(pg_database.url)
    try:
        assert await schema.version(conn) == 0
        assert await schema.migrate(conn) == 0
        assert await schema.version(conn) == schema.LATEST
        assert await schema.migrate(conn) == schema.LATEST  # nothing to do the second time
        rows = await conn.fetch("SELECT version, name FROM threadline_migrations ORDER BY 1")
        assert [(r["version"], r["name"]) for r in rows] == [
            (n, name) for n, (name, _) in enumerate(schema.MIGRATIONS, start=1)
        ]
        secured = await conn.fetch(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE relname = any($1::text[])",
            list(schema.USER_TABLES),
        )
        assert sorted((r["relname"], r[1], r[2]) for r in secured) == sorted(
            (table, True, True) for table in schema.USER_TABLES
        )
    finally:
        await conn.close()


async def test_replicas_starting_at_once_migrate_once(pg_database: Database) -> None:
    """Eight connections (as eight replicas would) migrate an empty database at the same
    moment: one does the work under the advisory lock, the others wait and find it done."""
    conns = [await asyncpg.connect(pg_database.url) for _ in range(8)]
    try:
        found = await asyncio.gather(*(schema.migrate(c) for c in conns))
        assert sorted(found) == [0] + [schema.LATEST] * 7
        (count,) = await conns[0].fetchrow("SELECT count(*) FROM threadline_migrations")
        assert count == schema.LATEST
    finally:
        for c in conns:
            await c.close()


async def test_a_newer_schema_is_refused_and_left_untouched(pg_database: Database) -> None:
    conn = await asyncpg.connect(pg_database.url)
    try:
        await schema.migrate(conn)
        newer = schema.LATEST + 1
        await conn.execute(
            "INSERT INTO threadline_migrations (version, name) VALUES ($1, 'from the future')",
            newer,
        )
        with pytest.raises(StoreUnusable) as refused:
            await schema.migrate(conn)
        assert str(refused.value) == (
            f"the database has schema version {newer}, newer than this threadline understands "
            f"({schema.LATEST}); upgrade threadline. The database was left untouched."
        )
        assert await schema.version(conn) == newer
    finally:
        await conn.close()


async def test_row_level_security_keeps_each_user_to_their_own_rows(
    pg_database: Database,
) -> None:
    """Even a query that forgets to name the user sees only the transaction's user's rows,
    cannot write a row for another, and without a user sees and writes nothing."""
    conn = await asyncpg.connect(pg_database.url)
    try:
        await schema.migrate(conn)
        for user in ("alice", "bob"):
            async with conn.transaction():
                await as_user(conn, user)
                await conn.execute(SESSION, user, f"{user}-thread")
        for user in ("alice", "bob"):
            async with conn.transaction():
                await as_user(conn, user)
                seen = await conn.fetch("SELECT user_id, id FROM sessions")  # no WHERE
                assert [tuple(r) for r in seen] == [(user, f"{user}-thread")]
        async with conn.transaction():
            await as_user(conn, None)
            assert await conn.fetch("SELECT id FROM sessions") == []
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the policy's WITH CHECK
            async with conn.transaction():
                await as_user(conn, "bob")
                await conn.execute(SESSION, "alice", "planted")
        async with conn.transaction():
            await as_user(conn, "bob")
            changed = await conn.execute("UPDATE sessions SET title = 'mine now'")
            assert changed == "UPDATE 1"  # bob's own row only
        admin = await asyncpg.connect(pg_database.admin_url)  # a superuser bypasses RLS
        try:
            rows = await admin.fetch("SELECT user_id, id, title FROM sessions ORDER BY 1")
            assert [tuple(r) for r in rows] == [
                ("alice", "alice-thread", None),
                ("bob", "bob-thread", "mine now"),
            ]
        finally:
            await admin.close()
    finally:
        await conn.close()


async def test_the_drivers_errors_read_as_sentences_without_server_text(
    pg_database: Database,
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://nobody@127.0.0.1:{port}/none", timeout=5)
    assert str(translate(refused.value)) == UNAVAILABLE
    wrong = pg_database.url.replace(f":{pg_database.role}@", ":not-the-password@")
    with pytest.raises(asyncpg.PostgresError) as login:
        await asyncpg.connect(wrong)
    error = translate(login.value)
    assert isinstance(error, StoreUnusable)
    assert str(error) == "the database refused the login (role or password)"
    missing = pg_database.url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(asyncpg.PostgresError) as absent:
        await asyncpg.connect(missing)
    assert str(translate(absent.value)) == "the database named in the URL does not exist"
    conn = await asyncpg.connect(pg_database.url)
    try:
        with pytest.raises(asyncpg.PostgresError) as syntax:
            await conn.execute("SELEC 1")
        translated = translate(syntax.value)
        assert type(translated) is StoreError and str(translated) == "database error (42601)"
    finally:
        await conn.close()

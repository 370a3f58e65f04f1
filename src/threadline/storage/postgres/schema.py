"""The PostgreSQL schema and its migrations: ordered, named, versioned in the database.

The tables mirror the SQLite store's (``storage/schema.py``), with ``user_id`` in front of
every key: a session is ``(user_id, id)``, a message ``(user_id, pk)``, and every foreign key
carries the user too, so no row can point into another user's data. Times, JSON metadata and
content are text, as SQLite keeps them, so both backends return the same bytes.

Row-level security is enabled and forced on every table: a row is visible, and may be written,
only while the transaction's ``threadline.user`` setting names its user (``set_config(...,
true)``, so it ends with the transaction and suits transaction-mode poolers). Forced RLS binds
the tables' owner too, but never a superuser or a role with BYPASSRLS: the store must connect
as an ordinary role (``doctor`` will check it).

``migrate`` runs every pending migration in one transaction under an advisory lock, so
replicas starting at once are safe: one migrates, the others wait and then find nothing to
do. A database whose schema is newer than this threadline is refused and left as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from threadline.storage.errors import StoreUnusable

if TYPE_CHECKING:  # asyncpg's classes are generic only in its stubs
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by a pool: what every query function takes.
    Connection: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

# The key of the transaction-level advisory lock that migrations hold ("Tln1").
LOCK = 0x546C6E31

USER_TABLES = ("sessions", "messages", "compactions", "context_blocks", "usage")

_POLICY = "user_id = current_setting('threadline.user', true)"

_V1 = (
    """CREATE TABLE sessions (
        user_id text NOT NULL,
        id text NOT NULL,
        title text,
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
        metadata text,
        parent_session_id text,
        forked_from_message_id text,
        lineage text CHECK (lineage IN ('fork', 'split')),
        head_pk bigint,
        message_count bigint NOT NULL DEFAULT 0,
        token_estimate bigint NOT NULL DEFAULT 0,
        system_prompt text NOT NULL,
        prompt_rendered_at text NOT NULL,
        input_tokens bigint NOT NULL DEFAULT 0,
        output_tokens bigint NOT NULL DEFAULT 0,
        cost double precision NOT NULL DEFAULT 0,
        turns bigint NOT NULL DEFAULT 0,
        last_model text,
        created_at text NOT NULL,
        updated_at text NOT NULL,
        PRIMARY KEY (user_id, id)
    )""",
    "CREATE INDEX sessions_by_activity ON sessions (user_id, updated_at DESC, id DESC)",
    """CREATE TABLE messages (
        user_id text NOT NULL,
        pk bigint GENERATED ALWAYS AS IDENTITY,
        session_id text NOT NULL,
        id text NOT NULL,
        parent_pk bigint,
        depth bigint NOT NULL,
        path_tokens bigint NOT NULL,
        role text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
        content text NOT NULL,
        is_json boolean NOT NULL,
        body text,
        name text,
        metadata text,
        tokens bigint NOT NULL,
        created_at text NOT NULL,
        PRIMARY KEY (user_id, pk),
        UNIQUE (user_id, session_id, id),
        FOREIGN KEY (user_id, session_id) REFERENCES sessions ON DELETE CASCADE,
        FOREIGN KEY (user_id, parent_pk) REFERENCES messages (user_id, pk)
    )""",
    "CREATE INDEX messages_children ON messages (user_id, parent_pk)",
    """CREATE TABLE compactions (
        user_id text NOT NULL,
        pk bigint GENERATED ALWAYS AS IDENTITY,
        session_id text NOT NULL,
        start_pk bigint NOT NULL,
        end_pk bigint NOT NULL,
        summary text NOT NULL,
        replaced bigint NOT NULL,
        created_at text NOT NULL,
        PRIMARY KEY (user_id, pk),
        FOREIGN KEY (user_id, session_id) REFERENCES sessions ON DELETE CASCADE,
        FOREIGN KEY (user_id, start_pk) REFERENCES messages (user_id, pk) ON DELETE CASCADE,
        FOREIGN KEY (user_id, end_pk) REFERENCES messages (user_id, pk) ON DELETE CASCADE
    )""",
    "CREATE INDEX compactions_by_session ON compactions (user_id, session_id)",
    "CREATE INDEX compactions_by_start ON compactions (user_id, start_pk)",
    "CREATE INDEX compactions_by_end ON compactions (user_id, end_pk)",
    """CREATE TABLE context_blocks (
        user_id text NOT NULL,
        label text NOT NULL,
        session_id text NOT NULL,
        content text NOT NULL,
        updated_at text NOT NULL,
        PRIMARY KEY (user_id, label, session_id)
    )""",
    """CREATE TABLE usage (
        user_id text NOT NULL,
        pk bigint GENERATED ALWAYS AS IDENTITY,
        session_id text NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        cost double precision,
        model text,
        created_at text NOT NULL,
        PRIMARY KEY (user_id, pk),
        FOREIGN KEY (user_id, session_id) REFERENCES sessions ON DELETE CASCADE
    )""",
    "CREATE INDEX usage_by_session ON usage (user_id, session_id)",
    *(
        statement
        for table in USER_TABLES
        for statement in (
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY {table}_of_the_user ON {table} USING ({_POLICY}) "
            f"WITH CHECK ({_POLICY})",
        )
    ),
)

# A session's messages by depth: a fork links each copy to the copy one depth up.
_V2 = ("CREATE INDEX messages_by_depth ON messages (user_id, session_id, depth)",)

MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("initial schema", _V1),
    ("messages by depth", _V2),
)
LATEST = len(MIGRATIONS)


async def version(conn: Connection) -> int:
    """The schema version of the database (0: no threadline schema yet)."""
    # Asked of pg_class by a query (read in this statement's snapshot), not by a name lookup,
    # which would cache "no such table" in this connection and keep it past another
    # replica's migration, committed while this one waited for the lock.
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'threadline_migrations' AND n.nspname = current_schema())"
    )
    if not exists:
        return 0
    found: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM threadline_migrations")
    return found


async def migrate(conn: Connection) -> int:
    """Bring the database to ``LATEST``, in one transaction; returns the version found.

    Refuses (``StoreUnusable``, nothing changed) a database with a newer schema."""
    if await _checked(conn) == LATEST:
        return LATEST  # the common case, without taking the lock
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        found = await _checked(conn)  # again, now that we hold the lock
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS threadline_migrations (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, (name, statements) in enumerate(MIGRATIONS, start=1):
            if number <= found:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO threadline_migrations (version, name) VALUES ($1, $2)", number, name
            )
    return found


async def _checked(conn: Connection) -> int:
    found = await version(conn)
    if found > LATEST:
        raise StoreUnusable(
            f"the database has schema version {found}, newer than this threadline understands "
            f"({LATEST}); upgrade threadline. The database was left untouched."
        )
    return found


async def inspect(conn: Connection) -> dict[str, Any]:
    """What ``doctor`` reports of a database, read only: the schema version, the tables whose
    row-level security is not enabled and forced, and whether the connected role escapes it
    (a superuser, or BYPASSRLS)."""
    found = await version(conn)
    rows = await conn.fetch(
        "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity AS walled FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])",
        list(USER_TABLES),
    )
    walled = {r["relname"]: r["walled"] for r in rows}
    role = await conn.fetchrow(
        "SELECT rolsuper OR rolbypassrls AS escapes FROM pg_roles WHERE rolname = current_user"
    )
    return {
        "version": found,
        "unwalled": [t for t in USER_TABLES if not walled.get(t, False)] if found else [],
        "role_escapes": bool(role and role["escapes"]),
    }

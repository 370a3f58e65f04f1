"""A pool of connections to one PostgreSQL database, and transactions scoped to one user.

Every operation runs in ``transaction(user)``: a pooled connection, a transaction, and the
transaction's ``threadline.user`` set first, which row-level security compares with every
row's ``user_id`` (``schema``). The setting ends with the transaction, so a connection handed
to the next caller carries nothing over, and a transaction-mode pooler in front works too.

Failures read as the store's errors (``errors.translate``): a server that is down or
restarting is "unavailable; try again", never a traceback. A connection the server dropped
(a restart) is found out by the transaction's first statement, before anything was done, and
that transaction is started again once on a fresh connection, so the store recovers by itself
when the server is back. When every connection is busy, a caller waits ``acquire_timeout``
seconds at most, then gets an error saying so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg

from threadline.storage.errors import InvalidInput, StoreError
from threadline.storage.postgres import schema
from threadline.storage.postgres.errors import translate

if TYPE_CHECKING:
    from threadline.storage.postgres.schema import Connection

log = logging.getLogger(__name__)


async def _end_transaction(conn: Connection) -> None:
    """What a connection needs before it goes back to the pool: no open transaction. The store
    changes no session state (its one setting ends with each transaction), so asyncpg's
    default reset, a further round trip per call (``RESET ALL``, ``UNLISTEN *`` and more),
    would find nothing to reset."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _begin(user: str, snapshot: bool) -> str:
    """The transaction's start and its user's setting, sent as one message (one round trip
    instead of two; a simple query takes no parameters, so the user is written as an escape
    string literal, which holds anything but NUL whatever the server's settings)."""
    if "\x00" in user:
        raise InvalidInput("user", "must not contain NUL characters")
    literal = "E'" + user.replace("\\", "\\\\").replace("'", "\\'") + "'"
    isolation = " ISOLATION LEVEL REPEATABLE READ" if snapshot else ""
    return f"BEGIN{isolation}; SELECT set_config('threadline.user', {literal}, true)"


_DROPPED = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)


class Database:
    """The pool of one database; open with ``await Database.open(url)``."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float, url: str) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._url = url

    @classmethod
    async def open(cls, url: str, *, size: int = 10, acquire_timeout: float = 10.0) -> Database:
        """Connect (``size`` connections at most) and bring the schema up to date."""
        try:
            # No floor of idle connections: keeping one up is a task that, while the server
            # is down, logs a traceback each second. Connections are made when needed.
            pool = await asyncpg.create_pool(url, min_size=0, max_size=size, reset=_end_transaction)
        except (asyncpg.PostgresError, *_DROPPED, TimeoutError) as exc:
            raise translate(exc) from None
        try:
            async with pool.acquire(timeout=acquire_timeout) as conn:
                await schema.migrate(conn)
        except StoreError:
            await pool.close()
            raise
        except (asyncpg.PostgresError, *_DROPPED, TimeoutError) as exc:
            await pool.close()
            raise translate(exc) from None
        return cls(pool, acquire_timeout, url)

    @asynccontextmanager
    async def transaction(self, user: str, *, snapshot: bool = False) -> AsyncIterator[Connection]:
        """A connection inside a transaction of ``user``'s; commits when the block ends,
        rolls back (nothing written) when it raises or is cancelled. ``snapshot``: every
        statement reads the same snapshot (``REPEATABLE READ``), as an export must."""
        try:
            for attempt in (1, 2):
                async with self._acquire() as conn:
                    try:
                        await conn.execute(_begin(user, snapshot))
                    except _DROPPED:  # dropped while pooled (a restart): nothing was done
                        if attempt == 2:
                            raise
                        log.info("a pooled database connection was gone; taking another")
                        continue
                    try:
                        yield conn
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            with contextlib.suppress(*_DROPPED):
                                await conn.execute("ROLLBACK")
                        raise
                    await conn.execute("COMMIT")
                    return
        except (asyncpg.PostgresError, *_DROPPED, TimeoutError) as exc:
            raise translate(exc) from None

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Connection]:
        try:
            conn = await self._pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError:
            raise StoreError(
                f"every database connection stayed busy for {self._acquire_timeout:g} s; try again"
            ) from None
        try:
            yield conn
        finally:
            with anyio.CancelScope(shield=True):
                await self._pool.release(conn)

    async def notify(self, channel: str, payload: str) -> None:
        """Send ``payload`` to every connection listening on ``channel`` (``listen``)."""
        try:
            async with self._acquire() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
        except (asyncpg.PostgresError, *_DROPPED, TimeoutError) as exc:
            raise translate(exc) from None

    async def listen(self, channel: str, deliver: Callable[[str], None]) -> None:
        """Call ``deliver(payload)`` for every notification on ``channel``, until cancelled:
        on a connection of its own, made again (every second) after the database went away."""
        while True:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await asyncpg.connect(self._url)
                lost = anyio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(channel, lambda *args: deliver(args[-1]))
                await lost.wait()
            except (asyncpg.PostgresError, *_DROPPED, TimeoutError) as exc:
                log.info("listening for notifications: %s; again in a second", translate(exc))
            finally:
                if conn is not None:
                    with anyio.CancelScope(shield=True), contextlib.suppress(*_DROPPED):
                        await conn.close()
            await anyio.sleep(1.0)

    async def close(self) -> None:
        await self._pool.close()


def _setter(event: anyio.Event) -> Callable[[Any], None]:
    return lambda _: event.set()

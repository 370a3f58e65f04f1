"""The driver's errors as the store's: a sentence a person can act on, never the server's text.

What a retry may cure (the server is down, restarting, out of connections, a deadlock or a
serialization failure) says so; what it cannot (a wrong password, a missing database, a role
without the rights) says what to fix. Neither carries asyncpg's or PostgreSQL's own message,
which can hold a host name, a role or a statement.
"""

from __future__ import annotations

import asyncpg

from threadline.storage.errors import StoreError, StoreUnusable

UNAVAILABLE = "the database is unavailable (down, restarting or unreachable); try again"

_RETRY: tuple[tuple[type[BaseException], str], ...] = (
    (asyncpg.TooManyConnectionsError, "the database has no free connection; try again"),
    (asyncpg.DeadlockDetectedError, "the database was busy (a deadlock); try again"),
    (asyncpg.SerializationError, "the database was busy (a concurrent write); try again"),
    (asyncpg.DiskFullError, "the database's storage is full; nothing was written"),
    (asyncpg.QueryCanceledError, "the database cancelled the statement (a timeout); try again"),
)
_FIX: tuple[tuple[type[BaseException], str], ...] = (
    (
        asyncpg.InvalidAuthorizationSpecificationError,
        "the database refused the login (role or password)",
    ),
    (asyncpg.InvalidCatalogNameError, "the database named in the URL does not exist"),
    (asyncpg.InsufficientPrivilegeError, "the database role lacks a privilege threadline needs"),
)


def translate(exc: BaseException) -> StoreError:
    """A store error for anything the driver or the server raised."""
    for kind, message in _FIX:
        if isinstance(exc, kind):
            return StoreUnusable(message)
    for kind, message in _RETRY:
        if isinstance(exc, kind):
            return StoreError(message)
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.InterfaceError,
    ):
        return StoreError(UNAVAILABLE)
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(f"database error ({exc.sqlstate})")
    return StoreError(f"database error ({type(exc).__name__})")

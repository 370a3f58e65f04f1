"""A SQLite connection as the store sets it up, and SQLite's errors as sentences.

Every connection, the writer's, a reader's or a check's, comes from ``connect``: busy timeout,
foreign keys, the sync level, a bound on the WAL file, and the SQL functions that modules
register with ``sql_function``. ``translate`` turns a ``sqlite3.Error`` into a ``StoreError``
whose message a person can act on; SQLite's own text never leaves the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from threadline.config import Config
from threadline.storage.errors import StoreError

F = TypeVar("F", bound=Callable[..., Any])

_MESSAGES = {
    "SQLITE_BUSY": "the database is busy (another process holds it); try again",
    "SQLITE_LOCKED": "the database is busy; try again",
    "SQLITE_FULL": "storage is full (disk or file size limit); nothing was written",
    "SQLITE_IOERR": "disk I/O error (is the disk full or failing?); nothing was written",
    "SQLITE_READONLY": "the database is read-only here; nothing was written",
    "SQLITE_CORRUPT": "the database file is damaged; stop every server using it, then restore it "
    "from a backup",
    "SQLITE_NOTADB": "the file is not a SQLite database",
    "SQLITE_CANTOPEN": "the database file cannot be opened (missing directory or permissions)",
    "SQLITE_NOMEM": "the database ran out of memory",
}


def translate(exc: sqlite3.Error) -> StoreError:
    """A store error with a readable sentence, never SQLite's own text."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for prefix, message in _MESSAGES.items():
        if name.startswith(prefix):
            return StoreError(message)
    return StoreError(f"storage error ({name or type(exc).__name__})")


# SQL functions every connection gets: (name, number of arguments, implementation). The
# modules whose SQL calls them add theirs when imported (``sql_function``).
_FUNCTIONS: list[tuple[str, int, Callable[..., Any]]] = []


def sql_function(name: str, arguments: int) -> Callable[[F], F]:
    """Register ``fn`` as the deterministic SQL function ``name`` on every connection."""

    def register(fn: F) -> F:
        _FUNCTIONS.append((name, arguments, fn))
        return fn

    return register


def connect(path: Path, config: Config, *, readonly: bool = False) -> sqlite3.Connection:
    """One place that sets a connection up: busy timeout, foreign keys, sync level, the SQL
    functions registered with ``sql_function``."""
    conn = sqlite3.connect(
        path,
        timeout=config.busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {config.synchronous}")
        # After a checkpoint, a WAL file that grew (a big import, a reader holding a snapshot)
        # is cut back to this size instead of keeping its peak on disk.
        conn.execute("PRAGMA journal_size_limit = 67108864")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        for name, arguments, fn in _FUNCTIONS:
            conn.create_function(name, arguments, fn, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn

"""SQLite plumbing: connection setup, the group-committing writer, the reader pool.

Every write is a plain function ``fn(conn) -> T`` that runs inside a ``BEGIN IMMEDIATE``
transaction on the single writer connection. Concurrent writes share one transaction (group
commit): the first caller to arrive becomes the leader, takes every job queued so far, runs
each inside its own SAVEPOINT, commits once, and hands each caller its own result, only after
the commit. A job that raises a ``ThreadlineError`` is rolled back to its savepoint and changes
nothing; its neighbours still commit.

Callers wait in worker threads that cannot be abandoned, so a cancelled caller leaves its
transaction committed or rolled back whole, never half-done or holding the write lock.
Reads run on their own connections, in parallel with the writer.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from threadline.config import Config
from threadline.storage.errors import StoreError, ThreadlineError

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

_MESSAGES = {
    "SQLITE_BUSY": "the database is busy (another process holds it); try again",
    "SQLITE_LOCKED": "the database is busy; try again",
    "SQLITE_FULL": "storage is full (disk or file size limit); nothing was written",
    "SQLITE_IOERR": "disk I/O error (is the disk full or failing?); nothing was written",
    "SQLITE_READONLY": "the database is read-only here; nothing was written",
    "SQLITE_CORRUPT": "the database file is damaged; run `threadline doctor`",
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


def _contains(haystack: str | None, needle: str) -> bool:
    """Search's substring test for non-ASCII terms: ``needle`` is already lower-cased."""
    return haystack is not None and needle in haystack.lower()


def connect(path: Path, config: Config, *, readonly: bool = False) -> sqlite3.Connection:
    """One place that sets a connection up: busy timeout, foreign keys, sync level, functions."""
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
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        conn.create_function("tl_contains", 2, _contains, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn


class _Pending:
    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Job) -> None:
        self.fn = fn
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class Database:
    """The writer, the readers and their limits for one SQLite file."""

    def __init__(
        self,
        path: Path,
        config: Config,
        writer: sqlite3.Connection,
        maintenance: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self._writer = writer
        self._maintenance = maintenance
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._leading = False
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._write_limiter = anyio.CapacityLimiter(64)
        self._read_limiter = anyio.CapacityLimiter(config.readers)
        self._closed = False

    # -- writing ------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; its result comes back only once committed."""
        self._check_open()
        result: T = await anyio.to_thread.run_sync(self.write_sync, fn, limiter=self._write_limiter)
        return result

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        job = _Pending(fn)
        with self._cond:
            self._queue.append(job)
            while self._leading and not job.done:
                self._cond.wait()
            if not job.done:
                self._leading = True
                batch, self._queue = self._queue, []
        if not job.done:
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        value: T = job.value
        return value

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the whole batch; if it fails as a whole, each job alone."""
        try:
            self._run(batch)
        except Exception as exc:
            if len(batch) > 1:
                log.warning("group commit of %d failed (%r); retrying one by one", len(batch), exc)
                for job in batch:
                    self._commit([job])
            else:
                error = translate(exc) if isinstance(exc, sqlite3.Error) else exc
                self._finish(batch, error)
        except BaseException as exc:
            self._finish(batch, exc)
            raise

    def _run(self, batch: list[_Pending]) -> None:
        conn = self._writer
        single = len(batch) == 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if single:
                    self._call(job, conn)
                else:
                    conn.execute("SAVEPOINT job")
                    if not self._call(job, conn):
                        conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
            if single and batch[0].error is not None:
                conn.execute("ROLLBACK")
            else:
                self._maintain(conn)
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            for job in batch:
                job.value = job.error = None
            raise
        for job in batch:
            job.done = True

    def _maintain(self, conn: sqlite3.Connection) -> None:
        """Housekeeping that rides along with a commit; its failure never fails the writes."""
        if self._maintenance is None:
            return
        conn.execute("SAVEPOINT maintenance")
        try:
            self._maintenance(conn)
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                raise
            log.warning("maintenance skipped: %r", exc)
            conn.execute("ROLLBACK TO maintenance")
        conn.execute("RELEASE maintenance")

    @staticmethod
    def _call(job: _Pending, conn: sqlite3.Connection) -> bool:
        """Run one job; a domain error is the job's own result, anything else aborts the batch."""
        try:
            job.value = job.fn(conn)
        except ThreadlineError as exc:
            job.error = exc
            return False
        return True

    @staticmethod
    def _finish(batch: list[_Pending], error: BaseException) -> None:
        for job in batch:
            job.error = error
            job.done = True

    # -- reading ------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a read transaction (one consistent snapshot) on a reader connection."""
        self._check_open()
        result: T = await anyio.to_thread.run_sync(self.read_sync, fn, limiter=self._read_limiter)
        return result

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = connect(self.path, self.config, readonly=True)
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        finally:
            with self._readers_lock:
                self._readers.append(conn)

    # -- lifetime -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    async def close(self) -> None:
        """Finish queued writes, then close every connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await anyio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        with self._cond:
            while self._leading or self._queue:
                self._cond.wait()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._writer.close()

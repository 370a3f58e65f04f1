"""The group-committing writer thread and the reader pool over one SQLite file.

Every write is a plain function ``fn(conn) -> T`` that runs inside a ``BEGIN IMMEDIATE``
transaction on the single writer connection, in the store's own writer thread. Concurrent
writes share one transaction (group commit): the writer takes every job queued while it was
busy, runs them in one transaction, commits once, and only then hands each caller its own
result (one wake-up of the event loop per batch). A job that raises a ``ThreadlineError``
changes nothing and its neighbours still commit: the batch rolls back and runs again with a
SAVEPOINT around each job (failures are rare, so the common batch pays no savepoints).

A caller cancelled before the writer took its job is dropped whole; once taken, the job
commits or rolls back whole, so a transaction is never left half-done or holding the lock.
Search indexing runs in the same thread, in bounded chunks: inside the transaction of a batch
that added messages once ``index_batch`` wait (so the unindexed tail stays short under load; a
batch that adds none, such as a compaction, never waits for indexing, nor does a batch of
writes that all declined it, such as a fork), and otherwise in transactions of its own when
writes pause for ``index_delay``.
Reads run on their own connections, in worker threads, in parallel with the writer.

The writer resolves asyncio futures, so the store runs under asyncio (as the MCP SDK does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from threadline.config import Config
from threadline.storage.connection import connect, translate
from threadline.storage.errors import StoreError, ThreadlineError
from threadline.storage.files import REPLACED, StoreFile

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

# The WAL size past which the writer starts it afresh (``Database._bound_wal``): four of
# SQLite's automatic checkpoints' worth of 4 KiB pages, one WAL-index hash table.
WAL_RESTART_BYTES = 16 * 1024 * 1024


class _Pending:
    __slots__ = ("error", "fn", "future", "index_along", "loop", "value")

    def __init__(
        self,
        fn: Job,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        index_along: bool,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.index_along = index_along
        self.future = future
        self.value: Any = None
        self.error: BaseException | None = None


def _resolve(jobs: list[_Pending]) -> None:
    """On the event loop: hand each caller its outcome (unless it stopped waiting)."""
    for job in jobs:
        if job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.value)


class Database:
    """The writer, the readers and their limits for one SQLite file."""

    def __init__(
        self,
        path: Path,
        config: Config,
        writer: sqlite3.Connection,
        maintenance: Callable[[sqlite3.Connection, int, int], int] | None = None,
        added: Callable[[sqlite3.Connection], int] | None = None,
    ) -> None:
        """``maintenance(conn, at_least, at_most)`` does deferred work (search indexing) in the
        transaction it is given, if ``at_least`` units wait, up to ``at_most``; returns how
        many it did. ``added(conn)`` is a number that grows whenever a write adds such work
        (the newest message's pk); without it every batch may take a share of the work."""
        self.path = path
        self.config = config
        self._writer = writer
        self._maintenance = maintenance
        self._added = added
        self._backlog = maintenance is not None  # work may be waiting from before we opened
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._read_limiter = anyio.CapacityLimiter(config.readers)
        self._closed = False
        self._stopping = False
        self._damaged: str | None = None  # set by the writer thread
        self._file = StoreFile(path)
        self._wal_limit = WAL_RESTART_BYTES
        self.on_commit: Callable[[int], None] | None = None  # see Store.observe_commits
        self._thread = threading.Thread(
            target=self._serve_writes, name=f"threadline-writer {path.name}", daemon=True
        )
        self._thread.start()

    # -- writing ------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T], index_along: bool = True) -> T:
        """Run ``fn`` in a write transaction; its result comes back only once committed.

        ``index_along=False``: this write alone never makes its batch index a chunk along
        (for a write that adds far more messages than a chunk, such as a fork)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        job = _Pending(fn, loop, loop.create_future(), index_along)
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
        result: T = await job.future
        return result

    def _serve_writes(self) -> None:
        """The writer thread: commit queued writes in groups; index when there is time."""
        self._damaged = self._check_integrity()
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(timeout=self.config.index_delay if self._backlog else None)
                batch, self._queue = self._queue, []
                stopping = self._stopping
            live = [job for job in batch if not job.future.cancelled()]
            if live:
                self._commit(live)
                # The observer hears of a commit before its callers do, so a caller that saw
                # its write acknowledged knows the observer counted it.
                if self.on_commit is not None:
                    self.on_commit(len(live))
                self._post(live)
                self._bound_wal()
                self._backlog = self._maintenance is not None
                continue
            if stopping:
                return
            if self._backlog and self._damaged is None:  # writes paused: catch up, in chunks
                self._backlog = self._file.still_ours() and self._maintain_alone()

    def _bound_wal(self) -> None:
        """Keep the WAL from growing without end. SQLite's own checkpoints copy the WAL into
        the file but start it afresh only at a moment no reader is in it, and readers that
        never pause all at once (a busy read pool, or other processes) leave no such moment:
        the WAL then grows with every write, and every read looks pages up through a longer
        WAL index. Past ``WAL_RESTART_BYTES`` the writer waits a moment (0.1 s at most, writes
        queue meanwhile) for readers to leave the WAL, and truncates it; if some reader stays,
        it tries again once the WAL has grown as much again."""
        if self._file.replaced:  # the path's WAL is another file's now
            return
        try:
            size = self._file.sidecar("-wal").stat().st_size
        except OSError:
            return
        if size < self._wal_limit:
            return
        conn = self._writer
        try:
            conn.execute("PRAGMA busy_timeout = 100")
            (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("a checkpoint to bound the WAL failed: %s", exc)
            busy = 1
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.config.busy_timeout * 1000)}")
        self._wal_limit = size + WAL_RESTART_BYTES if busy else WAL_RESTART_BYTES

    def _post(self, batch: list[_Pending]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for job in batch:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is gone; nobody is waiting
                loop.call_soon_threadsafe(_resolve, jobs)

    def _check_integrity(self) -> str | None:
        """Before the first write: a damaged file takes no writes (reads still work)."""
        try:
            rows = self._writer.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.DatabaseError as exc:
            rows = [(str(exc),)]
        if rows == [("ok",)]:
            return None
        log.error("%s fails its integrity check: %s", self.path, rows[0][0])
        return (
            "the database file is damaged, so it takes no more writes (what still reads is "
            "served); stop every server using it, then restore it from a backup"
        )

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the whole batch; if it fails as a whole, each job alone."""
        refused = self._damaged if self._file.still_ours() else REPLACED
        if refused is not None:
            for job in batch:
                job.error = StoreError(refused)
            return
        try:
            self._run(batch)
        except Exception as exc:
            if len(batch) > 1:
                log.warning("group commit of %d failed (%r); retrying one by one", len(batch), exc)
                for job in batch:
                    self._commit([job])
            else:
                batch[0].error = translate(exc) if isinstance(exc, sqlite3.Error) else exc
                if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_CORRUPT"):
                    self._damaged = self._check_integrity()
        except BaseException as exc:  # the writer thread itself is going down
            for job in batch:
                job.error = StoreError(f"the write was not committed ({type(exc).__name__})")
            raise

    def _run(self, batch: list[_Pending], guarded: bool = False) -> None:
        """The batch in one transaction. Jobs run bare first, since a write that fails is
        rare; when one fails, the transaction rolls back and a batch of several runs again
        with a savepoint around each job, so the failing one leaves nothing and the others
        land."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            mark = self._added(conn) if self._added is not None else None
            for job in batch:
                if guarded:
                    conn.execute("SAVEPOINT job")
                    if not self._call(job, conn):
                        conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                elif not self._call(job, conn):
                    conn.execute("ROLLBACK")
                    if len(batch) > 1:
                        for done in batch:
                            done.value = done.error = None
                        self._run(batch, guarded=True)
                    return
            if any(job.index_along for job in batch):
                self._ride_along(conn, mark)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            for job in batch:
                job.value = job.error = None
            raise

    def _ride_along(self, conn: sqlite3.Connection, mark: int | None) -> None:
        """Once ``index_batch`` messages wait, a batch that added some indexes a chunk inside
        its transaction: the unindexed tail stays bounded under load, at a bounded cost per
        commit, and is paid by the writes that grow it. Its failure never fails the batch's
        writes."""
        if self._maintenance is None:
            return
        if mark is not None and self._added is not None and self._added(conn) == mark:
            return
        conn.execute("SAVEPOINT maintenance")
        try:
            self._maintenance(conn, self.config.index_batch, self.config.index_chunk)
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                raise
            log.warning("%s: search indexing postponed: %s", self.path, translate(exc))
            conn.execute("ROLLBACK TO maintenance")
        conn.execute("RELEASE maintenance")

    def _maintain_alone(self) -> bool:
        """Index a chunk in a transaction of its own; True if more may be waiting."""
        assert self._maintenance is not None
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            done = self._maintenance(conn, 1, self.config.index_chunk)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            log.warning("%s: search indexing postponed: %s", self.path, translate(exc))
            return False
        return done >= self.config.index_chunk

    @staticmethod
    def _call(job: _Pending, conn: sqlite3.Connection) -> bool:
        """Run one job; a domain error is the job's own result, anything else aborts the batch."""
        try:
            job.value = job.fn(conn)
        except ThreadlineError as exc:
            job.error = exc
            return False
        return True

    # -- reading ------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a read transaction (one consistent snapshot) on a reader connection."""
        self._check_open()
        result: T = await anyio.to_thread.run_sync(self.read_sync, fn, limiter=self._read_limiter)
        return result

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._file.still_ours():
            raise StoreError(REPLACED)
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

    def size(self) -> int:
        """The bytes of the file and its WAL."""
        return sum(
            found.stat().st_size
            for found in (self.path, self._file.sidecar("-wal"))
            if found.exists()
        )

    def vacuum_sync(self) -> None:
        """Give the free pages back to the file system: VACUUM on a connection of its own
        (it waits for the write lock like any writer; readers go on), then a checkpoint that
        truncates the WAL the VACUUM wrote."""
        conn = connect(self.path, self.config)
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        finally:
            conn.close()

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
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if self._file.replaced or not self._file.still_ours():
            self._file.set_aside(self._writer)
        self._writer.close()

"""The SQLite backend: each ``Store`` call as one function run on the writer or a reader.

``Store`` validates a call's arguments and hands it here; every method runs one function of
the lower modules (``tree``, ``reading``, ``sessions``, ``context``, ``compaction``,
``search``, ``transfer``, or ``operations`` for a call of several steps) in one transaction on
the engine's writer thread, or on one read snapshot. ``postgres.backend`` is the other
implementation of the same methods; ``store.Backend`` names the pair.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import anyio.to_thread

from threadline.config import Config
from threadline.storage import (
    compaction,
    context,
    filters,
    indexing,
    operations,
    reading,
    records,
    schema,
    search,
    sessions,
    transfer,
    tree,
)
from threadline.storage.engine import Database
from threadline.storage.errors import Refused, StoreError
from threadline.storage.models import (
    AppendResult,
    BlockUsage,
    Branch,
    CompactionPlan,
    CompactionResult,
    ContextBlock,
    ContextView,
    Deleted,
    History,
    HistoryDelta,
    Message,
    Pruned,
    SearchResults,
    SessionInfo,
    SessionList,
    UsageTotals,
)
from threadline.storage.validate import Encoded

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")


class SQLiteBackend:
    """One user's SQLite file: open with ``await SQLiteBackend.open(path, config)``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.config = db.config
        self.path: Path | None = db.path
        self._searcher = search.Searcher(db.config)

    @classmethod
    async def open(cls, path: Path, config: Config) -> SQLiteBackend:
        writer = await anyio.to_thread.run_sync(schema.open_writer, path, config)
        try:
            await anyio.to_thread.run_sync(indexing.backfill_words, writer)
        except BaseException:
            writer.close()
            raise
        return cls(Database(path, config, writer, indexing.index_pending, indexing.newest_pk))

    async def close(self) -> None:
        """Index what waits for search, finish queued writes, close every connection.

        Indexing on close is a courtesy (search sees unindexed messages anyway), so a store
        that cannot be written (read-only, disk full) still closes cleanly.
        """
        if self._db.closed:
            return
        # Shielded: a store closed in a cancelled scope (a failed sibling task, a cancelled
        # request) must still release its connections and the write lock.
        with anyio.CancelScope(shield=True):
            try:
                await self._db.write(indexing.index_pending)
            except StoreError as exc:
                log.warning("%s: search indexing skipped on close: %s", self.path, exc)
            finally:
                await self._db.close()

    def as_user(self, user: str) -> SQLiteBackend:
        raise Refused("a SQLite store holds one user's sessions; open that user's file instead")

    async def announce(self, message: str) -> None:
        raise Refused("announcements need a database that several servers share (PostgreSQL)")

    async def announcements(self, deliver: Callable[[str], None]) -> None:
        raise Refused("announcements need a database that several servers share (PostgreSQL)")

    def observe_commits(self, observer: Callable[[int], None] | None) -> None:
        self._db.on_commit = observer

    async def _w(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` as one write transaction."""
        return await self._db.write(lambda conn: fn(conn, *args, **kwargs))

    async def _r(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on one read snapshot."""
        return await self._db.read(lambda conn: fn(conn, *args, **kwargs))

    # -- sessions -----------------------------------------------------------------------

    async def create_session(
        self,
        title: str | None,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        batch: Encoded,
    ) -> SessionInfo:
        config = self.config
        return await self._w(operations.create_session, config, title, session_id, metadata, batch)

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._r(sessions.info, self.config, session_id)

    async def list_sessions(
        self, limit: int, cursor: str | None, filters: filters.Filters
    ) -> SessionList:
        return await self._r(sessions.listing, self.config, limit, cursor, filters)

    async def rename_session(
        self, session_id: str, title: str | None, metadata: dict[str, Any] | None
    ) -> SessionInfo:
        return await self._w(operations.rename_session, self.config, session_id, title, metadata)

    async def delete_session(self, session_id: str) -> Deleted:
        return await self._w(operations.delete_session, session_id)

    async def prune(self, filters: filters.Filters, dry_run: bool) -> Pruned:
        """Delete the sessions ``filters`` choose, then VACUUM (writes wait while it runs)."""
        before = await anyio.to_thread.run_sync(self._db.size)
        if dry_run:
            chosen = await self._r(sessions.prune, filters, True)
        else:
            chosen = await self._w(sessions.prune, filters, False)
            if chosen[0]:
                await anyio.to_thread.run_sync(self._db.vacuum_sync)
        after = before if dry_run else await anyio.to_thread.run_sync(self._db.size)
        return Pruned.model_construct(
            sessions=chosen[0],
            messages=chosen[1],
            dry_run=dry_run,
            bytes_before=before,
            bytes_after=after,
        )

    async def fork_session(
        self, session_id: str, message_id: str | None, title: str | None
    ) -> SessionInfo:
        # A fork adds its whole path to the unindexed tail at once: a chunk indexed along would
        # not shorten that tail noticeably, and at a million messages the FTS5 merges it sets
        # off were a third of the fork's time. The copies are indexed when writes pause.
        return await self._db.write(
            lambda conn: operations.fork_session(conn, self.config, session_id, message_id, title),
            index_along=False,  # see above
        )

    async def record_usage(
        self,
        session_id: str,
        input_tokens: int,
        output_tokens: int,
        cost: float | None,
        model: str | None,
    ) -> UsageTotals:
        return await self._w(
            sessions.record_usage, session_id, input_tokens, output_tokens, cost, model
        )

    # -- messages -----------------------------------------------------------------------

    async def append_messages(
        self, session_id: str, batch: Encoded, parent_id: Any, expected_head: Any
    ) -> AppendResult:
        return await self._w(tree.append, self.config, session_id, batch, parent_id, expected_head)

    async def get_history(self, session_id: str, page: dict[str, Any]) -> History:
        return await self._r(reading.history, session_id, **page)

    async def get_history_and_branches(
        self, session_id: str, page: dict[str, Any]
    ) -> tuple[History, list[Branch]]:
        return await self._r(operations.history_and_branches, session_id, page)

    async def history_since(self, session_id: str, revision: str | None) -> HistoryDelta:
        return await self._r(reading.since, session_id, revision)

    async def list_branches(self, session_id: str) -> list[Branch]:
        return await self._r(tree.branches, session_id)

    async def set_head(self, session_id: str, message_id: str, expected_head: Any) -> SessionInfo:
        return await self._w(
            operations.set_head, self.config, session_id, message_id, expected_head
        )

    async def delete_messages(self, session_id: str, message_id: str) -> Deleted:
        return await self._w(operations.delete_messages, self.config, session_id, message_id)

    async def clear_session(self, session_id: str, expected_head: Any) -> Deleted:
        return await self._w(operations.clear_session, self.config, session_id, expected_head)

    async def pop_message(self, session_id: str) -> Message | None:
        return await self._w(tree.pop, session_id)

    # -- compaction ---------------------------------------------------------------------

    async def plan_compaction(
        self, session_id: str, keep_first: int | None, keep_last: int | None
    ) -> CompactionPlan:
        return await self._r(compaction.plan, self.config, session_id, keep_first, keep_last)

    async def compact_session(
        self,
        session_id: str,
        summary: str,
        keep_first: int | None,
        keep_last: int | None,
        split: bool,
        expected_head: Any,
    ) -> CompactionResult:
        return await self._w(
            compaction.compact,
            self.config,
            session_id,
            summary,
            keep_first,
            keep_last,
            split,
            expected_head,
        )

    # -- context ------------------------------------------------------------------------

    async def update_context(
        self,
        session_id: str | None,
        label: str,
        content: str,
        mode: Literal["replace", "append"],
    ) -> BlockUsage:
        return await self._w(context.update, self.config, session_id, label, content, mode)

    async def get_context(self, session_id: str, refresh: bool) -> ContextView:
        if refresh:
            return await self._w(operations.refreshed_context, self.config, session_id)
        return await self._r(context.view, self.config, session_id)

    async def get_user_context(self) -> list[ContextBlock]:
        return await self._r(operations.user_context, self.config)

    # -- search -------------------------------------------------------------------------

    async def session_search(
        self, query: str, limit: int, cursor: str | None, options: dict[str, Any]
    ) -> SearchResults:
        return await self._r(self._searcher.search, query, limit=limit, cursor=cursor, **options)

    # -- export and import --------------------------------------------------------------

    async def export(self, sink: records.Sink, session_ids: list[str] | None) -> records.Header:
        return await self._r(transfer.export, sink, session_ids)

    async def export_session(self, session_id: str) -> records.SessionRecord:
        return await self._r(transfer.dump_session, session_id)

    async def import_session(self, record: records.SessionRecord) -> records.ImportedSession:
        return await self._w(transfer.load_session, record)

    async def user_block_conflicts(self, blocks: list[records.BlockRecord]) -> list[str]:
        return await self._r(transfer.block_conflicts, blocks)

    async def import_user_blocks(self, blocks: list[records.BlockRecord]) -> int:
        return await self._w(transfer.load_user_blocks, blocks)

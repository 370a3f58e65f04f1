"""``Store``: the async API over one user's SQLite file.

Every method resolves everything from its arguments: there is no current session. Each call is
one trip to a database thread: writes are one group-committed ``BEGIN IMMEDIATE`` transaction,
reads one snapshot on a reader connection.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from threadline.config import Config
from threadline.storage import (
    compaction,
    context,
    indexing,
    operations,
    reading,
    records,
    schema,
    scope,
    search,
    sessions,
    transfer,
    tree,
    validate,
)
from threadline.storage.engine import Database
from threadline.storage.errors import InvalidInput, StoreError
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
    MessageIn,
    Pruned,
    SearchResults,
    SessionInfo,
    SessionList,
    UsageTotals,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")
Messages = Sequence[MessageIn | dict[str, Any]]


class Store:
    """Sessions, messages, context blocks, search and usage for one user, in one SQLite file.

    Open with ``store = await Store.open(path)`` and ``await store.close()``, or
    ``async with Store.open(path) as store:``.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.config = db.config
        self.path = db.path
        self._searcher = search.Searcher(db.config)

    @classmethod
    def open(cls, path: str | Path, config: Config | None = None) -> _Opening:
        return _Opening(Path(path), config or Config())

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

    def observe_commits(self, observer: Callable[[int], None] | None) -> None:
        """Call ``observer(n)`` after each group commit with the number of writes it carried
        (None stops it). It runs in the writer thread, so it must be quick and thread-safe
        (``list.append`` is); benchmarks use it to see how writes group."""
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
        title: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        messages: Messages | None = None,
    ) -> SessionInfo:
        """Create a session (id chosen or generated), optionally seeded with messages."""
        config = self.config
        batch = (
            validate.encode(validate.messages(messages, config.limits), config) if messages else []
        )
        return await self._w(operations.create_session, config, title, session_id, metadata, batch)

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._r(sessions.info, config=self.config, session_id=session_id)

    async def list_sessions(
        self,
        limit: int = 50,
        cursor: str | None = None,
        status: Literal["active", "ended"] | None = None,
        *,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_after: str | None = None,
        created_before: str | None = None,
        updated_after: str | None = None,
        updated_before: str | None = None,
    ) -> SessionList:
        """Sessions, most recently active first, paged by ``next_cursor``; every filter given
        must hold: ``status``; ``title`` (a part of it, any case); ``metadata`` (each key
        holds that string, number or boolean); created or updated ``after`` (from) or
        ``before`` a time (ISO 8601)."""
        filters = sessions.Filters(
            status, title, metadata, created_after, created_before, updated_after, updated_before
        )
        return await self._r(
            sessions.listing, config=self.config, limit=limit, cursor=cursor, filters=filters
        )

    async def rename_session(
        self,
        session_id: str,
        title: str | None = tree.OMITTED,
        metadata: dict[str, Any] | None = None,
    ) -> SessionInfo:
        """Change the title (``None`` removes it; omitted keeps it) and, if given, replace
        the metadata."""
        return await self._w(operations.rename_session, self.config, session_id, title, metadata)

    async def delete_session(self, session_id: str) -> Deleted:
        """Delete a session with its messages, compactions, usage and session blocks."""
        return await self._w(operations.delete_session, session_id)

    async def prune(
        self,
        *,
        ended_before: str | None = None,
        inactive_before: str | None = None,
        status: Literal["active", "ended"] | None = None,
        dry_run: bool = False,
    ) -> Pruned:
        """Delete whole sessions: ended (split) and last active before ``ended_before``, or
        last active before ``inactive_before`` (``status`` narrows it); then give the space
        back (VACUUM: writes wait while it runs). ``dry_run`` only says what would go."""
        if (ended_before is None) == (inactive_before is None):
            raise InvalidInput("ended_before", "give ended_before or inactive_before (one)")
        if ended_before is not None and status == "active":
            raise InvalidInput("status", "ended_before prunes ended sessions only")
        filters = sessions.Filters(
            status="ended" if ended_before is not None else status,
            updated_before=ended_before or inactive_before,
        )
        before = await anyio.to_thread.run_sync(self._db.size)
        if dry_run:
            chosen: tuple[list[str], int] = await self._r(sessions.prune, filters, True)
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
        self, session_id: str, message_id: str | None = None, title: str | None = None
    ) -> SessionInfo:
        """A new session holding a copy of the path up to ``message_id`` (default: the head)."""
        # A fork adds its whole path to the unindexed tail at once: a chunk indexed along would
        # not shorten that tail noticeably, and at a million messages the FTS5 merges it sets
        # off were a third of the fork's time. The copies are indexed when writes pause.
        return await self._db.write(
            lambda conn: operations.fork_session(conn, self.config, session_id, message_id, title),
            index_along=False,  # see above
        )

    # -- messages -----------------------------------------------------------------------

    async def append_messages(
        self,
        session_id: str,
        messages: Messages,
        parent_id: str | None = tree.OMITTED,
        *,
        expected_head: str | None = tree.OMITTED,
    ) -> AppendResult:
        """Append messages atomically, to the head or (``parent_id``) as a new branch.

        Omit ``parent_id`` to extend the head; pass a message id to branch there (an edit or
        a regeneration); pass ``None`` to start a new root. The head moves to the last message.
        A message whose ``id`` is already stored with the same content is a no-op.

        ``expected_head`` (a message id, or None for a session without messages) appends only
        if the head is still that: otherwise ``HeadMoved`` (a ``Conflict``) names the head and
        nothing changes, so two workers serving one thread cannot interleave their turns.
        """
        batch = validate.encode(validate.messages(messages, self.config.limits), self.config)
        return await self._w(tree.append, self.config, session_id, batch, parent_id, expected_head)

    async def get_history(
        self,
        session_id: str,
        leaf_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        include_compacted: bool = False,
        truncate_tool_output: int | None = None,
    ) -> History:
        """The path from the root to the head (or ``leaf_id``), oldest first.

        ``limit`` returns the newest messages only; pass ``next_before`` as ``before`` for the
        page before them. Compacted ranges read as their summary unless ``include_compacted``.
        ``truncate_tool_output`` shortens tool results older than the latest user turn.
        """
        return await self._r(
            reading.history,
            session_id,
            leaf_id=leaf_id,
            limit=limit,
            before=before,
            include_compacted=include_compacted,
            truncate_tool_output=truncate_tool_output,
        )

    async def get_history_and_branches(
        self, session_id: str, **page: Any
    ) -> tuple[History, list[Branch]]:
        """``get_history(session_id, **page)`` and ``list_branches``, read from one snapshot
        (so the page and the branch list agree even while another writer appends)."""
        return await self._r(operations.history_and_branches, session_id, page)

    async def history_since(self, session_id: str, revision: str | None = None) -> HistoryDelta:
        """What changed in the whole history (as ``get_history`` reads it) since the read
        that returned ``revision``: the messages after it, or, when the history did not just
        grow (a compaction, a pop, another branch), all of it with ``reset``. Without
        ``revision``, all of it. For a caller that keeps the thread in memory and reads it
        often (``ThreadlineSession``): a read that finds nothing new reads no message."""
        if revision is not None and (not isinstance(revision, str) or len(revision) > 64):
            raise InvalidInput("revision", "must be a revision from an earlier read, or None")
        return await self._r(reading.since, session_id, revision)

    async def list_branches(self, session_id: str) -> list[Branch]:
        """Every leaf of the session's message tree, oldest first; usually one is the head."""
        return await self._r(tree.branches, session_id=session_id)

    async def set_head(
        self, session_id: str, message_id: str, *, expected_head: str | None = tree.OMITTED
    ) -> SessionInfo:
        """Move the head, so history and the next append follow ``message_id``'s path
        (guarded by ``expected_head`` as ``append_messages`` is)."""
        return await self._w(
            operations.set_head, self.config, session_id, message_id, expected_head
        )

    async def delete_messages(self, session_id: str, message_id: str) -> Deleted:
        """Delete a message and every message below it; the head moves up if it was there."""
        return await self._w(operations.delete_messages, self.config, session_id, message_id)

    async def clear_session(
        self, session_id: str, *, expected_head: str | None = tree.OMITTED
    ) -> Deleted:
        """Empty the thread: every message goes (with its compactions), the session, its
        context blocks and its usage totals stay, and its frozen prompt is rendered anew."""
        return await self._w(operations.clear_session, self.config, session_id, expected_head)

    async def pop_message(self, session_id: str) -> Message | None:
        """Take the newest message (the head) off the session and return it, in one write;
        None when the session has none."""
        return await self._w(tree.pop, session_id)

    # -- compaction ---------------------------------------------------------------------

    async def plan_compaction(
        self, session_id: str, keep_first: int | None = None, keep_last: int | None = None
    ) -> CompactionPlan:
        """The range ``compact_session`` would replace now, with its messages, to summarise."""
        return await self._r(
            compaction.plan,
            config=self.config,
            session_id=session_id,
            keep_first=keep_first,
            keep_last=keep_last,
        )

    async def compact_session(
        self,
        session_id: str,
        summary: str,
        keep_first: int | None = None,
        keep_last: int | None = None,
        split: bool = False,
        *,
        expected_head: str | None = tree.OMITTED,
    ) -> CompactionResult:
        """Replace the compactable range with ``summary`` when reading (nothing is deleted).

        ``split=True`` also ends the session and starts a child seeded with the summary and the
        protected tail (its id is ``new_session_id``). ``expected_head`` guards it as it
        guards ``append_messages``: a summary written from a stale read is refused.
        """
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
        mode: Literal["replace", "append"] = "replace",
    ) -> BlockUsage:
        """Replace or append to a context block; returns how full it is.

        ``session_id`` may be ``None`` for a user-scoped block (shared by every session).
        """
        return await self._w(context.update, self.config, session_id, label, content, mode)

    async def get_context(self, session_id: str, refresh: bool = False) -> ContextView:
        """The session's blocks and its frozen system prompt (re-rendered first if ``refresh``)."""
        if refresh:
            return await self._w(operations.refreshed_context, self.config, session_id)
        return await self._r(context.view, self.config, session_id)

    async def get_user_context(self) -> list[ContextBlock]:
        """The user-scoped blocks (shared by every session), without naming a session."""
        return await self._r(operations.user_context, self.config)

    # -- search and usage ---------------------------------------------------------------

    async def session_search(
        self,
        query: str,
        session_id: str | None = None,
        role: Literal["system", "user", "assistant", "tool"] | None = None,
        limit: int = 10,
        cursor: str | None = None,
        *,
        after: str | None = None,
        before: str | None = None,
        order: scope.Order = "relevance",
        context: int = 0,
    ) -> SearchResults:
        """Search every session (or one): ranked by the query's words, or exact when the
        query quotes a phrase (see ``storage/search.py``).

        ``after``/``before``: ISO 8601 bounds on the message time (from, until). ``order``:
        relevance, newest or oldest first. ``context``: how many messages before and after
        each hit on its path to include (0-5).
        """
        validate.limit(limit, "limit", 1, 50)
        return await self._r(
            self._searcher.search,
            query,
            session_id=session_id,
            role=role,
            after=after,
            before=before,
            order=order,
            context=context,
            limit=limit,
            cursor=cursor,
        )

    async def record_usage(
        self,
        session_id: str,
        input_tokens: int,
        output_tokens: int,
        cost: float | None = None,
        model: str | None = None,
    ) -> UsageTotals:
        """Add one turn's token and cost usage to the session's totals."""
        return await self._w(
            sessions.record_usage, session_id, input_tokens, output_tokens, cost, model
        )

    # -- export and import --------------------------------------------------------------

    async def export(
        self, sink: records.Sink, session_ids: list[str] | None = None
    ) -> records.Header:
        """Feed ``sink`` the sessions (default: all) and user blocks, from one snapshot."""
        return await self._r(transfer.export, sink, session_ids)

    async def export_session(self, session_id: str) -> records.SessionRecord:
        """One session as it is stored: every branch, compaction, usage record and block."""
        return await self._r(transfer.dump_session, session_id)

    async def import_session(self, record: records.SessionRecord) -> records.ImportedSession:
        """Restore an exported session exactly, in one transaction; its id must be free."""
        return await self._w(transfer.load_session, record)

    async def user_block_conflicts(self, blocks: list[records.BlockRecord]) -> list[str]:
        """Labels of user blocks stored here with other content than ``blocks``."""
        return await self._r(transfer.block_conflicts, blocks)

    async def import_user_blocks(self, blocks: list[records.BlockRecord]) -> int:
        """Store the user blocks this store lacks; refuse all if any differs. Returns how many."""
        return await self._w(transfer.load_user_blocks, blocks)


class _Opening:
    """``Store.open(...)``: awaitable, and usable as ``async with``."""

    def __init__(self, path: Path, config: Config) -> None:
        self._path = path
        self._config = config
        self._store: Store | None = None

    async def _open(self) -> Store:
        config = self._config
        writer = await anyio.to_thread.run_sync(schema.open_writer, self._path, config)
        try:
            await anyio.to_thread.run_sync(indexing.backfill_words, writer)
        except BaseException:
            writer.close()
            raise
        return Store(
            Database(self._path, config, writer, indexing.index_pending, indexing.newest_pk)
        )

    def __await__(self) -> Generator[Any, None, Store]:
        return self._open().__await__()

    async def __aenter__(self) -> Store:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()

"""The PostgreSQL backend: each ``Store`` call as one transaction of one user's.

The same methods as ``storage/sqlite.py``'s ``SQLiteBackend``, taking the same validated
arguments and returning the same models. Each runs one function of ``sessions``, ``tree`` or
``context`` in ``Database.transaction(user)``, through a ``Tx`` that binds the user to every
statement. Search is not on this backend yet (issue 16 continues): it refuses with
``Unsupported``, changing nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from threadline.config import Config
from threadline.storage import records
from threadline.storage.errors import Refused
from threadline.storage.filters import Filters
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
from threadline.storage.postgres import compaction, context, reading, sessions, transfer, tree
from threadline.storage.postgres.engine import Database
from threadline.storage.postgres.rows import Tx, message_id
from threadline.storage.validate import Encoded

T = TypeVar("T")
P = ParamSpec("P")


class Unsupported(Refused):
    """The operation is not available on the PostgreSQL backend yet; nothing changed."""

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"{operation} is not available on the PostgreSQL backend yet; use a SQLite store for it"
        )


# The channel of ``Store.announce``: one per database, so every replica hears every other.
CHANNEL = "threadline_announcements"


class PostgresBackend:
    """One user's view of a PostgreSQL database: open with ``await
    PostgresBackend.open(url, user, config)``."""

    path: Path | None = None

    def __init__(self, db: Database, user: str, config: Config, owned: bool) -> None:
        self._db = db
        self.user = user
        self.config = config
        self._owned = owned

    @classmethod
    async def open(cls, url: str, user: str, config: Config) -> PostgresBackend:
        """Connect (bringing the schema up to date) and act as ``user``; ``close`` closes
        the pool."""
        return cls(await Database.open(url), user, config, owned=True)

    def as_user(self, user: str) -> PostgresBackend:
        return PostgresBackend(self._db, user, self.config, owned=False)

    async def close(self) -> None:
        if self._owned:
            await self._db.close()

    async def announce(self, message: str) -> None:
        await self._db.notify(CHANNEL, message)

    async def announcements(self, deliver: Callable[[str], None]) -> None:
        await self._db.listen(CHANNEL, deliver)

    def observe_commits(self, observer: Callable[[int], None] | None) -> None:
        raise Unsupported("observing group commits (a SQLite writer's)")

    async def _tx(
        self, fn: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(tx, *args, **kwargs)`` in one transaction of the user's."""
        async with self._db.transaction(self.user) as conn:
            return await fn(Tx(conn, self.user), *args, **kwargs)

    async def _snapshot(
        self, fn: Callable[Concatenate[Tx, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(tx, *args, **kwargs)`` reading one snapshot throughout."""
        async with self._db.transaction(self.user, snapshot=True) as conn:
            return await fn(Tx(conn, self.user), *args, **kwargs)

    # -- sessions -----------------------------------------------------------------------

    async def create_session(
        self,
        title: str | None,
        session_id: str | None,
        metadata: dict[str, Any] | None,
        batch: Encoded,
    ) -> SessionInfo:
        async def run(tx: Tx) -> SessionInfo:
            sid = await sessions.create(tx, self.config, title, session_id, metadata)
            if batch:
                await tree.append(tx, self.config, sid, batch)
            return await sessions.info(tx, self.config, sid)

        return await self._tx(run)

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._tx(sessions.info, self.config, session_id)

    async def list_sessions(self, limit: int, cursor: str | None, filters: Filters) -> SessionList:
        return await self._tx(sessions.listing, self.config, limit, cursor, filters)

    async def rename_session(
        self, session_id: str, title: str | None, metadata: dict[str, Any] | None
    ) -> SessionInfo:
        async def run(tx: Tx) -> SessionInfo:
            await sessions.rename(tx, self.config, session_id, title, metadata)
            return await sessions.info(tx, self.config, session_id)

        return await self._tx(run)

    async def delete_session(self, session_id: str) -> Deleted:
        count = await self._tx(sessions.delete, session_id)
        return Deleted.model_construct(session_id=session_id, messages_deleted=count, head_id=None)

    async def prune(self, filters: Filters, dry_run: bool) -> Pruned:
        """Delete the sessions ``filters`` choose; the sizes are the user's rows, before and
        after (PostgreSQL reuses the space; autovacuum returns it)."""

        async def run(tx: Tx) -> Pruned:
            before = await sessions.size(tx)
            chosen, messages = await sessions.prune(tx, filters, dry_run)
            return Pruned.model_construct(
                sessions=chosen,
                messages=messages,
                dry_run=dry_run,
                bytes_before=before,
                bytes_after=before if dry_run else await sessions.size(tx),
            )

        return await self._tx(run)

    async def fork_session(
        self, session_id: str, message_id: str | None, title: str | None
    ) -> SessionInfo:
        async def run(tx: Tx) -> SessionInfo:
            child = await sessions.fork(tx, self.config, session_id, message_id, title)
            return await sessions.info(tx, self.config, child)

        return await self._tx(run)

    async def record_usage(
        self,
        session_id: str,
        input_tokens: int,
        output_tokens: int,
        cost: float | None,
        model: str | None,
    ) -> UsageTotals:
        return await self._tx(
            sessions.record_usage, session_id, input_tokens, output_tokens, cost, model
        )

    # -- messages -----------------------------------------------------------------------

    async def append_messages(
        self, session_id: str, batch: Encoded, parent_id: Any, expected_head: Any
    ) -> AppendResult:
        return await self._tx(tree.append, self.config, session_id, batch, parent_id, expected_head)

    async def get_history(self, session_id: str, page: dict[str, Any]) -> History:
        return await self._tx(reading.history, session_id, **page)

    async def get_history_and_branches(
        self, session_id: str, page: dict[str, Any]
    ) -> tuple[History, list[Branch]]:
        async def run(tx: Tx) -> tuple[History, list[Branch]]:
            return await reading.history(tx, session_id, **page), await tree.branches(
                tx, session_id
            )

        return await self._tx(run)

    async def history_since(self, session_id: str, revision: str | None) -> HistoryDelta:
        return await self._tx(reading.since, session_id, revision)

    async def list_branches(self, session_id: str) -> list[Branch]:
        return await self._tx(tree.branches, session_id)

    async def set_head(self, session_id: str, message_id: str, expected_head: Any) -> SessionInfo:
        async def run(tx: Tx) -> SessionInfo:
            await tree.set_head(tx, session_id, message_id, expected_head)
            return await sessions.info(tx, self.config, session_id)

        return await self._tx(run)

    async def delete_messages(self, session_id: str, message_id_: str) -> Deleted:
        async def run(tx: Tx) -> Deleted:
            count, head_pk = await tree.delete_subtree(tx, session_id, message_id_)
            head_id = None
            if head_pk is None:
                await context.freeze(tx, self.config, session_id)  # the session is cleared
            else:
                head_id = await message_id(tx, head_pk)
            return Deleted.model_construct(
                session_id=session_id, messages_deleted=count, head_id=head_id
            )

        return await self._tx(run)

    async def clear_session(self, session_id: str, expected_head: Any) -> Deleted:
        async def run(tx: Tx) -> Deleted:
            count = await tree.clear(tx, session_id, expected_head)
            await context.freeze(tx, self.config, session_id)
            return Deleted.model_construct(
                session_id=session_id, messages_deleted=count, head_id=None
            )

        return await self._tx(run)

    async def pop_message(self, session_id: str) -> Message | None:
        return await self._tx(tree.pop, session_id)

    # -- compaction ---------------------------------------------------------------------

    async def plan_compaction(
        self, session_id: str, keep_first: int | None, keep_last: int | None
    ) -> CompactionPlan:
        return await self._tx(compaction.plan, self.config, session_id, keep_first, keep_last)

    async def compact_session(
        self,
        session_id: str,
        summary: str,
        keep_first: int | None,
        keep_last: int | None,
        split: bool,
        expected_head: Any,
    ) -> CompactionResult:
        return await self._tx(
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
        return await self._tx(context.update, self.config, session_id, label, content, mode)

    async def get_context(self, session_id: str, refresh: bool) -> ContextView:
        return await self._tx(context.view, self.config, session_id, refresh)

    async def get_user_context(self) -> list[ContextBlock]:
        async def run(tx: Tx) -> list[ContextBlock]:
            return [b for b in await context.blocks(tx, self.config, "") if b.scope == "user"]

        return await self._tx(run)

    # -- search -------------------------------------------------------------------------

    async def session_search(
        self, query: str, limit: int, cursor: str | None, options: dict[str, Any]
    ) -> SearchResults:
        raise Unsupported("session_search")

    # -- export and import --------------------------------------------------------------

    async def export(self, sink: records.Sink, session_ids: list[str] | None) -> records.Header:
        return await self._snapshot(transfer.export, sink, session_ids)

    async def export_session(self, session_id: str) -> records.SessionRecord:
        return await self._snapshot(transfer.dump_session, session_id)

    async def import_session(self, record: records.SessionRecord) -> records.ImportedSession:
        return await self._tx(transfer.load_session, record)

    async def user_block_conflicts(self, blocks: list[records.BlockRecord]) -> list[str]:
        return await self._tx(transfer.block_conflicts, blocks)

    async def import_user_blocks(self, blocks: list[records.BlockRecord]) -> int:
        return await self._tx(transfer.load_user_blocks, blocks)

"""``Store``: the async API over one user's store, in a SQLite file or a PostgreSQL database.

Every method resolves everything from its arguments: there is no current session. A method
checks its arguments (what the rules of ``validate`` say, and a message's stored form,
encoded here on the caller's side) and hands the call to the store's backend: ``sqlite`` (one
file per user; a write is one group-committed ``BEGIN IMMEDIATE`` transaction, a read one
snapshot on a reader connection) or ``postgres`` (one database for many users; each call one
transaction scoped to the user). The backends return the same models and raise the same
errors.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from threadline.config import Config
from threadline.storage import records, scope, tree, validate
from threadline.storage.errors import InvalidInput
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
    MessageIn,
    Pruned,
    SearchResults,
    SessionInfo,
    SessionList,
    UsageTotals,
)
from threadline.storage.sqlite import SQLiteBackend

if TYPE_CHECKING:  # imported when opened: asyncpg is an optional extra
    from threadline.storage.postgres.backend import PostgresBackend

Messages = Sequence[MessageIn | dict[str, Any]]
Backend: TypeAlias = "SQLiteBackend | PostgresBackend"

# What names a PostgreSQL database rather than a file.
URL_SCHEMES = ("postgresql://", "postgres://")


class Store:
    """Sessions, messages, context blocks, search and usage for one user.

    Open with ``store = await Store.open(path)`` and ``await store.close()``, or
    ``async with Store.open(path) as store:``. A ``postgresql://`` URL instead of a path opens
    a PostgreSQL database, as the user ``user`` (one database holds many users, each seeing
    only their own sessions).
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.config = backend.config
        self.path = backend.path

    @classmethod
    def open(
        cls, path: str | Path, config: Config | None = None, *, user: str = "local"
    ) -> _Opening:
        return _Opening(path, config or Config(), user)

    async def close(self) -> None:
        """Finish queued writes and close every connection (on SQLite, search indexing is
        brought up to date first, where the file can still be written)."""
        await self._backend.close()

    def as_user(self, user: str) -> Store:
        """The same PostgreSQL database as another user, sharing this store's connections
        (closing it closes nothing). A SQLite file holds one user: refused there."""
        validate.text(user, "user", 200, allow_empty=False)
        return Store(self._backend.as_user(user))

    async def announce(self, message: str) -> None:
        """Tell every process serving the same PostgreSQL database ``message`` (at most about
        8,000 bytes), through ``announcements``; servers use it to pass resource-change
        events between replicas. A SQLite store refuses it."""
        if not isinstance(message, str) or len(message.encode("utf-8", "replace")) > 7_900:
            raise InvalidInput("message", "must be a string of at most 7,900 bytes")
        await self._backend.announce(message)

    async def announcements(self, deliver: Callable[[str], None]) -> None:
        """Call ``deliver(message)`` for every ``announce`` of any process on the same
        database (this one's too), until cancelled; it keeps listening across outages."""
        await self._backend.announcements(deliver)

    def observe_commits(self, observer: Callable[[int], None] | None) -> None:
        """Call ``observer(n)`` after each group commit with the number of writes it carried
        (None stops it). It runs in the writer thread, so it must be quick and thread-safe
        (``list.append`` is); benchmarks use it to see how writes group."""
        self._backend.observe_commits(observer)

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
        return await self._backend.create_session(title, session_id, metadata, batch)

    async def get_session(self, session_id: str) -> SessionInfo:
        return await self._backend.get_session(session_id)

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
        filters = Filters(
            status, title, metadata, created_after, created_before, updated_after, updated_before
        )
        return await self._backend.list_sessions(limit, cursor, filters)

    async def rename_session(
        self,
        session_id: str,
        title: str | None = tree.OMITTED,
        metadata: dict[str, Any] | None = None,
    ) -> SessionInfo:
        """Change the title (``None`` removes it; omitted keeps it) and, if given, replace
        the metadata."""
        return await self._backend.rename_session(session_id, title, metadata)

    async def delete_session(self, session_id: str) -> Deleted:
        """Delete a session with its messages, compactions, usage and session blocks."""
        return await self._backend.delete_session(session_id)

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
        filters = Filters(
            status="ended" if ended_before is not None else status,
            updated_before=ended_before or inactive_before,
        )
        return await self._backend.prune(filters, dry_run)

    async def fork_session(
        self, session_id: str, message_id: str | None = None, title: str | None = None
    ) -> SessionInfo:
        """A new session holding a copy of the path up to ``message_id`` (default: the head)."""
        return await self._backend.fork_session(session_id, message_id, title)

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
        return await self._backend.append_messages(session_id, batch, parent_id, expected_head)

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
        page = {
            "leaf_id": leaf_id,
            "limit": limit,
            "before": before,
            "include_compacted": include_compacted,
            "truncate_tool_output": truncate_tool_output,
        }
        return await self._backend.get_history(session_id, page)

    async def get_history_and_branches(
        self, session_id: str, **page: Any
    ) -> tuple[History, list[Branch]]:
        """``get_history(session_id, **page)`` and ``list_branches``, read from one snapshot
        (so the page and the branch list agree even while another writer appends)."""
        return await self._backend.get_history_and_branches(session_id, page)

    async def history_since(self, session_id: str, revision: str | None = None) -> HistoryDelta:
        """What changed in the whole history (as ``get_history`` reads it) since the read
        that returned ``revision``: the messages after it, or, when the history did not just
        grow (a compaction, a pop, another branch), all of it with ``reset``. Without
        ``revision``, all of it. For a caller that keeps the thread in memory and reads it
        often (``ThreadlineSession``): a read that finds nothing new reads no message."""
        if revision is not None and (not isinstance(revision, str) or len(revision) > 64):
            raise InvalidInput("revision", "must be a revision from an earlier read, or None")
        return await self._backend.history_since(session_id, revision)

    async def list_branches(self, session_id: str) -> list[Branch]:
        """Every leaf of the session's message tree, oldest first; usually one is the head."""
        return await self._backend.list_branches(session_id)

    async def set_head(
        self, session_id: str, message_id: str, *, expected_head: str | None = tree.OMITTED
    ) -> SessionInfo:
        """Move the head, so history and the next append follow ``message_id``'s path
        (guarded by ``expected_head`` as ``append_messages`` is)."""
        return await self._backend.set_head(session_id, message_id, expected_head)

    async def delete_messages(self, session_id: str, message_id: str) -> Deleted:
        """Delete a message and every message below it; the head moves up if it was there."""
        return await self._backend.delete_messages(session_id, message_id)

    async def clear_session(
        self, session_id: str, *, expected_head: str | None = tree.OMITTED
    ) -> Deleted:
        """Empty the thread: every message goes (with its compactions), the session, its
        context blocks and its usage totals stay, and its frozen prompt is rendered anew."""
        return await self._backend.clear_session(session_id, expected_head)

    async def pop_message(self, session_id: str) -> Message | None:
        """Take the newest message (the head) off the session and return it, in one write;
        None when the session has none."""
        return await self._backend.pop_message(session_id)

    # -- compaction ---------------------------------------------------------------------

    async def plan_compaction(
        self, session_id: str, keep_first: int | None = None, keep_last: int | None = None
    ) -> CompactionPlan:
        """The range ``compact_session`` would replace now, with its messages, to summarise."""
        return await self._backend.plan_compaction(session_id, keep_first, keep_last)

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
        return await self._backend.compact_session(
            session_id, summary, keep_first, keep_last, split, expected_head
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
        return await self._backend.update_context(session_id, label, content, mode)

    async def get_context(self, session_id: str, refresh: bool = False) -> ContextView:
        """The session's blocks and its frozen system prompt (re-rendered first if ``refresh``)."""
        return await self._backend.get_context(session_id, refresh)

    async def get_user_context(self) -> list[ContextBlock]:
        """The user-scoped blocks (shared by every session), without naming a session."""
        return await self._backend.get_user_context()

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
        options = {
            "session_id": session_id,
            "role": role,
            "after": after,
            "before": before,
            "order": order,
            "context": context,
        }
        return await self._backend.session_search(query, limit, cursor, options)

    async def record_usage(
        self,
        session_id: str,
        input_tokens: int,
        output_tokens: int,
        cost: float | None = None,
        model: str | None = None,
    ) -> UsageTotals:
        """Add one turn's token and cost usage to the session's totals."""
        return await self._backend.record_usage(
            session_id, input_tokens, output_tokens, cost, model
        )

    # -- export and import --------------------------------------------------------------

    async def export(
        self, sink: records.Sink, session_ids: list[str] | None = None
    ) -> records.Header:
        """Feed ``sink`` the sessions (default: all) and user blocks, from one snapshot."""
        return await self._backend.export(sink, session_ids)

    async def export_session(self, session_id: str) -> records.SessionRecord:
        """One session as it is stored: every branch, compaction, usage record and block."""
        return await self._backend.export_session(session_id)

    async def import_session(self, record: records.SessionRecord) -> records.ImportedSession:
        """Restore an exported session exactly, in one transaction; its id must be free."""
        return await self._backend.import_session(record)

    async def user_block_conflicts(self, blocks: list[records.BlockRecord]) -> list[str]:
        """Labels of user blocks stored here with other content than ``blocks``."""
        return await self._backend.user_block_conflicts(blocks)

    async def import_user_blocks(self, blocks: list[records.BlockRecord]) -> int:
        """Store the user blocks this store lacks; refuse all if any differs. Returns how many."""
        return await self._backend.import_user_blocks(blocks)


class _Opening:
    """``Store.open(...)``: awaitable, and usable as ``async with``."""

    def __init__(self, path: str | Path, config: Config, user: str) -> None:
        self._path = path
        self._config = config
        self._user = user
        self._store: Store | None = None

    async def _open(self) -> Store:
        if isinstance(self._path, str) and self._path.startswith(URL_SCHEMES):
            from threadline.storage.postgres.backend import PostgresBackend

            validate.text(self._user, "user", 200, allow_empty=False)
            return Store(await PostgresBackend.open(self._path, self._user, self._config))
        return Store(await SQLiteBackend.open(Path(self._path), self._config))

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

"""One store per user, behind HTTP: the user-to-file mapping and a bounded cache of open stores.

The file of a user is ``users/<first 32 hex digits of sha256(issuer NUL subject)>.db`` inside
the data directory: no character of the identity reaches the file system, so path traversal,
Unicode look-alikes, case folding and reserved names cannot matter. The directory is created
0700 and each file 0600.

Open stores are lent per call and kept in a least-recently-used cache of ``capacity`` entries;
a store is closed when it falls out of the cache or has been idle for ``idle_seconds``, but
never while a call holds it. The config's ``[retention]`` rules run over every user's store
(``server/retention.py``), each lent through the same cache.

With a ``database`` in the config, every user's sessions are in that PostgreSQL database,
keyed by the same 32 hex digits (``paths.user_key``; ``local`` without auth): one pool serves
them all, each request a view of its user's (``Store.as_user``), so any replica serves any
user and nothing is cached; resource events pass between the replicas through the
database's announcements (``attach``). Retention does not run over a database yet.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from mcp.server.subscriptions import ServerEvent

from threadline.config import Config
from threadline.paths import LOCAL_STORE, LOCAL_USER, USERS_DIR, user_file, user_key
from threadline.server import retention
from threadline.server.auth import current_user
from threadline.server.subscriptions import UserScopedBus, decode_event, encode_event
from threadline.storage import Store, StoreError
from threadline.storage.schema import make_directory

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    store: Store
    leases: int = 0
    last_used: float = field(default_factory=anyio.current_time)


class UserStores:
    """The HTTP runtime: lends each request the store of its authenticated user.

    ``authenticated=False`` (loopback development without auth) serves the local user's store,
    the same file stdio uses.
    """

    def __init__(
        self,
        data_dir: Path,
        config: Config,
        *,
        authenticated: bool,
        capacity: int = 64,
        idle_seconds: float = 300.0,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.authenticated = authenticated
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self._open: OrderedDict[Path, _Entry] = OrderedDict()
        self._opening: dict[Path, anyio.Lock] = {}
        self._running = False
        self._database: Store | None = None  # the pool, when the config names a database
        self._bus: UserScopedBus | None = None
        self._origin = secrets.token_hex(8)  # this replica, in the events it passes on

    def _current_path(self) -> Path:
        if not self.authenticated:
            return self.data_dir / LOCAL_STORE
        user = current_user()
        if user is None:  # the auth middleware lets no such request through
            raise StoreError("this request is not authenticated")
        return user_file(self.data_dir, user)

    def store(self) -> AbstractAsyncContextManager[Store]:
        if self.config.database is not None:
            return self._view()
        return self._lend(self._current_path())

    @asynccontextmanager
    async def _view(self) -> AsyncIterator[Store]:
        if self._database is None:
            raise StoreError("the server is not running")
        user = current_user() if self.authenticated else None
        if self.authenticated and user is None:
            raise StoreError("this request is not authenticated")
        yield self._database.as_user(LOCAL_USER if user is None else user_key(user))

    def attach(self, bus: UserScopedBus) -> None:
        """Pass ``bus``'s events to the other replicas on the database, and theirs to it."""
        self._bus = bus

    async def send(self, user: str, event: ServerEvent) -> None:
        if self._database is not None:
            await self._database.announce(encode_event(self._origin, user, event))

    async def _hear(self) -> None:
        """The other replicas' events, handed to this replica's bus in the order they came."""
        assert self._database is not None and self._bus is not None
        bus = self._bus
        inbox, outbox = anyio.create_memory_object_stream[str](1000)

        def heard(message: str) -> None:
            with contextlib.suppress(anyio.WouldBlock):  # a flood is dropped, not queued
                inbox.send_nowait(message)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._database.announcements, heard)
            async for message in outbox:
                found = decode_event(message)
                if found is not None and found[0] != self._origin:
                    await bus.deliver(found[1], found[2])

    def every_store(self) -> list[AbstractAsyncContextManager[Store]]:
        """Every store in the data directory, each lent as a request's is (for retention)."""
        if self.config.database is not None:
            return []
        if not self.authenticated:
            return [self._lend(self.data_dir / LOCAL_STORE)]
        return [self._lend(path) for path in sorted((self.data_dir / USERS_DIR).glob("*.db"))]

    @asynccontextmanager
    async def _lend(self, path: Path) -> AsyncIterator[Store]:
        entry = await self._acquire(path)
        try:
            yield entry.store
        finally:
            entry.leases -= 1
            entry.last_used = anyio.current_time()
            await self._evict()

    async def _acquire(self, path: Path) -> _Entry:
        if not self._running:
            raise StoreError("the server is not running")
        entry = self._open.get(path)
        if entry is None:
            lock = self._opening.setdefault(path, anyio.Lock())
            async with lock:
                entry = self._open.get(path)
                if entry is None:
                    entry = _Entry(await self._open_store(path))
                    self._open[path] = entry
            self._opening.pop(path, None)
        self._open.move_to_end(path)
        entry.leases += 1
        return entry

    async def _open_store(self, path: Path) -> Store:
        """The user's store, opened; a refusal reaches the client without any server path
        (the log keeps it)."""
        try:
            make_directory(path.parent)
            return await Store.open(path, self.config)
        except StoreError as exc:
            log.error("opening a user store failed: %s", exc)
            under = re.escape(str(self.data_dir)) + r"\S*"
            said = re.sub(under, "the data directory", re.sub(under + ": ", "", str(exc)))
            raise StoreError(said) from None

    async def _evict(self, now: float | None = None) -> None:
        """Close idle stores: beyond capacity (least recently used first), or idle too long.

        Entries leave the cache before the awaits that close them, so evictions that overlap
        (calls ending together, the reaper) never close or remove one entry twice.
        """
        doomed = []
        for path, entry in list(self._open.items()):
            over = len(self._open) > self.capacity
            idle = now is not None and now - entry.last_used >= self.idle_seconds
            if entry.leases == 0 and (over or idle) and self._open.get(path) is entry:
                del self._open[path]
                doomed.append(entry)
        for entry in doomed:
            try:
                await entry.store.close()
            except Exception:  # closing is best effort; the cache must keep serving
                log.exception("closing an idle store failed")

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def _reap(self) -> None:
        while True:
            await anyio.sleep(max(0.05, self.idle_seconds / 4))
            await self._evict(now=anyio.current_time())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[UserStores]:
        """Serve while the block runs; then close every store."""
        if self.config.database is not None:
            self._database = await Store.open(self.config.database, self.config, user=LOCAL_USER)
            if self.config.retention.active:
                log.warning("retention does not run over a database yet; prune with the CLI")
        else:
            make_directory(self.data_dir)
        self._running = True
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._reap)
                if self._database is not None and self._bus is not None:
                    tasks.start_soon(self._hear)
                if self.config.retention.active:
                    tasks.start_soon(retention.keep, self.config.retention, self.every_store)
                try:
                    yield self
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                for entry in list(self._open.values()):
                    await entry.store.close()
                self._open.clear()
                if self._database is not None:
                    await self._database.close()
                    self._database = None

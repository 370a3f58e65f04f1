"""The stdio runtime: one local user, one store in the data directory (or, with a
``database``, the local user's sessions in it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType

import anyio

from threadline.config import Config
from threadline.paths import LOCAL_STORE, LOCAL_USER, redacted
from threadline.server import retention
from threadline.storage import Store, StoreError
from threadline.storage.schema import make_directory


class LocalRuntime:
    """Serves the one store of the local user; opened when the server starts (and pruned by
    the config's ``[retention]`` rules while it serves)."""

    def __init__(self, data_dir: Path, config: Config) -> None:
        self.config = config
        self.path = data_dir / LOCAL_STORE
        # What it serves, for the log: the file, or the database (without its password).
        self.where = redacted(config.database) if config.database else str(self.path)
        self._data_dir = data_dir
        self._store: Store | None = None
        self._stack: AsyncExitStack | None = None

    @asynccontextmanager
    async def store(self) -> AsyncIterator[Store]:
        if self._store is None:
            raise StoreError("the store is not open (the server is not running)")
        yield self._store

    async def __aenter__(self) -> LocalRuntime:
        async with AsyncExitStack() as stack:
            if self.config.database is not None:
                self._store = await Store.open(self.config.database, self.config, user=LOCAL_USER)
            else:
                make_directory(self._data_dir)
                self._store = await Store.open(self.path, self.config)
            stack.push_async_callback(self._store.close)
            if self.config.retention.active:
                tasks = await stack.enter_async_context(anyio.create_task_group())
                tasks.start_soon(retention.keep, self.config.retention, lambda: [self.store()])
                stack.callback(tasks.cancel_scope.cancel)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._store = None

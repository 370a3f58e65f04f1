"""The stdio runtime: one local user, one store in the data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from threadline.config import Config
from threadline.paths import LOCAL_STORE
from threadline.storage import Store, StoreError
from threadline.storage.schema import make_directory


class LocalRuntime:
    """Serves the one store of the local user; opened when the server starts."""

    def __init__(self, data_dir: Path, config: Config) -> None:
        self.config = config
        self.path = data_dir / LOCAL_STORE
        self._data_dir = data_dir
        self._store: Store | None = None

    @asynccontextmanager
    async def store(self) -> AsyncIterator[Store]:
        if self._store is None:
            raise StoreError("the store is not open (the server is not running)")
        yield self._store

    async def __aenter__(self) -> LocalRuntime:
        make_directory(self._data_dir)
        self._store = await Store.open(self.path, self.config)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

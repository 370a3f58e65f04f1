from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from threadline import Config, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "user.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    """The default store, except that search indexing never starts just because the test
    paused (index_delay): recent messages stay in the unindexed tail until 512 wait."""
    async with Store.open(db_path, Config(index_delay=60)) as s:
        yield s


@pytest.fixture
async def eager_store(db_path: Path) -> AsyncIterator[Store]:
    """A store that indexes for search within every write (no unindexed tail)."""
    async with Store.open(db_path, Config(index_batch=1, index_chunk=1_000_000)) as s:
        yield s

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
    async with Store.open(db_path) as s:
        yield s


@pytest.fixture
async def eager_store(db_path: Path) -> AsyncIterator[Store]:
    """A store that indexes for search on every write (no unindexed tail)."""
    async with Store.open(db_path, Config(index_batch=1)) as s:
        yield s

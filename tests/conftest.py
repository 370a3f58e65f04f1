from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import mcp.client.stdio as mcp_stdio
import pytest
from anyio.abc import Process

from tests import pgserver
from threadline import Config, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "user.db"


@pytest.fixture
async def store(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[Store]:
    """The default store, except that search indexing never starts just because the test
    paused (index_delay): recent messages stay in the unindexed tail until 512 wait.

    A SQLite file; or, for a test of the backend contract (``helpers.BACKENDS``), also a
    PostgreSQL database of the test's own, as a user with a random name."""
    config = Config(index_delay=60)
    if getattr(request, "param", "sqlite") == "postgres":
        server = request.getfixturevalue("postgres_server")
        async with pgserver.database(server) as found:
            user = f"user-{secrets.token_hex(4)}"
            async with Store.open(found.url, config, user=user) as s:
                yield s
        return
    async with Store.open(db_path, config) as s:
        yield s


@pytest.fixture
async def eager_store(db_path: Path) -> AsyncIterator[Store]:
    """A store that indexes for search within every write (no unindexed tail)."""
    async with Store.open(db_path, Config(index_batch=1, index_chunk=1_000_000)) as s:
        yield s


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Process]:
    """Every server process the SDK's stdio client starts during the test, for signals,
    limits and exit codes (the SDK keeps them private; this wraps its spawn function)."""
    processes: list[Process] = []
    original = mcp_stdio._create_platform_compatible_process

    async def record(*args: Any, **kwargs: Any) -> Any:
        process = await original(*args, **kwargs)
        processes.append(process)
        return process

    monkeypatch.setattr(mcp_stdio, "_create_platform_compatible_process", record)
    return processes


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory an unprivileged server can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="threadline-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for sub in path.rglob("*"):
            if sub.is_dir():
                sub.chmod(0o755)
        shutil.rmtree(path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A superuser's URL on a real PostgreSQL server: ``THREADLINE_TEST_DATABASE``, or a
    throwaway cluster for the whole run (``tests/pgserver.py``). A server that cannot start
    fails the tests that need it; they are never skipped."""
    named = os.environ.get("THREADLINE_TEST_DATABASE")
    if named:
        yield named
        return
    with pgserver.cluster() as server:
        yield server.url


@pytest.fixture
async def pg_database(postgres_server: str) -> AsyncIterator[pgserver.Database]:
    """A fresh database owned by a fresh ordinary role (no superuser, no BYPASSRLS, as the
    store must connect), dropped with the role afterwards."""
    async with pgserver.database(postgres_server) as found:
        yield found


@pytest.fixture
def pg_cluster() -> Iterator[pgserver.Cluster]:
    """A server of the test's own, to stop and start (the shared one must stay up)."""
    with pgserver.cluster() as server:
        yield server

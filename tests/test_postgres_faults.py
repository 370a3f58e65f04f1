"""Faults with PostgreSQL behind real server processes: a replica killed with SIGKILL in the
middle of writes loses no acknowledged write and leaves no part of a batch; a database that
shuts down at once (as in a crash) while clients write gives them a clear "try again", never a
traceback, and the replica recovers by itself when the database is back."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.pgserver import Cluster, database
from tests.test_postgres_serving import _client, _replica
from threadline import Store
from threadline.paths import STATIC_ISSUER, user_key
from threadline.server.auth import TokenFile
from threadline.storage.postgres.errors import UNAVAILABLE

pytestmark = pytest.mark.anyio

BATCH = 3


def _batch(n: int) -> list[dict[str, Any]]:
    return [{"id": f"b{n}-{i}", "role": "user", "content": f"batch {n}, {i}"} for i in range(3)]


async def _stored_batches(url: str, user: str, sid: str) -> dict[int, int]:
    """How many messages of each batch the database holds."""
    async with Store.open(url, user=user) as store:
        history = (await store.get_history(sid)).messages
    counts: dict[int, int] = {}
    for m in history:
        n = int(m.id[1:].split("-")[0])
        counts[n] = counts.get(n, 0) + 1
    return counts


async def test_a_replica_killed_mid_write_loses_no_acknowledged_write_and_no_half_batch(
    pg_database: Any, tmp_path: Path
) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    token = tokens.add("alice")[1]
    user = user_key((STATIC_ISSUER, "alice"))
    acked: set[int] = set()
    counter = itertools.count()
    async with Store.open(pg_database.url, user=user) as store:
        await store.create_session(session_id="ledger")
    for kill in range(3):
        async with _replica(pg_database.url, tokens.path, tmp_path / "server.log") as replica:

            async def writer(client: Any) -> None:
                while True:
                    n = next(counter)
                    try:
                        result = await client.call_tool(
                            "append_messages", {"session_id": "ledger", "messages": _batch(n)}
                        )
                    except Exception:  # the replica died under the call: not acknowledged
                        return
                    if not result.is_error:
                        acked.add(n)

            with anyio.move_on_after(20):
                async with anyio.create_task_group() as tasks:
                    for _ in range(4):
                        client = await tasks.start(_hold, replica.url, token)
                        tasks.start_soon(writer, client)
                    await anyio.sleep(1.0 + kill * 0.37)
                    replica.process.kill()  # SIGKILL, while four clients' calls are in flight
                    await replica.process.wait()
                    tasks.cancel_scope.cancel()
    counts = await _stored_batches(pg_database.url, user, "ledger")
    assert acked, "nothing was acknowledged"
    assert acked <= set(counts), sorted(acked - set(counts))[:5]  # every ack is there
    assert all(n == BATCH for n in counts.values()), counts  # and no batch in part


async def _hold(url: str, token: str, *, task_status: Any) -> None:
    """A client connected to ``url`` for as long as the task runs (and its server lives)."""
    with contextlib.suppress(Exception):  # the server is killed under it
        async with _client(url, token) as client:
            task_status.started(client)
            await anyio.sleep_forever()


async def test_a_database_restart_is_try_again_for_clients_then_the_replica_recovers(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    tokens = TokenFile(tmp_path / "tokens.json")
    token = tokens.add("alice")[1]
    log = tmp_path / "server.log"
    async with (
        database(pg_cluster.url) as db,
        _replica(db.url, tokens.path, log) as replica,
        _client(replica.url, token) as client,
    ):
        made = await client.call_tool("create_session", {"session_id": "s"})
        assert not made.is_error
        acked = []
        for n in range(3):
            result = await client.call_tool(
                "append_messages", {"session_id": "s", "messages": _batch(n)}
            )
            assert not result.is_error
            acked.append(n)
        pg_cluster.stop("immediate")
        for n in range(3, 6):
            refused = await client.call_tool(
                "append_messages", {"session_id": "s", "messages": _batch(n)}
            )
            assert refused.is_error
            text = str(refused.content[0])
            assert UNAVAILABLE in text and "Traceback" not in text, text
        pg_cluster.start()
        with anyio.fail_after(30):
            n = 6
            while True:  # the first call after the restart may find a dropped connection
                result = await client.call_tool(
                    "append_messages", {"session_id": "s", "messages": _batch(n)}
                )
                if not result.is_error:
                    acked.append(n)
                    break
                await anyio.sleep(0.2)
                n += 1
        page = await client.call_tool("get_history", {"session_id": "s"})
        assert not page.is_error
        counts = await _stored_batches(db.url, user_key((STATIC_ISSUER, "alice")), "s")
    assert sorted(counts) == acked and all(c == BATCH for c in counts.values())
    assert "Traceback" not in log.read_text()

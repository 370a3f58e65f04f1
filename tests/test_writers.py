"""Safe concurrent writers (issue 14): ``expected_head`` makes a read-build-write turn safe
when several workers serve one thread. Real stores, and the tools through the in-memory
client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from mcp import Client

from tests.helpers import BACKENDS, call, dump
from tests.test_tools import _server, fails
from threadline import Store
from threadline.storage import Conflict, HeadMoved, InvalidInput


def turn(worker: str, n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{worker}-{n}-q", "role": "user", "content": f"{worker} asks {n}"},
        {"id": f"{worker}-{n}-a", "role": "assistant", "content": f"{worker} answers {n}"},
    ]


async def test_of_two_writers_on_one_read_one_wins_and_the_other_retries_cleanly(
    store: Store, db_path: Path
) -> None:
    await store.create_session(session_id="s")
    await store.append_messages("s", [{"id": "m0", "role": "user", "content": "hello"}])
    read_by_both = (await store.get_session("s")).head_id

    won = await store.append_messages("s", turn("A", 1), expected_head=read_by_both)
    before = dump(db_path)
    with pytest.raises(HeadMoved) as lost:
        await store.append_messages("s", turn("B", 1), expected_head=read_by_both)

    assert isinstance(lost.value, Conflict) and lost.value.head_id == won.head_id == "A-1-a"
    assert "has head 'A-1-a', not 'm0'" in str(lost.value)
    assert dump(db_path) == before  # nothing changed
    retried = await store.append_messages("s", turn("B", 1), expected_head=won.head_id)
    history = [m.id for m in (await store.get_history("s")).messages]
    assert history == ["m0", "A-1-q", "A-1-a", "B-1-q", "B-1-a"] and retried.head_id == "B-1-a"


@BACKENDS
async def test_racing_workers_with_the_guard_never_interleave_their_turns(store: Store) -> None:
    await store.create_session(session_id="s")
    conflicts = 0

    async def worker(name: str) -> None:
        nonlocal conflicts
        for n in range(5):
            while True:
                head = (await store.get_session("s")).head_id
                await anyio.lowlevel.checkpoint()  # let the others read the same head
                try:
                    await store.append_messages("s", turn(name, n), expected_head=head)
                    break
                except HeadMoved:
                    conflicts += 1

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for i in range(10):
                tasks.start_soon(worker, f"w{i}")

    ids = [m.id for m in (await store.get_history("s", limit=500)).messages]
    assert len(ids) == 100 and len(set(ids)) == 100
    for q, a in zip(ids[::2], ids[1::2], strict=True):  # every turn whole, in order
        assert q.endswith("-q") and a == q[:-1] + "a"
    assert conflicts > 0, "the workers never raced"
    info = await store.get_session("s")
    assert (info.message_count, info.branch_count) == (100, 1)


@BACKENDS
async def test_an_empty_session_is_expected_as_none(store: Store) -> None:
    await store.create_session(session_id="s")
    await store.append_messages("s", turn("A", 0), expected_head=None)
    with pytest.raises(HeadMoved, match="has head 'A-0-a', not None"):
        await store.append_messages("s", turn("B", 0), expected_head=None)
    with pytest.raises(InvalidInput, match="expected_head"):
        await store.append_messages("s", turn("B", 0), expected_head=5)  # type: ignore[arg-type]


@BACKENDS
async def test_set_head_and_compaction_take_the_same_guard(store: Store) -> None:
    await store.create_session(session_id="s")
    for n in range(6):
        await store.append_messages("s", turn("A", n))
    with pytest.raises(HeadMoved):
        await store.set_head("s", "A-0-a", expected_head="A-1-a")
    with pytest.raises(HeadMoved):
        await store.compact_session("s", "summary", keep_last=2, expected_head="A-1-a")
    info = await store.get_session("s")
    assert (info.head_id, info.compactions) == ("A-5-a", 0)
    await store.compact_session("s", "summary", keep_last=2, expected_head="A-5-a")
    moved = await store.set_head("s", "A-0-a", expected_head="A-5-a")
    assert moved.head_id == "A-0-a"


async def test_the_tools_take_expected_head(tmp_path: Path) -> None:
    async with Client(_server(tmp_path)) as client:
        sid = (await call(client, "create_session"))["session_id"]
        first = await call(client, "append_messages", session_id=sid, messages=turn("A", 0),
                           expected_head="")  # fmt: skip
        error = await fails(client, "append_messages", session_id=sid, messages=turn("B", 0),
                            expected_head="")  # fmt: skip
        assert "has head 'A-0-a', not None" in error and "nothing was written" in error
        await call(client, "append_messages", session_id=sid, messages=turn("B", 0),
                   expected_head=first["head_id"])  # fmt: skip
        stale = await fails(client, "set_head", session_id=sid, message_id="A-0-q",
                            expected_head=first["head_id"])  # fmt: skip
        assert "has head 'B-0-a'" in stale
        history = await call(client, "get_history", session_id=sid)
        assert [m["id"] for m in history["messages"]] == ["A-0-q", "A-0-a", "B-0-q", "B-0-a"]
        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in ("append_messages", "set_head", "compact_session"):
            assert "expected_head" in tools[name].input_schema["properties"], name
        assert "expected_head" in (tools["append_messages"].description or "")

"""Durability and concurrency: group commit, cancellation, several processes, refusals, crashes.

Everything runs on real SQLite files in ``tmp_path`` and, where processes are involved, real
OS processes running small scripts with ``sys.executable -c``. Processes start together on a
"go" line written to their stdin once each has printed "ready"; nothing waits by sleeping.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.helpers import BACKENDS, dump, integrity, lock_is_free
from threadline import (
    AppendResult,
    Config,
    MessageConflict,
    MessageNotFound,
    Store,
    StoreError,
    StoreUnusable,
    ThreadlineError,
    UsageTotals,
)
from threadline.storage import engine, schema


def _msg(mid: str, content: str | None = None) -> dict[str, Any]:
    return {"id": mid, "role": "user", "content": mid if content is None else content}


def _stored_ids(path: Path, session_id: str) -> list[str]:
    """Every message row of the session, on the path or not, in insertion order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT id FROM messages WHERE session_id = ? ORDER BY pk", (session_id,)
        ).fetchall()
        return [row[0] for row in rows]
    finally:
        conn.close()


def _assert_linear(messages: list[Any]) -> None:
    """Each message's parent is the message before it on the path; the first is a root."""
    assert messages, "empty history"
    assert messages[0].parent_id is None
    for before, after in itertools.pairwise(messages):
        assert after.parent_id == before.id, f"{after.id} hangs off {after.parent_id}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- one process, many tasks ----------------------------------------------------------------


async def test_concurrent_appends_without_parent_build_one_linear_history(store: Store) -> None:
    sid = (await store.create_session()).session_id
    results: dict[str, AppendResult] = {}

    async def append(mid: str) -> None:
        results[mid] = await store.append_messages(sid, [_msg(mid)])

    ids = [f"m{i:03}" for i in range(100)]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for mid in ids:
                tg.start_soon(append, mid)

    history = (await store.get_history(sid)).messages
    assert sorted(m.id for m in history) == ids  # every message once, no branch lost
    assert sorted(_stored_ids(store.path, sid)) == ids
    _assert_linear(history)
    info = await store.get_session(sid)
    assert info.message_count == 100
    assert info.head_id == history[-1].id
    assert info.branch_count == 1
    for mid, result in results.items():  # each append extended the head it found
        assert result.message_ids == [mid]
        assert result.head_id == mid


async def test_concurrent_work_on_different_sessions_stays_in_its_own_session(
    store: Store,
) -> None:
    sessions = [(await store.create_session(session_id=f"s{k}")).session_id for k in range(10)]
    appended: dict[str, list[str]] = {sid: [] for sid in sessions}

    async def converse(sid: str) -> None:
        for i in range(20):
            # Alternate single messages and pairs so that batches of both sizes interleave.
            batch = (
                [_msg(f"{sid}-m{i}-a")] if i % 2 else [_msg(f"{sid}-m{i}-a"), _msg(f"{sid}-m{i}-b")]
            )
            result = await store.append_messages(sid, batch)
            assert result.message_ids == [m["id"] for m in batch]
            appended[sid] += [m["id"] for m in batch]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for sid in sessions:
                tg.start_soon(converse, sid)

    for sid in sessions:
        history = (await store.get_history(sid)).messages
        assert [m.id for m in history] == appended[sid]
        assert _stored_ids(store.path, sid) == appended[sid]
        assert all(m.id.startswith(f"{sid}-") for m in history)
        assert [m.content for m in history] == appended[sid]
        _assert_linear(history)
        info = await store.get_session(sid)
        assert info.message_count == len(appended[sid]) == 30
        assert info.head_id == appended[sid][-1]


@pytest.mark.parametrize("failure", ["unknown parent", "reused id with other content"])
async def test_append_failing_inside_a_group_commit_fails_alone(
    db_path: Path, failure: str
) -> None:
    async with Store.open(db_path) as store:
        sid = (await store.create_session(messages=[_msg("root")])).session_id
        landed: dict[str, AppendResult] = {}
        failed: list[ThreadlineError] = []

        async def good(mid: str) -> None:
            landed[mid] = await store.append_messages(sid, [_msg(mid)])

        async def bad() -> None:
            try:
                if failure == "unknown parent":
                    await store.append_messages(sid, [_msg("bad-1")], parent_id="no-such-message")
                else:  # the first message is fine and is written before the second conflicts
                    await store.append_messages(sid, [_msg("bad-1"), _msg("root", "other text")])
            except ThreadlineError as exc:
                failed.append(exc)

        # Hold the write lock from outside while the burst queues up, so that the appends
        # after the first are taken by one leader and committed as one group.
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        if i == 20:
                            tg.start_soon(bad)
                        tg.start_soon(good, f"g{i:02}")
                    await anyio.wait_all_tasks_blocked()
                    blocker.execute("COMMIT")
        finally:
            blocker.close()

        expected = MessageNotFound if failure == "unknown parent" else MessageConflict
        assert len(failed) == 1
        assert isinstance(failed[0], expected)
        history = (await store.get_history(sid)).messages
        assert sorted(m.id for m in history) == sorted(["root", *landed])
        assert len(landed) == 40
        assert history[0].content == "root"
        _assert_linear(history)
        assert sorted(_stored_ids(db_path, sid)) == sorted(m.id for m in history)  # no bad-1
        info = await store.get_session(sid)
        assert (info.message_count, info.branch_count) == (41, 1)


@pytest.mark.parametrize(
    "reused", ["stored-7", "batch-9"], ids=["stored id", "id earlier in batch"]
)
async def test_batch_with_a_conflicting_message_lands_whole_or_not_at_all(
    store: Store, db_path: Path, reused: str
) -> None:
    sid = (await store.create_session(messages=[_msg(f"stored-{i}") for i in range(10)])).session_id
    await store.record_usage(sid, 1, 1)
    before = dump(db_path)
    batch = [_msg(f"batch-{i}") for i in range(100)]
    batch[56] = _msg(reused, "different content")  # message #57

    with pytest.raises(MessageConflict, match=reused):
        await store.append_messages(sid, batch)

    assert dump(db_path) == before
    history = (await store.get_history(sid)).messages
    assert [m.id for m in history] == [f"stored-{i}" for i in range(10)]
    info = await store.get_session(sid)
    assert info.message_count == 10
    assert info.head_id == "stored-9"
    # The store keeps working: the same batch without the conflict lands whole.
    batch[56] = _msg("batch-56")
    await store.append_messages(sid, batch)
    assert (await store.get_session(sid)).message_count == 110


async def test_cancelled_appends_land_whole_or_not_at_all_and_leave_no_transaction(
    db_path: Path,
) -> None:
    rng = random.Random(20260509)
    tags: list[str] = []
    acked: list[str] = []
    # No idle-time search indexing here, so that a held write lock can only be a left-over.
    async with Store.open(db_path, Config(index_delay=60)) as store:
        sid = (await store.create_session()).session_id

        async def append_batch(tag: str) -> None:
            await store.append_messages(sid, [_msg(f"{tag}-{k}", f"{tag} {k}") for k in range(3)])
            acked.append(tag)

        async def settle() -> None:
            """A cancelled caller returns at once; a batch the writer took still completes.
            The writer serves in order, so once a later write is done, all earlier ones are."""
            await store.update_context(sid, "scratchpad", "settled")

        # Cancelled by a deadline at a random moment.
        for round_ in range(25):
            with anyio.move_on_after(rng.uniform(0, 0.02)):
                async with anyio.create_task_group() as tg:
                    for j in range(20):
                        tags.append(f"d{round_}x{j}")
                        tg.start_soon(append_batch, tags[-1])
            await settle()
            assert lock_is_free(db_path), f"write lock held after round {round_}"

        # Cancelled by hand once a random number of appends came back.
        async def append_then_stop(tag: str, scope: anyio.CancelScope, stop_at: int) -> None:
            await append_batch(tag)
            if len(acked) >= stop_at:
                scope.cancel()

        for round_ in range(10):
            stop_at = len(acked) + rng.randint(1, 10)
            async with anyio.create_task_group() as tg:
                for j in range(80):
                    tags.append(f"c{round_}x{j}")
                    tg.start_soon(append_then_stop, tags[-1], tg.cancel_scope, stop_at)
            await settle()
            assert lock_is_free(db_path), f"write lock held after manual round {round_}"

        # The store still takes writes, at once.
        with anyio.fail_after(2):
            await store.append_messages(sid, [_msg("after-0"), _msg("after-1"), _msg("after-2")])
            history = (await store.get_history(sid)).messages
            info = await store.get_session(sid)
        assert lock_is_free(db_path)

    ids = [m.id for m in history]
    assert ids[-3:] == ["after-0", "after-1", "after-2"]
    assert info.message_count == len(ids)
    assert _stored_ids(db_path, sid) == ids
    _assert_linear(history)
    per_tag = Counter(mid.rsplit("-", 1)[0] for mid in ids[:-3])
    assert set(per_tag) <= set(tags)
    assert all(count == 3 for count in per_tag.values()), per_tag
    for tag in per_tag:  # one append's messages sit together, in order
        at = ids.index(f"{tag}-0")
        assert ids[at : at + 3] == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
    assert set(acked) <= set(per_tag)  # every append that came back landed
    # The cancellations really interrupted work: some batches landed, some never did.
    assert 0 < len(per_tag) < len(tags)
    assert integrity(db_path) == ("ok", "ok")


async def test_store_is_closed_even_when_its_scope_is_cancelled(db_path: Path) -> None:
    with anyio.CancelScope() as scope:
        async with Store.open(db_path) as store:
            sid = (await store.create_session(messages=[_msg("kept")])).session_id
            scope.cancel()  # as when a sibling task fails or the request is cancelled
            await anyio.lowlevel.checkpoint()
    try:
        assert scope.cancelled_caught
        with pytest.raises(StoreError, match="closed"):
            await store.get_session(sid)
        assert not db_path.with_name(db_path.name + "-wal").exists()  # every connection closed
        assert integrity(db_path) == ("ok", "ok")
    finally:
        await store.close()


@BACKENDS
async def test_concurrent_usage_records_add_up(store: Store) -> None:
    sid = (await store.create_session()).session_id
    totals: list[UsageTotals] = []

    async def record() -> None:
        totals.append(await store.record_usage(sid, 1, 2, 0.5))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(record)

    info = await store.get_session(sid)
    assert (info.input_tokens, info.output_tokens, info.cost, info.turns) == (50, 100, 25.0, 50)
    assert sorted(t.turns for t in totals) == list(range(1, 51))  # each saw its own total


@BACKENDS
async def test_concurrent_context_appends_keep_every_fact(store: Store) -> None:
    sid = (await store.create_session()).session_id

    async def remember(i: int) -> None:
        await store.update_context(sid, "memory", f"fact {i}", mode="append")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(remember, i)

    memory = next(b for b in (await store.get_context(sid)).blocks if b.label == "memory")
    lines = memory.content.splitlines()
    assert sorted(lines) == sorted(f"fact {i}" for i in range(20))


# -- refusals -------------------------------------------------------------------------------


async def _garbage(path: Path) -> None:
    await anyio.Path(path).write_bytes(b"\x00garbage" + random.Random(7).randbytes(16_384))


async def _sqlite_header_then_garbage(path: Path) -> None:
    await anyio.Path(path).write_bytes(b"SQLite format 3\x00" + random.Random(8).randbytes(16_384))


async def _zero_length(path: Path) -> None:
    await anyio.Path(path).write_bytes(b"")


async def _someone_elses_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()


async def _newer_threadline_store(path: Path) -> None:
    async with Store.open(path) as store:
        await store.create_session(session_id="kept", messages=[_msg("hello")])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()


async def _another_applications_new_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 42")  # file(1) and friends: "this file is app 42's"
    conn.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(_garbage, "not a SQLite database", id="garbage"),
        pytest.param(_sqlite_header_then_garbage, "not a SQLite database", id="header+garbage"),
        pytest.param(_zero_length, "empty", id="zero length"),
        pytest.param(_someone_elses_database, "not a threadline store", id="foreign database"),
        pytest.param(_newer_threadline_store, "newer.*upgrade", id="newer schema"),
        pytest.param(
            _another_applications_new_file,
            "not a threadline store",
            id="another application's id",
        ),
    ],
)
async def test_unusable_file_is_refused_and_left_byte_identical(
    tmp_path: Path, make: Callable[[Path], Awaitable[None]], message: str
) -> None:
    path = tmp_path / "user.db"
    await make(path)
    digest, listing = _digest(path), sorted(os.listdir(tmp_path))

    # A short busy timeout: a zero-length file is otherwise given 2 s to be filled in.
    with pytest.raises(StoreUnusable, match=message):
        await Store.open(path, Config(busy_timeout=0.2))

    assert _digest(path) == digest
    assert sorted(os.listdir(tmp_path)) == listing


async def test_truncated_store_raises_a_store_error_never_a_sqlite_error(tmp_path: Path) -> None:
    path = tmp_path / "user.db"
    sids = []
    async with Store.open(path) as store:
        for k in range(3):
            sid = (await store.create_session(title=f"s{k}")).session_id
            await store.append_messages(
                sid, [_msg(f"m{i}", f"message {k}/{i} " + "words " * 60) for i in range(100)]
            )
            sids.append(sid)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    digest = _digest(path)

    with pytest.raises(StoreError):  # a sqlite3.DatabaseError would escape this
        async with Store.open(path) as store:
            for sid in sids:
                assert len((await store.get_history(sid)).messages) == 100
            await store.session_search("words")

    assert _digest(path) == digest


async def test_missing_parent_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUnusable):
        await Store.open(tmp_path / "missing" / "user.db")
    assert not (tmp_path / "missing").exists()


# -- durability -----------------------------------------------------------------------------


async def test_acknowledged_writes_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "user.db"
    async with Store.open(path) as store:
        first = await store.create_session(title="first", messages=[_msg("a0"), _msg("a1")])
        second = await store.create_session(session_id="second")
        await store.append_messages(first.session_id, [_msg(f"a{i}") for i in range(2, 50)])
        await store.append_messages("second", [_msg("b0", "ünïcödé 👩‍👩‍👧")])
        await store.append_messages(first.session_id, [_msg("edit")], parent_id="a10")
        await store.record_usage("second", 10, 20, 0.25, model="m")
        await store.update_context("second", "scratchpad", "the plan")
        await store.update_context("second", "memory", "likes tea", mode="append")
    assert integrity(path) == ("ok", "ok")
    snapshot = dump(path)

    # After a clean close the main file alone holds everything (no WAL left to lose).
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    for reopened in (path, copy):
        async with Store.open(reopened) as store:
            one = (await store.get_history(first.session_id)).messages
            assert [m.id for m in one] == [f"a{i}" for i in range(11)] + ["edit"]
            assert len((await store.get_history(first.session_id, leaf_id="a49")).messages) == 50
            assert (await store.get_session(first.session_id)).message_count == 51
            two = await store.get_session(second.session_id)
            assert (two.input_tokens, two.output_tokens, two.cost, two.turns) == (10, 20, 0.25, 1)
            assert [m.content for m in (await store.get_history("second")).messages] == [
                "ünïcödé 👩‍👩‍👧"
            ]
            blocks = {b.label: b.content for b in (await store.get_context("second")).blocks}
            assert blocks["scratchpad"] == "the plan"
            assert blocks["memory"] == "likes tea"
            hits = (await store.session_search("ünïcödé")).hits
            assert [h.message_id for h in hits] == ["b0"]
        assert dump(reopened) == snapshot
        assert integrity(reopened) == ("ok", "ok")


# -- several processes ----------------------------------------------------------------------

APPENDER = """
import sys
import anyio
import anyio.lowlevel
from threadline import Store

async def main(path, me, shared):
    async with Store.open(path) as store:
        own = (await store.create_session(session_id=f"own-{me}")).session_id
        print("ready", flush=True)
        sys.stdin.readline()

        async def fill(sid, prefix, start, n):
            for i in range(start, n):
                await store.append_messages(
                    sid, [{"id": f"{prefix}-{i}", "role": "user", "content": f"{prefix} {i}"}]
                )

        # One shared message each, then wait until the other process has written one too:
        # the rest of the writing overlaps for sure, however fast each process is.
        await fill(shared, f"{me}-shared", 0, 1)
        print("started", flush=True)
        sys.stdin.readline()
        async with anyio.create_task_group() as tg:
            tg.start_soon(fill, own, f"{me}-own", 0, 200)
            tg.start_soon(fill, shared, f"{me}-shared", 1, 100)
    print("done", flush=True)

anyio.run(main, *sys.argv[1:])
"""

OPENER = """
import sys
import anyio
import anyio.lowlevel
from threadline import Store

async def main(me):
    print("ready", flush=True)
    while path := sys.stdin.readline().strip():
        try:
            async with Store.open(path) as store:
                await store.create_session(session_id=me)
        except Exception as exc:
            print(f"error {type(exc).__name__}: {exc}", flush=True)
        else:
            print("ok", flush=True)

anyio.run(main, sys.argv[1])
"""

OPEN_ONCE = """
import sys
import anyio
import anyio.lowlevel
from threadline import Store

async def main(path, me):
    async with Store.open(path) as store:
        await store.create_session(session_id=me)

anyio.run(main, *sys.argv[1:])
"""

CRASHER = """
import sys
import anyio
import anyio.lowlevel
from threadline import Store

async def main(path, sid, run):
    async with Store.open(path) as store:
        async def writer(w):
            n = 0
            while True:
                tag = f"r{run}w{w}n{n}"
                batch = [
                    {"id": f"{tag}-{k}", "role": "user", "content": f"{tag} {k}"} for k in range(3)
                ]
                await store.append_messages(sid, batch)
                print(tag, flush=True)
                n += 1

        async with anyio.create_task_group() as tg:
            for w in range(3):
                tg.start_soon(writer, w)

anyio.run(main, *sys.argv[1:])
"""


async def _spawn(script: str, *args: str, log: Path) -> tuple[Process, BufferedByteReceiveStream]:
    """Start ``script`` in a new Python process; its stderr goes to ``log``."""
    with log.open("wb") as stderr:
        proc = await anyio.open_process([sys.executable, "-c", script, *args], stderr=stderr)
    assert proc.stdout is not None
    return proc, BufferedByteReceiveStream(proc.stdout)


async def _line(out: BufferedByteReceiveStream) -> str:
    """The next whole line the process printed, or "<eof>" once it has exited."""
    try:
        return (await out.receive_until(b"\n", 1 << 16)).decode()
    except anyio.IncompleteRead:
        return "<eof>"


async def _send(proc: Process, text: str) -> None:
    assert proc.stdin is not None
    await proc.stdin.send(text.encode())


async def test_two_processes_appending_to_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "user.db"
    async with Store.open(path) as store:
        await store.create_session(session_id="shared")
    logs = {me: tmp_path / f"{me}.stderr" for me in "AB"}

    with anyio.fail_after(45):
        children = [await _spawn(APPENDER, str(path), me, "shared", log=logs[me]) for me in logs]
        async with children[0][0], children[1][0]:
            for _, out in children:
                assert await _line(out) == "ready", [log.read_text() for log in logs.values()]
            for proc, _ in children:  # start both at once
                await _send(proc, "go\n")
            for _, out in children:
                assert await _line(out) == "started", [log.read_text() for log in logs.values()]
            for proc, _ in children:
                await _send(proc, "continue\n")
            for _, out in children:
                assert await _line(out) == "done", [log.read_text() for log in logs.values()]
            codes = [await proc.wait() for proc, _ in children]

    errors = [log.read_text() for log in logs.values()]
    assert codes == [0, 0], errors
    for text in errors:
        assert "locked" not in text
        assert "busy" not in text

    async with Store.open(path) as store:
        for me in "AB":
            own = (await store.get_history(f"own-{me}")).messages
            assert [m.id for m in own] == [f"{me}-own-{i}" for i in range(200)]
            assert _stored_ids(path, f"own-{me}") == [m.id for m in own]
            _assert_linear(own)
        shared = (await store.get_history("shared")).messages
        assert (await store.get_session("shared")).message_count == 200
    _assert_linear(shared)
    ids = [m.id for m in shared]
    assert len(ids) == len(set(ids)) == 200
    assert _stored_ids(path, "shared") == ids
    for me in "AB":  # each process's messages are all there, in the order it sent them
        assert [i for i in ids if i.startswith(me)] == [f"{me}-shared-{i}" for i in range(100)]
    switches = sum(x[0] != y[0] for x, y in itertools.pairwise(ids))
    assert switches > 1, "the two processes did not write at the same time"
    assert integrity(path) == ("ok", "ok")


# The refusal that test_opening_while_another_process_migrates_the_new_file_succeeds pins down.


async def test_two_processes_creating_one_new_file_migrate_it_once(tmp_path: Path) -> None:
    logs = {me: tmp_path / f"{me}.stderr" for me in "AB"}
    with anyio.fail_after(45):
        children = [await _spawn(OPENER, me, log=logs[me]) for me in logs]
        async with children[0][0], children[1][0]:
            for _, out in children:
                assert await _line(out) == "ready", [log.read_text() for log in logs.values()]
            for attempt in range(10):
                path = tmp_path / f"new-{attempt}.db"
                for proc, _ in children:  # both open the new file at once
                    await _send(proc, f"{path}\n")
                replies = [await _line(out) for _, out in children]
                assert replies == ["ok", "ok"], f"attempt {attempt}: {replies}"
                conn = sqlite3.connect(path)
                try:
                    migrations = conn.execute("SELECT version FROM schema_migrations").fetchall()
                    assert migrations == [(n,) for n in range(1, schema.LATEST + 1)]
                    assert conn.execute("PRAGMA user_version").fetchone() == (schema.LATEST,)
                    sessions = conn.execute("SELECT id FROM sessions ORDER BY id").fetchall()
                    assert sessions == [
                        (me,) for me, r in zip("AB", replies, strict=True) if r == "ok"
                    ]
                finally:
                    conn.close()
                assert integrity(path) == ("ok", "ok")
            for proc, _ in children:
                await _send(proc, "\n")  # an empty line ends the loop
            codes = [await proc.wait() for proc, _ in children]
    assert codes == [0, 0], [log.read_text() for log in logs.values()]


async def test_opening_while_another_process_migrates_the_new_file_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race above, made deterministic: the other process migrates at the worst moment."""
    path = tmp_path / "user.db"
    # Where the other opener is after creating the file and switching it to WAL: page 1 is
    # written (so this opener does not wait for it), the migration is not committed yet.
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    conn.close()
    other: list[subprocess.CompletedProcess[bytes]] = []
    real_connect = schema.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)

        def trace(sql: str) -> None:
            # Runs just before this opener's last look at the file: now the other one,
            # a real process, opens it, migrates it and adds its session.
            if "sqlite_schema" in sql and not other:
                command = [sys.executable, "-c", OPEN_ONCE, str(path), "other"]
                other.append(subprocess.run(command, capture_output=True, timeout=30))

        conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(schema, "connect", connect)
    with anyio.fail_after(30):
        async with Store.open(path) as store:
            await store.create_session(session_id="mine")
    assert [p.returncode for p in other] == [0], other
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [
            (n,) for n in range(1, schema.LATEST + 1)
        ]
        assert conn.execute("SELECT id FROM sessions ORDER BY id").fetchall() == [
            ("mine",),
            ("other",),
        ]
    finally:
        conn.close()


async def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "user.db"
    async with Store.open(path) as store:
        await store.create_session(session_id="ledger")
    rng = random.Random(99)
    acked: list[str] = []

    for run in range(5):
        log = tmp_path / f"run{run}.stderr"
        with anyio.fail_after(30):
            proc, out = await _spawn(CRASHER, str(path), "ledger", str(run), log=log)
            async with proc:
                first = await _line(out)
                assert first != "<eof>", log.read_text()
                acked.append(first)
                with anyio.move_on_after(rng.uniform(0.3, 0.6)):
                    while (line := await _line(out)) != "<eof>":
                        acked.append(line)
                proc.kill()
                code = await proc.wait()
                # Lines printed before the kill were acknowledged too; a cut-off one was not.
                while (line := await _line(out)) != "<eof>":
                    acked.append(line)
        assert code == -signal.SIGKILL, log.read_text()

        conn = sqlite3.connect(path)  # before threadline touches the file again
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        async with Store.open(path) as store:
            history = (await store.get_history("ledger")).messages
            count = (await store.get_session("ledger")).message_count
        assert integrity(path) == ("ok", "ok")  # the search index caught up on close
        ids = [m.id for m in history]
        assert count == len(ids)
        assert _stored_ids(path, "ledger") == ids
        _assert_linear(history)
        present = set(ids)
        lost = [tag for tag in acked if f"{tag}-2" not in present]
        assert not lost, f"run {run}: acknowledged but lost: {lost[:5]}"
        per_tag = Counter(mid.rsplit("-", 1)[0] for mid in ids)
        assert all(n == 3 for n in per_tag.values()), "a batch landed in part"
        for tag in per_tag:
            at = ids.index(f"{tag}-0")
            assert ids[at : at + 3] == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
    assert len(acked) > 5 * 3
    assert integrity(path) == ("ok", "ok")


async def test_the_wal_stays_bounded_while_readers_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads that always overlap leave SQLite's own checkpoints no moment to start the WAL
    afresh; the writer then truncates it itself, once past its bound, losing nothing."""
    bound = 1 << 18
    monkeypatch.setattr(engine, "WAL_RESTART_BYTES", bound)
    path = tmp_path / "store.db"
    wal = path.with_name("store.db-wal")
    peak = last = restarts = 0
    async with Store.open(path) as store:
        await store.create_session(session_id="s")
        await store.append_messages("s", [_msg(f"m{i}", "x" * 20) for i in range(50)])
        writing = True

        async def read() -> None:
            while writing:
                await store.get_history("s", limit=50)

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(read)
            for i in range(600):
                await store.append_messages("s", [_msg(f"w{i}", f"{i} " + "y" * 4000)])
                size = wal.stat().st_size
                restarts += size < last
                peak, last = max(peak, size), size
            writing = False
        assert len((await store.get_history("s")).messages) == 650
    # 600 writes of a 4 KB message put some 4.5 MB (17 bounds) through the WAL; without the
    # bound the readers keep all of it there and it never starts afresh. With it, the WAL
    # restarts again and again. A restart that finds a reader in the way (0.1 s of waiting)
    # lets the WAL grow one bound more before the next try; in a full test run two misses in a
    # row are common (CI saw a peak of three bounds), so the ceiling allows seven.
    assert restarts >= 2, restarts
    assert peak < 8 * bound, peak
    assert integrity(path) == ("ok", "ok")


async def test_an_observer_sees_every_group_commit(store: Store) -> None:
    sizes: list[int] = []
    store.observe_commits(sizes.append)
    await store.create_session(session_id="s")
    async with anyio.create_task_group() as tasks:
        for i in range(40):
            tasks.start_soon(store.append_messages, "s", [_msg(f"m{i}")])
    store.observe_commits(None)
    await store.append_messages("s", [_msg("after")])
    assert sum(sizes) == 41, sizes  # the create and every append, however they grouped

"""``Store.open("postgresql://...")`` on a real server: one database for many users, each alone
in it; concurrent appends from many tasks and several processes make one linear history; what
the backend does not do yet is refused cleanly. (The operations it shares with SQLite are
tested on both by the contract tests: ``helpers.BACKENDS``.)"""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from tests.pgserver import Database
from tests.test_transfer import build_rich
from threadline import Config, Store
from threadline.storage import (
    InvalidInput,
    JsonlWriter,
    Refused,
    SessionNotFound,
    StoreError,
    import_file,
)

pytestmark = pytest.mark.anyio


def _msg(mid: str) -> dict[str, Any]:
    return {"id": mid, "role": "user", "content": f"text of {mid}"}


async def _stored(db: Database, user: str, session_id: str) -> list[str]:
    """Message ids as stored, read behind the store's back (as the superuser)."""
    admin = await asyncpg.connect(db.admin_url)
    try:
        rows = await admin.fetch(
            "SELECT id FROM messages WHERE user_id = $1 AND session_id = $2 ORDER BY depth",
            user,
            session_id,
        )
    finally:
        await admin.close()
    return [r["id"] for r in rows]


def _assert_linear(messages: list[Any]) -> None:
    assert messages[0].parent_id is None
    for before, after in itertools.pairwise(messages):
        assert after.parent_id == before.id


async def test_users_of_one_database_never_see_each_other(pg_database: Database) -> None:
    async with (
        Store.open(pg_database.url, user="alice") as alice,
        Store.open(pg_database.url, user="bob") as bob,
    ):
        mine = await alice.create_session(session_id="shared-name", title="alice's")
        await alice.append_messages("shared-name", [_msg("a1")])
        await alice.update_context(None, "memory", "alice likes tea")
        # The same id is free for another user, and what bob writes stays his.
        theirs = await bob.create_session(session_id="shared-name", title="bob's")
        assert (mine.title, theirs.title) == ("alice's", "bob's")
        assert (await bob.get_history("shared-name")).messages == []
        assert [s.title for s in (await bob.list_sessions()).sessions] == ["bob's"]
        private = await alice.create_session(title="private")
        # Another user's session id reads as a random one would.
        for call in (
            lambda: bob.get_session(private.session_id),
            lambda: bob.get_history(private.session_id),
            lambda: bob.append_messages(private.session_id, [_msg("b1")]),
            lambda: bob.delete_session(private.session_id),
        ):
            with pytest.raises(SessionNotFound):
                await call()
        blocks = {b.label: b.content for b in await bob.get_user_context()}
        assert "alice likes tea" not in blocks.values()
        assert [m.id for m in (await alice.get_history("shared-name")).messages] == ["a1"]
        assert (await alice.get_session(private.session_id)).title == "private"


async def test_concurrent_appends_without_parent_build_one_linear_history(
    pg_database: Database,
) -> None:
    async with Store.open(pg_database.url, user="u") as store:
        sid = (await store.create_session()).session_id
        ids = [f"m{i:03}" for i in range(100)]

        async def append(mid: str) -> None:
            result = await store.append_messages(sid, [_msg(mid)])
            assert (result.message_ids, result.head_id) == ([mid], mid)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for mid in ids:
                    tg.start_soon(append, mid)
        history = (await store.get_history(sid)).messages
        assert sorted(m.id for m in history) == ids
        _assert_linear(history)
        assert await _stored(pg_database, "u", sid) == [m.id for m in history]
        info = await store.get_session(sid)
        assert (info.message_count, info.branch_count, info.head_id) == (100, 1, history[-1].id)


_WRITER = """
import sys, anyio
from threadline import Store

async def main(url, tag):
    async with Store.open(url, user="u") as store:
        for i in range(25):
            await store.append_messages("s", [{"id": f"{tag}-{i}", "role": "user", "content": "x"}])

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_processes_appending_to_one_session_make_one_linear_history(
    pg_database: Database,
) -> None:
    async with Store.open(pg_database.url, user="u") as store:
        await store.create_session(session_id="s")
    codes: list[int] = []

    async def write(tag: str) -> None:
        done = await anyio.run_process(
            [sys.executable, "-c", _WRITER, pg_database.url, tag], check=False
        )
        codes.append(done.returncode)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(write, f"p{n}")
    assert codes == [0, 0, 0]
    async with Store.open(pg_database.url, user="u") as store:
        history = (await store.get_history("s")).messages
    assert sorted(m.id for m in history) == sorted(f"p{n}-{i}" for n in range(3) for i in range(25))
    _assert_linear(history)
    for n in range(3):  # each process's messages in its own order
        mine = [m.id for m in history if m.id.startswith(f"p{n}-")]
        assert mine == [f"p{n}-{i}" for i in range(25)]


async def test_what_is_not_on_postgresql_yet_is_refused_and_changes_nothing(
    pg_database: Database,
) -> None:
    async with Store.open(pg_database.url, user="u") as store:
        sid = (await store.create_session(messages=[_msg("m1"), _msg("m2")])).session_id
        for call in (lambda: store.session_search("text"),):
            with pytest.raises(Refused, match="not available on the PostgreSQL backend yet"):
                await call()
        sessions = (await store.list_sessions()).sessions
        assert [(s.session_id, s.message_count) for s in sessions] == [(sid, 2)]


async def test_a_bad_user_or_an_unreachable_server_is_a_clear_error(
    pg_database: Database,
) -> None:
    with pytest.raises(InvalidInput, match=r"^user: must not be empty"):
        await Store.open(pg_database.url, user="")
    with pytest.raises(StoreError, match="unavailable") as caught:
        await Store.open("postgresql://nobody:secret@127.0.0.1:1/none", Config())
    assert "secret" not in str(caught.value) and "127.0.0.1" not in str(caught.value)


def test_threadline_imports_the_driver_only_to_open_a_database() -> None:
    code = (
        "import sys, threadline, threadline.server.app, threadline.cli, threadline.storage\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def _exported(store: Store) -> str:
    """The store's export (JSONL)."""
    out = io.StringIO()
    await store.export(JsonlWriter(out))
    return out.getvalue()


def _body(export: str) -> str:
    """An export without its first line (the header says when it was made)."""
    return export.split("\n", 1)[1]


async def test_moving_between_backends_is_lossless_both_ways(
    pg_database: Database, tmp_path: Path
) -> None:
    """Every fact an export carries (branches, JSON parts, a compaction, a split, a fork,
    usage, blocks) goes from SQLite to PostgreSQL and back unchanged, and reads the same."""
    ids = await build_rich(tmp_path / "a.db")
    async with Store.open(tmp_path / "a.db") as sqlite_store:
        original = await _exported(sqlite_store)
    async with Store.open(pg_database.url, user="mover") as pg_store:
        summary = await import_file(pg_store, io.StringIO(original))
        assert sorted(s.session_id for s in summary.imported) == sorted(set(ids))
        assert [s.renumbered for s in summary.imported] == [{}] * len(summary.imported)
        assert _body(await _exported(pg_store)) == _body(original)
        on_pg = await _seen(pg_store, ids)
    async with Store.open(tmp_path / "a.db") as sqlite_store:
        assert on_pg == await _seen(sqlite_store, ids)
    async with Store.open(pg_database.url, user="mover") as pg_store:
        back = await _exported(pg_store)
    async with Store.open(tmp_path / "b.db") as again:
        await import_file(again, io.StringIO(back))
        assert _body(await _exported(again)) == _body(original)


async def _seen(store: Store, ids: list[str]) -> dict[str, Any]:
    """What a reader sees of these sessions: info, branches, context, every history."""
    seen: dict[str, Any] = {}
    for sid in dict.fromkeys(ids):
        branches = await store.list_branches(sid)
        seen[sid] = [
            (await store.get_session(sid)).model_dump_json(),
            [b.model_dump_json() for b in branches],
            (await store.get_context(sid)).model_dump_json(),
            [
                (await store.get_history(sid, leaf_id=b.leaf_id, include_compacted=f)).model_dump()
                for b in branches
                for f in (False, True)
            ],
        ]
    return seen


async def test_prune_deletes_whole_sessions_of_the_user_only(pg_database: Database) -> None:
    big = "x" * 2_000
    async with (
        Store.open(pg_database.url, user="alice") as alice,
        Store.open(pg_database.url, user="bob") as bob,
    ):
        for store in (alice, bob):
            for sid in ("old-a", "old-b"):
                await store.create_session(session_id=sid)
                turns = [{"role": "user", "content": f"{sid} {i} {big}"} for i in range(100)]
                await store.append_messages(sid, turns)
                await store.compact_session(sid, "so far", keep_last=2, split=True)
            await store.create_session(session_id="idle")
        admin = await asyncpg.connect(pg_database.admin_url)
        try:
            await admin.execute("UPDATE sessions SET updated_at = '2020-01-01T00:00:00.000000Z'")
        finally:
            await admin.close()
        before = await _exported(alice)
        plan = await alice.prune(ended_before="2021-01-01", dry_run=True)
        assert (plan.sessions, plan.messages, plan.dry_run) == (["old-a", "old-b"], 200, True)
        assert _body(await _exported(alice)) == _body(before)
        done = await alice.prune(ended_before="2021-01-01")
        assert done.sessions == ["old-a", "old-b"] and done.bytes_after < done.bytes_before / 2
        left = {s.session_id for s in (await alice.list_sessions()).sessions}
        assert "idle" in left and "old-a" not in left and len(left) == 3  # the splits' children
        assert len((await bob.list_sessions()).sessions) == 5  # bob's are his own
        with pytest.raises(InvalidInput, match="give ended_before or inactive_before"):
            await alice.prune()

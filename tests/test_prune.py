"""Retention (issue 14): ``threadline prune`` deletes whole sessions and shrinks the file; a
dry run changes nothing; a server on the same file keeps working."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from mcp import Client, StdioServerParameters

from tests.helpers import dump, eventually, integrity
from threadline import Store
from threadline.cli import main
from threadline.config import Config, ConfigError, Retention, load_config
from threadline.paths import LOCAL_STORE, user_file
from threadline.server.auth import STATIC_ISSUER
from threadline.server.stores import UserStores
from threadline.storage import InvalidInput

BIG = "x" * 2_000


async def _seed(path: Path) -> None:
    """Two long ended sessions (split), an old active one, and a fresh one."""
    async with Store.open(path) as store:
        for sid in ("old-a", "old-b"):
            await store.create_session(session_id=sid)
            turns = [{"role": "user", "content": f"{sid} {i} {BIG}"} for i in range(200)]
            await store.append_messages(sid, turns)
            await store.compact_session(sid, "so far", keep_last=2, split=True)
        await store.create_session(session_id="idle")
        await store.append_messages("idle", [{"role": "user", "content": "hello"}])


def _age(path: Path, sid: str, stamp: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (stamp, sid))
        conn.commit()
    finally:
        conn.close()


async def test_a_dry_run_changes_nothing_and_prune_deletes_whole_ended_sessions(
    tmp_path: Path,
) -> None:
    path = tmp_path / LOCAL_STORE
    await _seed(path)
    for sid in ("old-a", "old-b", "idle"):
        _age(path, sid, "2020-01-01T00:00:00.000000Z")
    before = dump(path)
    async with Store.open(path) as store:
        plan = await store.prune(ended_before="2021-01-01", dry_run=True)
        assert (plan.sessions, plan.messages, plan.dry_run) == (["old-a", "old-b"], 400, True)
        assert dump(path) == before

        done = await store.prune(ended_before="2021-01-01")
        assert done.sessions == ["old-a", "old-b"] and done.bytes_after < done.bytes_before / 2
        left = sorted(s.session_id for s in (await store.list_sessions()).sessions)
        assert "idle" in left and "old-a" not in left and len(left) == 3  # the splits' children
        with pytest.raises(InvalidInput, match="give ended_before or inactive_before"):
            await store.prune()
    assert integrity(path) == ("ok", "ok")


def test_the_command_asks_lists_and_prunes_idle_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / LOCAL_STORE
    anyio.run(_seed, path)
    _age(path, "idle", "2020-01-01T00:00:00.000000Z")
    where = ["--data-dir", str(tmp_path)]

    assert main(["prune", "--inactive-for", "30d", "--status", "active", *where]) == 2
    assert "pass --yes to delete them" in capsys.readouterr().err  # stdin is no terminal
    assert main(["prune", "--inactive-for", "30d", "--dry-run", "--json", *where]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == ["idle"]
    assert main(["prune", "--inactive-for", "30d", "--yes", *where]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleted 1 session (1 message)\n  idle\nthe store went from"), out
    assert main(["prune", "--inactive-for", "soon", *where]) == 2
    assert "give a number and m, h, d or w" in capsys.readouterr().err


async def test_a_running_server_on_the_file_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / LOCAL_STORE
    await _seed(path)
    for sid in ("old-a", "old-b"):
        _age(path, sid, "2020-01-01T00:00:00.000000Z")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "threadline", "serve", "--data-dir", str(tmp_path)]
    )
    with anyio.fail_after(60):
        async with Client(params) as client:
            await client.call_tool("append_messages", {"session_id": "idle", "messages": [
                {"role": "user", "content": "before"}]})  # fmt: skip
            code = await anyio.to_thread.run_sync(
                main,
                ["prune", "--ended-before", "2021-01-01", "--yes", "--data-dir", str(tmp_path)],
            )
            assert code == 0
            after = await client.call_tool("append_messages", {"session_id": "idle", "messages": [
                {"role": "user", "content": "after"}]})  # fmt: skip
            assert not after.is_error
            listed = await client.call_tool("list_sessions", {})
            ids = [s["session_id"] for s in (listed.structured_content or {})["sessions"]]
            assert "old-a" not in ids and "idle" in ids
    async with Store.open(path) as store:
        history = await store.get_history("idle")
        assert [m.content for m in history.messages] == ["hello", "before", "after"]
    assert integrity(path) == ("ok", "ok")


# -- the server's own retention ([retention] in the config) ----------------------------------


def _sessions_in(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT id FROM sessions"))
    finally:
        conn.close()


async def test_a_stdio_server_prunes_by_its_config_and_keeps_serving(tmp_path: Path) -> None:
    path = tmp_path / LOCAL_STORE
    await _seed(path)
    for sid in ("old-a", "old-b", "idle"):
        _age(path, sid, "2020-01-01T00:00:00.000000Z")
    config = tmp_path / "threadline.toml"
    config.write_text('[retention]\nended_for = "30d"\n', encoding="utf-8")
    serve = ["serve", "--data-dir", str(tmp_path), "--config", str(config)]
    params = StdioServerParameters(command=sys.executable, args=["-m", "threadline", *serve])
    with anyio.fail_after(60):
        async with Client(params) as client:
            # The first pass runs at start.
            assert await eventually(lambda: "old-a" not in _sessions_in(path), 30)
            listed = await client.call_tool("list_sessions", {})
            ids = [s["session_id"] for s in (listed.structured_content or {})["sessions"]]
            assert "old-a" not in ids and "old-b" not in ids
            assert "idle" in ids  # old, but not ended: ended_for does not name it
            after = await client.call_tool("append_messages", {"session_id": "idle", "messages": [
                {"role": "user", "content": "after"}]})  # fmt: skip
            assert not after.is_error
    assert integrity(path) == ("ok", "ok")


async def test_an_http_server_prunes_every_users_store(tmp_path: Path) -> None:
    files = [user_file(tmp_path, (STATIC_ISSUER, user)) for user in ("u1", "u2")]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        await _seed(path)
        _age(path, "idle", "2020-01-01T00:00:00.000000Z")
        _age(path, "old-a", "2020-01-01T00:00:00.000000Z")
    policy = Retention(inactive_for="30d", status="active")
    stores = UserStores(tmp_path, Config(retention=policy), authenticated=True)
    with anyio.fail_after(30):
        async with stores.running():
            assert await eventually(
                lambda: all("idle" not in _sessions_in(path) for path in files), 20
            )
    for path in files:
        left = _sessions_in(path)
        assert "idle" not in left and "old-a" in left and len(left) == 4, left  # ended: kept
        assert integrity(path) == ("ok", "ok")


def test_retention_settings_are_checked_at_load(tmp_path: Path) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text('[retention]\ninactive_for = "90d"\nstatus = "ended"\n', encoding="utf-8")
    policy = load_config(config).retention
    assert policy.active and (policy.inactive_for, policy.every_hours) == ("90d", 24.0)
    assert not Config().retention.active  # off by default
    for body, says in [
        ('ended_for = "soon"', "config retention.ended_for: give a number and m, h, d or w"),
        ('status = "ended"', "config retention: status narrows inactive_for"),
        ("every_hours = 0", "config retention.every_hours: Input should be greater than 0"),
    ]:
        config.write_text(f"[retention]\n{body}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert str(caught.value).startswith(says), str(caught.value)

"""Context blocks and the frozen system prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import BACKENDS
from threadline import (
    BlockNotFound,
    BlockOverLimit,
    BlockReadOnly,
    BlockSpec,
    Config,
    InvalidInput,
    Store,
)
from threadline.config import DEFAULT_SOUL


def _blocks(view: object) -> dict[str, str]:
    return {b.label: b.content for b in view.blocks}  # type: ignore[attr-defined]


@BACKENDS
async def test_default_blocks(store: Store) -> None:
    sid = (await store.create_session()).session_id
    view = await store.get_context(sid)
    specs = {b.label: (b.scope, b.readonly, b.max_tokens) for b in view.blocks}
    assert specs == {
        "soul": ("user", True, 500),
        "memory": ("user", False, 1100),
        "scratchpad": ("session", False, 800),
    }
    assert _blocks(view)["soul"] == DEFAULT_SOUL
    assert DEFAULT_SOUL in view.system_prompt
    assert view.system_prompt.startswith("<memory_blocks>")
    assert not view.stale


@BACKENDS
async def test_user_blocks_are_shared_and_session_blocks_are_not(store: Store) -> None:
    a = (await store.create_session()).session_id
    b = (await store.create_session()).session_id
    await store.update_context(a, "memory", "the user is called Ana")
    await store.update_context(a, "scratchpad", "thread A notes")
    view_b = await store.get_context(b)
    assert _blocks(view_b)["memory"] == "the user is called Ana"
    assert _blocks(view_b)["scratchpad"] == ""
    assert _blocks(await store.get_context(a))["scratchpad"] == "thread A notes"


@BACKENDS
async def test_update_context_reports_usage(store: Store) -> None:
    sid = (await store.create_session()).session_id
    usage = await store.update_context(sid, "memory", "x" * 400)
    assert (usage.label, usage.tokens, usage.max_tokens, usage.percent) == ("memory", 100, 1100, 9)
    assert usage.usage == "memory: 100/1100 tokens, 9%"


@BACKENDS
async def test_append_adds_a_line(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.update_context(sid, "memory", "fact one", mode="append")
    await store.update_context(sid, "memory", "fact two", mode="append")
    assert _blocks(await store.get_context(sid))["memory"] == "fact one\nfact two"


@BACKENDS
async def test_writes_over_the_limit_are_refused_and_change_nothing(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.update_context(sid, "memory", "keep me")
    with pytest.raises(BlockOverLimit) as err:
        await store.update_context(sid, "memory", "y" * 4800)
    assert "block 'memory' would hold 1200 tokens; its limit is 1100" in str(err.value)
    assert _blocks(await store.get_context(sid))["memory"] == "keep me"
    with pytest.raises(BlockOverLimit):
        await store.update_context(sid, "memory", "y" * 4400, mode="append")
    assert _blocks(await store.get_context(sid))["memory"] == "keep me"


@BACKENDS
async def test_read_only_and_unknown_blocks_are_refused(store: Store) -> None:
    sid = (await store.create_session()).session_id
    with pytest.raises(BlockReadOnly, match="block 'soul' is read-only"):
        await store.update_context(sid, "soul", "be evil")
    for label in ("nope", "NOTES", "Memory", "", " ", "memory\x00", "x" * 10_000):
        with pytest.raises(BlockNotFound, match="the blocks are: soul, memory, scratchpad"):
            await store.update_context(sid, label, "x")
    with pytest.raises(InvalidInput, match="mode"):
        await store.update_context(sid, "memory", "x", mode="prepend")  # type: ignore[arg-type]
    assert _blocks(await store.get_context(sid))["soul"] == DEFAULT_SOUL


async def test_frozen_prompt_is_stable_until_refreshed(store: Store, db_path: Path) -> None:
    sid = (await store.create_session()).session_id
    frozen = (await store.get_context(sid)).system_prompt
    await store.update_context(sid, "memory", "likes green tea")
    view = await store.get_context(sid)
    assert view.system_prompt == frozen
    assert view.stale
    assert _blocks(view)["memory"] == "likes green tea"
    refreshed = await store.get_context(sid, refresh=True)
    assert refreshed.system_prompt != frozen
    assert "likes green tea" in refreshed.system_prompt
    assert not refreshed.stale
    await store.close()
    async with Store.open(db_path) as reopened:
        assert (await reopened.get_context(sid)).system_prompt == refreshed.system_prompt


@BACKENDS
async def test_clearing_a_session_refreshes_its_prompt(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(sid, [{"id": "root", "role": "user", "content": "x"}])
    await store.update_context(sid, "scratchpad", "new plan")
    await store.delete_messages(sid, "root")
    view = await store.get_context(sid)
    assert "new plan" in view.system_prompt
    assert not view.stale


async def test_configured_blocks(db_path: Path) -> None:
    config = Config(
        blocks=(
            BlockSpec(label="persona", default="You are terse.", readonly=True, scope="user"),
            BlockSpec(label="todo", max_tokens=10, scope="session", description="open items"),
        )
    )
    async with Store.open(db_path, config) as store:
        sid = (await store.create_session()).session_id
        view = await store.get_context(sid)
        assert [b.label for b in view.blocks] == ["persona", "todo"]
        assert '<block label="todo" scope="session" readonly="false" tokens="0/10">' in (
            view.system_prompt
        )
        with pytest.raises(BlockOverLimit, match="its limit is 10"):
            await store.update_context(sid, "todo", "z" * 44)


def test_config_refuses_duplicate_labels_and_oversized_defaults() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Config(blocks=(BlockSpec(label="a"), BlockSpec(label="a")))
    with pytest.raises(ValueError, match="over its max_tokens"):
        Config(blocks=(BlockSpec(label="a", max_tokens=1, default="long default text"),))
    with pytest.raises(ValueError):
        BlockSpec(label="Bad Label")

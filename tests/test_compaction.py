"""Compaction: a non-destructive overlay with protected head and tail, extension and split."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import BACKENDS
from threadline import (
    Config,
    InvalidInput,
    MessageIn,
    NothingToCompact,
    SessionEnded,
    Store,
)
from threadline.config import Compaction


async def _session(store: Store, n: int) -> str:
    sid = (await store.create_session(title="long")).session_id
    await store.append_messages(
        sid,
        [
            {"id": f"m{i:02}", "role": "user" if i % 2 == 0 else "assistant", "content": f"c{i}"}
            for i in range(n)
        ],
    )
    return sid


@BACKENDS
async def test_compaction_replaces_the_middle_when_reading_and_keeps_the_originals(
    store: Store,
) -> None:
    sid = await _session(store, 20)
    plan = await store.plan_compaction(sid, keep_first=2, keep_last=4)
    assert (plan.first_id, plan.last_id, plan.message_count) == ("m02", "m15", 14)
    assert [m.id for m in plan.messages] == [f"m{i:02}" for i in range(2, 16)]
    assert plan.previous_summary is None
    result = await store.compact_session(sid, "the middle, summarised", keep_first=2, keep_last=4)
    assert (result.first_id, result.last_id, result.replaced) == ("m02", "m15", 14)
    history = await store.get_history(sid)
    ids = [m.id for m in history.messages]
    assert ids == ["m00", "m01", result.summary_id, "m16", "m17", "m18", "m19"]
    summary = history.messages[2]
    assert (summary.role, summary.content, summary.summary_of) == (
        "user",
        "the middle, summarised",
        14,
    )
    full = await store.get_history(sid, include_compacted=True)
    assert [m.id for m in full.messages] == [f"m{i:02}" for i in range(20)]
    assert [m.compacted for m in full.messages] == [i in range(2, 16) for i in range(20)]
    info = await store.get_session(sid)
    assert info.message_count == 20
    assert info.compactions == 1


@BACKENDS
async def test_token_estimate_drops_after_compaction(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(
        sid, [{"role": "user", "content": "word " * 200} for _ in range(12)]
    )
    before = (await store.get_session(sid)).token_estimate
    result = await store.compact_session(sid, "short", keep_last=2)
    after = (await store.get_session(sid)).token_estimate
    assert before == 12 * 250
    assert result.token_estimate == after == 4 * 250 + 2  # 2 kept first, 2 kept last, summary


async def test_needs_compaction_follows_the_threshold(db_path: Path) -> None:
    config = Config(compaction=Compaction(threshold_tokens=1000))
    async with Store.open(db_path, config) as store:
        sid = (await store.create_session()).session_id
        small = await store.append_messages(sid, [{"role": "user", "content": "x" * 3200}])
        assert not small.needs_compaction
        big = await store.append_messages(sid, [{"role": "user", "content": "y" * 2000}] * 5)
        assert big.needs_compaction
        assert (await store.get_session(sid)).needs_compaction
        await store.compact_session(sid, "summary", keep_first=0, keep_last=1)
        assert not (await store.get_session(sid)).needs_compaction


@BACKENDS
async def test_a_tool_call_is_never_separated_from_its_result(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(
        sid,
        [
            {"id": "u0", "role": "user", "content": "start"},
            {"id": "a0", "role": "assistant", "content": "ok"},
            {"id": "u1", "role": "user", "content": "list files"},
            {"id": "call", "role": "assistant", "content": [{"type": "tool_use", "id": "t"}]},
            {"id": "res", "role": "tool", "content": "a.txt"},
            {"id": "a1", "role": "assistant", "content": "one file"},
            {"id": "u2", "role": "user", "content": "thanks"},
        ],
    )
    # keep_last=3 would start the tail at "res", splitting it from "call": the range ends earlier
    plan = await store.plan_compaction(sid, keep_first=1, keep_last=3)
    assert (plan.first_id, plan.last_id) == ("a0", "u1")
    # keep_first=4 would start the range on the result of a protected call: it starts later
    plan = await store.plan_compaction(sid, keep_first=4, keep_last=0)
    assert (plan.first_id, plan.last_id) == ("a1", "u2")


@BACKENDS
async def test_a_later_compaction_extends_the_earlier_one(store: Store) -> None:
    sid = await _session(store, 20)
    first = await store.compact_session(sid, "first summary", keep_first=2, keep_last=10)
    await store.append_messages(
        sid, [{"id": f"n{i}", "role": "user", "content": f"more {i}"} for i in range(6)]
    )
    plan = await store.plan_compaction(sid, keep_first=2, keep_last=3)
    assert plan.previous_summary == "first summary"
    assert plan.messages[0].id == first.summary_id
    second = await store.compact_session(sid, "updated summary", keep_first=2, keep_last=3)
    assert second.first_id == first.summary_id
    history = await store.get_history(sid)
    assert [m.id for m in history.messages] == ["m00", "m01", second.summary_id, "n3", "n4", "n5"]
    assert history.messages[2].summary_of == 21  # m02..m19 and n0..n2
    full = await store.get_history(sid, include_compacted=True)
    assert len(full.messages) == 26


@BACKENDS
async def test_compaction_follows_the_path_it_was_made_on(store: Store) -> None:
    sid = await _session(store, 12)
    await store.compact_session(sid, "gist", keep_first=1, keep_last=2)
    # a branch off m05 leaves the compacted range: its history shows the originals
    await store.append_messages(sid, [{"id": "b", "role": "user", "content": "b"}], parent_id="m05")
    assert [m.id for m in (await store.get_history(sid)).messages] == [
        "m00",
        "m01",
        "m02",
        "m03",
        "m04",
        "m05",
        "b",
    ]
    main_path = await store.get_history(sid, leaf_id="m11")
    assert main_path.messages[1].summary_of == 9


@BACKENDS
async def test_paging_through_a_summary(store: Store) -> None:
    sid = await _session(store, 20)
    result = await store.compact_session(sid, "gist", keep_first=2, keep_last=4)
    page = await store.get_history(sid, limit=5)
    assert [m.id for m in page.messages] == [result.summary_id, "m16", "m17", "m18", "m19"]
    assert page.next_before == result.summary_id
    older = await store.get_history(sid, limit=5, before=page.next_before)
    assert [m.id for m in older.messages] == ["m00", "m01"]
    assert not older.has_more


@BACKENDS
async def test_nothing_to_compact_in_a_short_session(store: Store) -> None:
    sid = await _session(store, 3)
    with pytest.raises(NothingToCompact, match="nothing to compact"):
        await store.compact_session(sid, "summary")
    assert (await store.get_session(sid)).compactions == 0


@BACKENDS
async def test_the_defaults_compact_an_ordinary_conversation(store: Store) -> None:
    """40 messages of about 60 tokens each (2,400 in all, under the default tail's 8,000
    tokens): the default tail keeps at most half of what follows the protected start."""
    sid = (await store.create_session()).session_id
    text = "a sentence of plain words about the trip " * 6
    await store.append_messages(
        sid, [{"id": f"m{i:02}", "role": "user", "content": text} for i in range(40)]
    )

    result = await store.compact_session(sid, "the gist")
    history = await store.get_history(sid)
    then = await store.compact_session(sid, "the gist, later", split=True)

    assert 2 <= result.replaced <= 38 - 6
    assert [m.id for m in history.messages[:2]] == ["m00", "m01"]
    assert history.messages[2].id == result.summary_id
    assert len(history.messages) - 3 >= 6  # at least keep_last messages stay
    assert then.new_session_id is not None  # a split right after a compaction works too


@BACKENDS
async def test_nothing_to_compact_names_the_arguments_to_change(store: Store) -> None:
    sid = await _session(store, 8)

    with pytest.raises(NothingToCompact) as refused:
        await store.compact_session(sid, "summary", keep_last=6)

    assert "keep_first=2 and keep_last=6 protect all 8 messages" in str(refused.value)
    assert "pass a smaller keep_last or keep_first" in str(refused.value)
    assert (await store.compact_session(sid, "summary")).replaced == 3  # the default tail: 3


@BACKENDS
async def test_compacting_twice_with_nothing_new_is_refused(store: Store) -> None:
    sid = await _session(store, 12)
    await store.compact_session(sid, "gist", keep_last=2)
    with pytest.raises(NothingToCompact):
        await store.compact_session(sid, "gist", keep_last=2)
    assert (await store.get_session(sid)).compactions == 1


@pytest.mark.parametrize("summary", ["", "   ", 5])
@BACKENDS
async def test_compaction_needs_a_summary(store: Store, summary: object) -> None:
    sid = await _session(store, 12)
    with pytest.raises(InvalidInput) as err:
        await store.compact_session(sid, summary)  # type: ignore[arg-type]
    assert err.value.field == "summary"


@BACKENDS
async def test_summary_ids_are_reserved(store: Store) -> None:
    sid = await _session(store, 12)
    result = await store.compact_session(sid, "gist", keep_last=2)
    with pytest.raises(InvalidInput) as err:
        await store.append_messages(
            sid, [MessageIn.model_construct(id=result.summary_id, role="user", content="x")]
        )
    assert err.value.field == "messages[0].id"
    assert (await store.get_session(sid)).message_count == 12


@BACKENDS
async def test_split_ends_the_session_and_seeds_a_child(store: Store) -> None:
    sid = await _session(store, 12)
    await store.update_context(sid, "scratchpad", "plan: finish")
    result = await store.compact_session(sid, "the story so far", keep_last=2, split=True)
    assert result.new_session_id is not None
    parent = await store.get_session(sid)
    child = await store.get_session(result.new_session_id)
    assert parent.status == "ended"
    assert (child.parent_session_id, child.lineage, child.forked_from_message_id) == (
        sid,
        "split",
        "m11",
    )
    history = await store.get_history(child.session_id)
    assert [m.content for m in history.messages] == ["the story so far", "c10", "c11"]
    context = await store.get_context(child.session_id)
    assert "plan: finish" in context.system_prompt
    with pytest.raises(SessionEnded, match="split"):
        await store.append_messages(sid, [{"role": "user", "content": "late"}])
    await store.append_messages(child.session_id, [{"role": "user", "content": "go on"}])


@BACKENDS
async def test_compaction_refreshes_the_frozen_prompt(store: Store) -> None:
    sid = await _session(store, 12)
    await store.update_context(sid, "memory", "likes tea")
    assert (await store.get_context(sid)).stale
    await store.compact_session(sid, "gist", keep_last=2)
    view = await store.get_context(sid)
    assert not view.stale
    assert "likes tea" in view.system_prompt

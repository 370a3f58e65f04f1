"""Sessions: creation, ids, listing, renaming, deletion, forks, usage."""

from __future__ import annotations

import re

import pytest

from tests.helpers import BACKENDS
from threadline import (
    InvalidInput,
    MessageNotFound,
    SessionExists,
    SessionNotFound,
    Store,
)


@BACKENDS
async def test_create_session_generates_short_unguessable_ids(store: Store) -> None:
    ids = {(await store.create_session()).session_id for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", sid)  # 96 random bits, url-safe


@BACKENDS
async def test_create_session_with_chosen_id_title_metadata_and_seed(store: Store) -> None:
    info = await store.create_session(
        title="Trip",
        session_id="trip-2026.kyoto_1",
        metadata={"owner": "ana", "n": [1, 2]},
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    assert info.session_id == "trip-2026.kyoto_1"
    assert info.title == "Trip"
    assert info.metadata == {"owner": "ana", "n": [1, 2]}
    assert info.message_count == 2
    assert info.status == "active"
    history = await store.get_history("trip-2026.kyoto_1")
    assert [m.content for m in history.messages] == ["hi", "hello"]
    assert history.messages[-1].id == info.head_id


@BACKENDS
async def test_create_session_refuses_an_existing_id(store: Store) -> None:
    await store.create_session(session_id="dup", title="first")
    with pytest.raises(SessionExists, match="'dup' already exists"):
        await store.create_session(session_id="dup", title="second")
    assert (await store.get_session("dup")).title == "first"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        "../../etc/passwd",
        "1 OR 1=1",
        "'; DROP TABLE sessions;--",
        "x" * 65,
        "a\x00b",
        "ä",
        "a b",
        "compaction:1",
    ],
)
@BACKENDS
async def test_bad_session_ids_are_refused_with_the_rule(store: Store, bad: str) -> None:
    with pytest.raises(InvalidInput) as err:
        await store.create_session(session_id=bad)
    assert err.value.field == "session_id"
    assert "A-Za-z0-9" in err.value.rule
    with pytest.raises(InvalidInput):
        await store.get_session(bad)
    assert (await store.list_sessions()).sessions == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_session("nope"),
        lambda s: s.rename_session("nope", "t"),
        lambda s: s.delete_session("nope"),
        lambda s: s.fork_session("nope"),
        lambda s: s.append_messages("nope", [{"role": "user", "content": "x"}]),
        lambda s: s.get_history("nope"),
        lambda s: s.list_branches("nope"),
        lambda s: s.set_head("nope", "m"),
        lambda s: s.delete_messages("nope", "m"),
        lambda s: s.compact_session("nope", "summary"),
        lambda s: s.plan_compaction("nope"),
        lambda s: s.update_context("nope", "memory", "x"),
        lambda s: s.get_context("nope"),
        lambda s: s.get_context("nope", refresh=True),
        lambda s: s.session_search("x", session_id="nope"),
        lambda s: s.record_usage("nope", 1, 1),
    ],
)
async def test_unknown_session_is_an_error_everywhere_and_creates_nothing(
    store: Store, call: object
) -> None:
    with pytest.raises(SessionNotFound, match="session 'nope' not found"):
        await call(store)  # type: ignore[operator]
    assert (await store.list_sessions()).sessions == []


@BACKENDS
async def test_list_sessions_newest_activity_first_with_paging(store: Store) -> None:
    ids = [(await store.create_session(title=f"s{i}")).session_id for i in range(7)]
    await store.append_messages(ids[2], [{"role": "user", "content": "bump"}])
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_sessions(limit=3, cursor=cursor)
        seen += [s.session_id for s in page.sessions]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen[0] == ids[2]
    assert seen[1:] == [i for i in reversed(ids) if i != ids[2]]


@BACKENDS
async def test_list_sessions_filters_by_status(store: Store) -> None:
    sid = (await store.create_session(messages=[{"role": "user", "content": "x"}] * 1)).session_id
    await store.append_messages(sid, [{"role": "assistant", "content": f"a{i}"} for i in range(12)])
    split = await store.compact_session(sid, "summary", keep_last=2, split=True)
    ended = await store.list_sessions(status="ended")
    active = await store.list_sessions(status="active")
    assert [s.session_id for s in ended.sessions] == [sid]
    assert [s.session_id for s in active.sessions] == [split.new_session_id]


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "W10", "W1sxXV0", "a" * 600])
@BACKENDS
async def test_list_sessions_refuses_forged_cursors(store: Store, cursor: str) -> None:
    with pytest.raises(InvalidInput) as err:
        await store.list_sessions(cursor=cursor)
    assert err.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, -1, 201, 2**63, True])
@BACKENDS
async def test_list_sessions_limit_is_bounded(store: Store, limit: int) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await store.list_sessions(limit=limit)


@BACKENDS
async def test_rename_session_changes_title_and_metadata(store: Store) -> None:
    sid = (await store.create_session(title="old", metadata={"a": 1})).session_id
    info = await store.rename_session(sid, "new")
    assert (info.title, info.metadata) == ("new", {"a": 1})
    info = await store.rename_session(sid, "newer", metadata={"b": 2})
    assert (info.title, info.metadata) == ("newer", {"b": 2})
    with pytest.raises(InvalidInput, match="title: is 201 characters; the limit is 200"):
        await store.rename_session(sid, "t" * 201)
    assert (await store.get_session(sid)).title == "newer"


@BACKENDS
async def test_delete_session_removes_everything_that_is_its_own(store: Store) -> None:
    keep = (await store.create_session(messages=[{"role": "user", "content": "keep"}])).session_id
    doomed = (await store.create_session(messages=[{"role": "user", "content": "bye"}])).session_id
    await store.update_context(doomed, "scratchpad", "notes")
    await store.update_context(doomed, "memory", "user fact")
    await store.record_usage(doomed, 1, 1)
    deleted = await store.delete_session(doomed)
    assert deleted.messages_deleted == 1
    with pytest.raises(SessionNotFound):
        await store.get_session(doomed)
    # user-scoped memory survives: it belongs to the user, not the session
    view = await store.get_context(keep)
    assert {b.label: b.content for b in view.blocks}["memory"] == "user fact"
    assert [m.content for m in (await store.get_history(keep)).messages] == ["keep"]


@BACKENDS
async def test_fork_copies_the_path_up_to_a_message_and_records_lineage(store: Store) -> None:
    sid = (await store.create_session(title="base")).session_id
    r = await store.append_messages(
        sid, [{"id": f"m{i}", "role": "user", "content": f"c{i}"} for i in range(5)]
    )
    assert r.head_id == "m4"
    fork = await store.fork_session(sid, message_id="m2")
    assert fork.parent_session_id == sid
    assert fork.lineage == "fork"
    assert fork.forked_from_message_id == "m2"
    assert fork.title == "base (fork)"
    history = await store.get_history(fork.session_id)
    assert [m.id for m in history.messages] == ["m0", "m1", "m2"]
    assert [m.parent_id for m in history.messages] == [None, "m0", "m1"]
    assert fork.head_id == "m2"
    assert fork.message_count == 3


@BACKENDS
async def test_fork_is_independent_of_its_source(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(sid, [{"role": "user", "content": f"c{i}"} for i in range(12)])
    await store.update_context(sid, "scratchpad", "source notes")
    fork = (await store.fork_session(sid, title="copy")).session_id
    before = [m.content for m in (await store.get_history(fork)).messages]
    assert before == [f"c{i}" for i in range(12)]
    # writes, compactions, context edits and deletion on the source never show in the fork
    await store.append_messages(sid, [{"role": "user", "content": "only in source"}])
    await store.compact_session(sid, "summary", keep_last=2)
    await store.update_context(sid, "scratchpad", "changed")
    await store.delete_session(sid)
    assert [m.content for m in (await store.get_history(fork)).messages] == before
    view = await store.get_context(fork)
    assert {b.label: b.content for b in view.blocks}["scratchpad"] == "source notes"
    # and the fork takes writes of its own
    await store.append_messages(fork, [{"role": "user", "content": "fork only"}])
    assert (await store.get_session(fork)).message_count == 13


@BACKENDS
async def test_fork_keeps_compactions_on_the_copied_path(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(sid, [{"role": "user", "content": f"c{i}"} for i in range(12)])
    await store.compact_session(sid, "the gist", keep_last=2)
    source = await store.get_history(sid)
    fork = (await store.fork_session(sid)).session_id
    copy = await store.get_history(fork)
    assert [m.content for m in copy.messages] == [m.content for m in source.messages]
    assert copy.messages[2].summary_of == source.messages[2].summary_of == 8
    assert (await store.get_session(fork)).token_estimate == (
        await store.get_session(sid)
    ).token_estimate


@BACKENDS
async def test_fork_of_unknown_message_is_an_error(store: Store) -> None:
    sid = (await store.create_session()).session_id
    with pytest.raises(MessageNotFound, match="message_id: message 'zz' not found"):
        await store.fork_session(sid, message_id="zz")
    assert len((await store.list_sessions()).sessions) == 1


@BACKENDS
async def test_record_usage_sums_per_session(store: Store) -> None:
    a = (await store.create_session()).session_id
    b = (await store.create_session()).session_id
    await store.record_usage(a, 100, 20, 0.5, "model-x")
    totals = await store.record_usage(a, 10, 2, None, None)
    await store.record_usage(b, 1, 1, 1.0)
    assert (totals.input_tokens, totals.output_tokens, totals.cost, totals.turns) == (
        110,
        22,
        0.5,
        2,
    )
    info = await store.get_session(a)
    assert (info.input_tokens, info.output_tokens, info.cost, info.turns) == (110, 22, 0.5, 2)
    assert info.last_model == "model-x"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1, 0), "input_tokens"),
        ((0, -5), "output_tokens"),
        ((1.5, 0), "input_tokens"),
        ((0, 0, -1.0), "cost"),
        ((0, 0, float("nan")), "cost"),
        ((0, 0, None, ""), "model"),
    ],
)
@BACKENDS
async def test_record_usage_validates(store: Store, args: tuple[object, ...], field: str) -> None:
    sid = (await store.create_session()).session_id
    with pytest.raises(InvalidInput) as err:
        await store.record_usage(sid, *args)  # type: ignore[arg-type]
    assert err.value.field == field
    assert (await store.get_session(sid)).turns == 0

"""Messages: byte-exact content, idempotency, limits, the tree, branches, the head, paging."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

from tests.helpers import BACKENDS, dump
from threadline import (
    Config,
    InvalidInput,
    MessageConflict,
    MessageNotFound,
    NothingToCompact,
    Store,
)
from threadline.config import Limits

TRICKY = [
    "plain",
    "a\x00b",
    "emoji 👩‍👩‍👧 and 𝄞 four-byte",
    "RTL \u202eevil\u202c zero\u200bwidth",
    "cafe\u0301 (NFD) vs café (NFC)",
    "",
    "  leading and trailing  \n",
    "x" * 10_000,
]


async def _session(store: Store) -> str:
    return (await store.create_session()).session_id


@pytest.mark.parametrize("content", TRICKY)
@BACKENDS
async def test_string_content_round_trips_exactly(store: Store, content: str) -> None:
    sid = await _session(store)
    await store.append_messages(sid, [{"role": "user", "content": content}])
    (message,) = (await store.get_history(sid)).messages
    assert message.content == content
    assert type(message.content) is str


@BACKENDS
async def test_json_parts_round_trip_exactly(store: Store) -> None:
    parts = [
        {"type": "text", "text": "see tool"},
        {"type": "tool_use", "id": "call_1", "name": "search", "input": {"q": "x", "n": 1.0}},
        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
        {"type": "custom", "nested": [1, 2.5, None, True, {"k": "v\x00"}]},
    ]
    sid = await _session(store)
    await store.append_messages(
        sid, [{"role": "assistant", "content": parts, "name": "bot", "metadata": {"m": 1}}]
    )
    (message,) = (await store.get_history(sid)).messages
    assert message.content == parts
    assert isinstance(message.content[1]["input"]["n"], float)  # type: ignore[index]
    assert (message.name, message.metadata) == ("bot", {"m": 1})


@BACKENDS
async def test_content_with_lone_surrogate_is_refused_cleanly(store: Store) -> None:
    sid = await _session(store)
    with pytest.raises(InvalidInput, match=r"messages\[0\]\.content: must be valid Unicode"):
        await store.append_messages(sid, [{"role": "user", "content": "bad \ud800"}])
    with pytest.raises(InvalidInput, match=r"messages\[0\]\.content"):
        await store.append_messages(sid, [{"role": "user", "content": [{"text": "\udfff"}]}])
    assert (await store.get_session(sid)).message_count == 0


@BACKENDS
async def test_append_without_parent_extends_head(store: Store) -> None:
    sid = await _session(store)
    first = await store.append_messages(sid, [{"role": "user", "content": "1"}])
    second = await store.append_messages(
        sid, [{"role": "assistant", "content": "2"}, {"role": "user", "content": "3"}]
    )
    history = await store.get_history(sid)
    assert [m.content for m in history.messages] == ["1", "2", "3"]
    assert history.messages[1].parent_id == first.head_id
    assert second.head_id == history.messages[2].id
    assert second.message_ids == [m.id for m in history.messages[1:]]


@BACKENDS
async def test_explicit_parent_branches_and_moves_the_head(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(
        sid,
        [
            {"id": "q", "role": "user", "content": "question"},
            {"id": "a1", "role": "assistant", "content": "first answer"},
        ],
    )
    regen = await store.append_messages(
        sid, [{"id": "a2", "role": "assistant", "content": "second answer"}], parent_id="q"
    )
    assert regen.head_id == "a2"
    assert [m.id for m in (await store.get_history(sid)).messages] == ["q", "a2"]
    assert [m.id for m in (await store.get_history(sid, leaf_id="a1")).messages] == ["q", "a1"]
    branches = await store.list_branches(sid)
    assert [(b.leaf_id, b.message_count, b.is_head) for b in branches] == [
        ("a1", 2, False),
        ("a2", 2, True),
    ]
    assert branches[0].preview == "first answer"
    assert (await store.get_session(sid)).branch_count == 2


@BACKENDS
async def test_parent_none_starts_a_new_root(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(sid, [{"id": "a", "role": "user", "content": "a"}])
    await store.append_messages(sid, [{"id": "b", "role": "user", "content": "b"}], parent_id=None)
    history = await store.get_history(sid)
    assert [(m.id, m.parent_id) for m in history.messages] == [("b", None)]
    assert len(await store.list_branches(sid)) == 2


@BACKENDS
async def test_unknown_parent_is_an_error_not_a_new_root(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(sid, [{"role": "user", "content": "a"}])
    with pytest.raises(MessageNotFound, match="parent_id: message 'ghost' not found"):
        await store.append_messages(sid, [{"role": "user", "content": "b"}], parent_id="ghost")
    assert (await store.get_session(sid)).message_count == 1


@BACKENDS
async def test_set_head_moves_history_and_next_append(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(
        sid, [{"id": f"m{i}", "role": "user", "content": str(i)} for i in range(4)]
    )
    info = await store.set_head(sid, "m1")
    assert info.head_id == "m1"
    assert [m.id for m in (await store.get_history(sid)).messages] == ["m0", "m1"]
    await store.append_messages(sid, [{"id": "alt", "role": "user", "content": "alt"}])
    assert [m.id for m in (await store.get_history(sid)).messages] == ["m0", "m1", "alt"]
    with pytest.raises(MessageNotFound):
        await store.set_head(sid, "nope")


@BACKENDS
async def test_delete_messages_removes_the_subtree_and_moves_the_head_up(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(
        sid, [{"id": f"m{i}", "role": "user", "content": str(i)} for i in range(4)]
    )
    await store.append_messages(
        sid, [{"id": "b", "role": "user", "content": "branch"}], parent_id="m1"
    )
    deleted = await store.delete_messages(sid, "m2")
    assert deleted.messages_deleted == 2  # m2, m3
    assert deleted.head_id == "b"  # the head was not in the subtree
    await store.set_head(sid, "b")
    deleted = await store.delete_messages(sid, "m1")
    assert deleted.messages_deleted == 2  # m1, b
    assert deleted.head_id == "m0"
    info = await store.get_session(sid)
    assert (info.message_count, info.head_id) == (1, "m0")


@BACKENDS
async def test_idempotent_append_by_message_id(store: Store) -> None:
    sid = await _session(store)
    batch = [
        {"id": "u1", "role": "user", "content": "hello"},
        {"id": "a1", "role": "assistant", "content": [{"type": "text", "text": "hi"}]},
    ]
    first = await store.append_messages(sid, batch)
    again = await store.append_messages(sid, batch)
    assert again.message_ids == first.message_ids == ["u1", "a1"]
    assert again.head_id == "a1"
    assert (await store.get_session(sid)).message_count == 2


@BACKENDS
async def test_reusing_a_message_id_with_other_content_is_refused(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(sid, [{"id": "u1", "role": "user", "content": "hello"}])
    for changed in (
        {"id": "u1", "role": "user", "content": "HELLO"},
        {"id": "u1", "role": "assistant", "content": "hello"},
        {"id": "u1", "role": "user", "content": "hello", "name": "x"},
        {"id": "u1", "role": "user", "content": "hello", "metadata": {"a": 1}},
    ):
        with pytest.raises(MessageConflict, match=r"'u1' already exists .* different content"):
            await store.append_messages(sid, [changed])
    assert [m.content for m in (await store.get_history(sid)).messages] == ["hello"]


async def test_a_batch_lands_whole_or_not_at_all(store: Store, db_path: Path) -> None:
    sid = await _session(store)
    await store.append_messages(sid, [{"role": "user", "content": "before"}])
    before = dump(db_path)
    batch: list[dict[str, object]] = [{"role": "user", "content": f"m{i}"} for i in range(100)]
    batch[57] = {"role": "ADMIN", "content": "x"}
    with pytest.raises(InvalidInput, match=r"messages\[57\]\.role"):
        await store.append_messages(sid, batch)
    assert dump(db_path) == before


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "system ", "content": "x"}], "messages[0].role"),
        ([{"role": "", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": "x", "id": "bad id"}], "messages[0].id"),
        ([{"role": "user", "content": "x", "id": "compaction:1"}], "messages[0].id"),
        ([{"role": "user", "content": "x", "extra": 1}], "messages[0].extra"),
        ([{"role": "user", "content": "x", "metadata": [1]}], "messages[0].metadata"),
    ],
)
@BACKENDS
async def test_bad_messages_name_the_field(store: Store, messages: object, field: str) -> None:
    sid = await _session(store)
    with pytest.raises(InvalidInput) as err:
        await store.append_messages(sid, messages)  # type: ignore[arg-type]
    assert err.value.field == field
    assert (await store.get_session(sid)).message_count == 0


async def test_size_limits_are_named(db_path: Path) -> None:
    config = Config(limits=Limits(max_message_chars=100, max_batch_messages=3))
    async with Store.open(db_path, config) as store:
        sid = await _session(store)
        with pytest.raises(InvalidInput, match="is 101 characters; the limit is 100 per message"):
            await store.append_messages(sid, [{"role": "user", "content": "x" * 101}])
        with pytest.raises(InvalidInput, match="holds 4 messages; the limit is 3"):
            await store.append_messages(sid, [{"role": "user", "content": "x"}] * 4)
        await store.append_messages(sid, [{"role": "user", "content": "x" * 100}] * 3)
        assert (await store.get_session(sid)).message_count == 3


@BACKENDS
async def test_history_pages_from_the_end(store: Store) -> None:
    sid = await _session(store)
    await store.append_messages(
        sid, [{"id": f"m{i:02}", "role": "user", "content": str(i)} for i in range(25)]
    )
    pages = []
    before = None
    while True:
        page = await store.get_history(sid, limit=10, before=before)
        pages.append([m.id for m in page.messages])
        if not page.has_more:
            assert page.next_before is None
            break
        before = page.next_before
    assert pages == [
        [f"m{i:02}" for i in range(15, 25)],
        [f"m{i:02}" for i in range(5, 15)],
        [f"m{i:02}" for i in range(5)],
    ]


@BACKENDS
async def test_history_of_an_empty_session(store: Store) -> None:
    sid = await _session(store)
    history = await store.get_history(sid, limit=5)
    assert (history.messages, history.has_more, history.leaf_id) == ([], False, None)


@BACKENDS
async def test_truncate_tool_output_shortens_only_old_tool_results(store: Store) -> None:
    sid = await _session(store)
    big = "o" * 500
    await store.append_messages(
        sid,
        [
            {"role": "user", "content": "run it"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls"}]},
            {"role": "tool", "content": big},
            {"role": "user", "content": [{"type": "tool_result", "content": big}]},
            {"role": "user", "content": "and again"},
            {"role": "tool", "content": big},
        ],
    )
    history = await store.get_history(sid, truncate_tool_output=50)
    old_tool, old_result, latest = history.messages[2], history.messages[3], history.messages[5]
    assert old_tool.truncated and old_tool.content.startswith("o" * 50 + "… [450 more")  # type: ignore[union-attr]
    assert old_result.truncated
    assert old_result.content[0]["content"].startswith("o" * 50 + "…")  # type: ignore[index]
    assert not latest.truncated and latest.content == big
    # the stored messages are untouched
    full = await store.get_history(sid)
    assert full.messages[2].content == big


# -- history_since: what changed since a read -------------------------------------------------


@BACKENDS
async def test_history_since_gives_what_follows_or_the_whole_history(store: Store) -> None:
    sid = (await store.create_session()).session_id
    first = await store.history_since(sid)
    assert (first.messages, first.reset) == ([], True)
    await store.append_messages(sid, [{"role": "user", "content": f"m{i}"} for i in range(3)])
    grown = await store.history_since(sid, first.revision)
    assert [m.content for m in grown.messages] == ["m0", "m1", "m2"] and not grown.reset
    same = await store.history_since(sid, grown.revision)
    assert (same.messages, same.reset, same.revision) == ([], False, grown.revision)
    await store.append_messages(sid, [{"role": "assistant", "content": "m3"}])
    more = await store.history_since(sid, grown.revision)
    assert [m.content for m in more.messages] == ["m3"] and not more.reset
    unknown = await store.history_since(sid, "not-a-revision")
    assert unknown.reset and len(unknown.messages) == 4
    with pytest.raises(InvalidInput, match="revision: must be a revision"):
        await store.history_since(sid, "x" * 65)


@BACKENDS
async def test_history_since_follows_every_change_a_session_can_take(store: Store) -> None:
    """Whatever happens to the session, what a reader holds plus what history_since gives
    is get_history's whole history, message for message."""
    rng = random.Random(7)
    sid = (await store.create_session()).session_id
    held: list[tuple[str, object]] = []
    revision = None
    resets = grows = 0
    compacted = 0
    for step in range(240):
        history = (await store.get_history(sid)).messages
        op = rng.choice(["append"] * 5 + ["branch", "head", "pop", "compact", "compact",
                                          "clear", "delete"])  # fmt: skip
        if op == "append":
            await store.append_messages(sid, [{"role": "user", "content": f"s{step}"}])
        elif op == "branch" and history:
            parent = rng.choice(history).id
            if not parent.startswith("compaction:"):
                await store.append_messages(
                    sid, [{"role": "assistant", "content": f"b{step}"}], parent_id=parent
                )
        elif op == "head":
            leaves = await store.list_branches(sid)
            if leaves:
                await store.set_head(sid, rng.choice(leaves).leaf_id)
        elif op == "pop":
            await store.pop_message(sid)
        elif op == "compact" and len(history) > 5:
            with contextlib.suppress(NothingToCompact):
                await store.compact_session(sid, f"summary {step}", keep_first=1, keep_last=2)
                compacted += 1
        elif op == "clear" and rng.random() < 0.1:
            await store.clear_session(sid)
        elif op == "delete" and history and rng.random() < 0.3:
            victim = rng.choice(history).id
            if not victim.startswith("compaction:"):
                await store.delete_messages(sid, victim)
        if rng.random() < 0.6:  # the reader catches up now and then, not after every change
            delta = await store.history_since(sid, revision)
            got = [(m.id, m.content) for m in delta.messages]
            held = got if delta.reset else held + got
            revision = delta.revision
            resets, grows = resets + delta.reset, grows + (not delta.reset and bool(got))
            expected = (await store.get_history(sid)).messages
            assert held == [(m.id, m.content) for m in expected], (step, op)
    assert resets > 5 and grows > 20 and compacted > 10, (resets, grows, compacted)

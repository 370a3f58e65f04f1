"""Export and import: a restore reads exactly like the original, conflicts change nothing.

Stores are real files; the CLI runs in-process (``main``) except in the terminal checks, which
run it on a pseudo-terminal to see what a person sees.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.helpers import dump, integrity
from threadline import Store
from threadline.cli import main
from threadline.paths import LOCAL_STORE
from threadline.storage import (
    ExportUnreadable,
    ImportRefused,
    JsonlWriter,
    JsonWriter,
    atomic_output,
    import_file,
    validate,
)

pytestmark = pytest.mark.anyio


async def build_rich(path: Path) -> list[str]:
    """A store with every kind of fact an export must carry; returns its session ids."""
    async with Store.open(path) as store:
        await store.create_session(
            title="Trip to Kyoto", session_id="trip", metadata={"tags": ["travel"], "n": 1.5}
        )
        first = await store.append_messages(
            "trip",
            [
                {"role": "system", "content": "Be brief."},
                *(
                    {"role": "user" if i % 2 else "assistant", "content": f"day {i}: 竹林 " * 20}
                    for i in range(30)
                ),
            ],
        )
        # an edit (a branch), a tool call with JSON parts, a named message with metadata
        await store.append_messages(
            "trip",
            [{"role": "user", "content": "actually, Osaka?", "metadata": {"edited": True}}],
            parent_id=first.message_ids[10],
        )
        await store.set_head("trip", first.message_ids[-1])
        await store.append_messages(
            "trip",
            [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "checking trains"},
                        {"type": "tool_use", "id": "t1", "name": "rail", "input": {"q": "JR"}},
                    ],
                },
                {
                    "role": "tool",
                    "name": "rail",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
                },
            ],
        )
        await store.compact_session("trip", "The plan so far: Kyoto, bamboo.", keep_last=4)
        await store.record_usage("trip", 1200, 300, 0.0125, "model-a")
        await store.record_usage("trip", 800, 200, None, None)
        await store.update_context("trip", "memory", "Prefers trains.")
        await store.update_context("trip", "scratchpad", "book the ryokan")
        fork = await store.fork_session("trip", first.message_ids[20], title="Kyoto, cheaper")
        await store.append_messages(fork.session_id, [{"role": "user", "content": "hostels?"}])
        await store.create_session(title="Long one", session_id="long")
        await store.append_messages(
            "long", [{"role": "user", "content": f"step {i} " * 30} for i in range(40)]
        )
        done = await store.compact_session("long", "Steps 0-33 done.", keep_last=6, split=True)
        assert done.new_session_id is not None
        await store.create_session(title="empty", session_id="empty")
        return ["trip", fork.session_id, "long", done.new_session_id, "empty"]


async def observe(path: Path, ids: list[str]) -> dict[str, Any]:
    """Everything a reader of the store can see of these sessions, as JSON text."""
    seen: dict[str, Any] = {}
    async with Store.open(path) as store:
        for sid in dict.fromkeys(ids):
            branches = await store.list_branches(sid)
            seen[sid] = {
                "info": (await store.get_session(sid)).model_dump_json(),
                "branches": [b.model_dump_json() for b in branches],
                "context": (await store.get_context(sid)).model_dump_json(),
                "histories": [
                    (
                        await store.get_history(sid, leaf_id=b.leaf_id, include_compacted=flag)
                    ).model_dump_json()
                    for b in branches
                    for flag in (False, True)
                ],
            }
        seen["user"] = [b.model_dump_json() for b in await store.get_user_context()]
        seen["search"] = (await store.session_search("竹林", limit=50)).model_dump_json()
    return seen


async def run(*argv: str | Path) -> int:
    """The CLI in-process (in a thread: it runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, [str(a) for a in argv])


async def rich_export(tmp_path: Path, *session_ids: str) -> Path:
    """``build_rich`` in ``tmp_path/a``, exported (those sessions, in that order; default
    all) to ``tmp_path/e.jsonl``."""
    source = tmp_path / "a"
    source.mkdir()
    await build_rich(source / LOCAL_STORE)
    exported = tmp_path / "e.jsonl"
    assert await run("export", *session_ids, "-o", exported, "--data-dir", source) == 0
    return exported


def body(export: Path) -> str:
    """An export without its first line (the header says when it was made)."""
    return export.read_text(encoding="utf-8").split("\n", 1)[1]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
async def test_export_then_import_into_an_empty_data_dir_reads_exactly_the_same(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    ids = await build_rich(source / LOCAL_STORE)
    exported = tmp_path / f"export.{fmt}"
    assert await run("export", "--format", fmt, "-o", exported, "--data-dir", source) == 0
    assert await run("import", exported, "--data-dir", target) == 0
    out = capsys.readouterr().out
    assert re.search(r"imported 5 sessions \([\d,]+ messages\) and 1 user block", out), out

    assert await observe(target / LOCAL_STORE, ids) == await observe(source / LOCAL_STORE, ids)
    again = tmp_path / f"again.{fmt}"
    assert await run("export", "--format", fmt, "-o", again, "--data-dir", target) == 0
    if fmt == "jsonl":
        assert body(again) == body(exported)  # byte for byte, but for the export time
    else:
        strip = re.compile(r'"exported_at": "[^"]+"')
        assert strip.sub("", again.read_text()) == strip.sub("", exported.read_text())
    assert integrity(target / LOCAL_STORE) == ("ok", "ok")


async def test_the_export_names_every_fact_it_restores(tmp_path: Path) -> None:
    await build_rich(tmp_path / LOCAL_STORE)
    exported = tmp_path / "e.jsonl"
    assert await run("export", "-o", exported, "--data-dir", tmp_path) == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    header, blocks, *sessions = lines
    assert header["type"] == "header" and header["format"] == "threadline-export"
    assert header["sessions"] == len(sessions) == 5
    assert header["messages"] == sum(len(s["messages"]) for s in sessions)
    assert blocks == {
        "type": "blocks",
        "blocks": [{"label": "memory", "content": "Prefers trains.", "updated_at": ANY_TIME}],
    }
    trip = next(s for s in sessions if s["session_id"] == "trip")
    assert trip["metadata"] == {"tags": ["travel"], "n": 1.5}
    assert [u["cost"] for u in trip["usage"]] == [0.0125, None]
    assert trip["blocks"][0]["content"] == "book the ryokan"
    assert len({m["parent_id"] for m in trip["messages"]}) < len(trip["messages"])  # a tree
    assert trip["compactions"][0]["summary"] == "The plan so far: Kyoto, bamboo."
    assert trip["messages"][-1]["content"][0]["tool_use_id"] == "t1"
    split = next(s for s in sessions if s["lineage"] == "split")
    assert split["parent_session_id"] == "long"


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", other))


ANY_TIME = _AnyTime()


async def test_an_import_over_existing_sessions_changes_nothing_unless_told_to_skip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await build_rich(tmp_path / LOCAL_STORE)
    exported = tmp_path / "e.jsonl"
    assert await run("export", "-o", exported, "--data-dir", tmp_path) == 0
    async with Store.open(tmp_path / LOCAL_STORE) as store:
        await store.delete_session("empty")
        await store.update_context("trip", "memory", "Prefers planes now.")
    before = dump(tmp_path / LOCAL_STORE)
    capsys.readouterr()

    assert await run("import", exported, "--data-dir", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("threadline: nothing imported: 4 sessions already exist (")
    assert "user blocks memory hold other content" in err and err.count("\n") == 1
    assert dump(tmp_path / LOCAL_STORE) == before

    assert await run("import", exported, "--data-dir", tmp_path, "--skip-existing") == 0
    out = capsys.readouterr().out
    assert "imported 1 session (0 messages) and 0 user blocks" in out
    assert "skipped 4 sessions that already exist" in out
    assert "kept this store's user blocks memory" in out
    async with Store.open(tmp_path / LOCAL_STORE) as store:
        assert (await store.get_session("empty")).title == "empty"
        memory = [b for b in await store.get_user_context() if b.label == "memory"]
        assert memory[0].content == "Prefers planes now."
    assert set(ids) >= {"trip", "long", "empty"}


async def test_summary_ids_taken_in_the_target_are_renumbered_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        async with Store.open(d / LOCAL_STORE) as store:
            sid = "one" if d == a else "other"
            await store.create_session(session_id=sid)
            await store.append_messages(sid, [{"role": "user", "content": "x" * 99}] * 1)
            await store.append_messages(
                sid, [{"role": "user", "content": f"m{i}"} for i in range(12)]
            )
            await store.compact_session(sid, f"summary of {sid}", keep_last=2)
    exported = tmp_path / "e.jsonl"
    assert await run("export", "-o", exported, "--data-dir", a) == 0
    assert await run("import", exported, "--data-dir", b) == 0
    assert "session one: summary compaction:1 is now compaction:2" in capsys.readouterr().out
    async with Store.open(b / LOCAL_STORE) as store:
        (summary,) = [m for m in (await store.get_history("one")).messages if m.summary_of]
        assert (summary.id, summary.content) == ("compaction:2", "summary of one")
        (other,) = [m for m in (await store.get_history("other")).messages if m.summary_of]
        assert other.id == "compaction:1"


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda lines: lines[:-1], "the header announces 5 sessions"),
        (lambda lines: [*lines[:-1], lines[-1][:-20]], "not JSON"),
        (
            lambda lines: [*lines[:2], lines[2].replace('"role": "user"', '"role": "boss"', 1)],
            "role: Input should be",
        ),
        (lambda lines: [lines[0].replace('"version": 1', '"version": 9'), *lines[1:]], "version"),
        (lambda lines: ["[]", *lines[1:]], "not a threadline export"),
        (lambda lines: [], "is empty"),
    ],
    ids=["missing-session", "truncated-line", "bad-role", "newer-format", "not-ours", "empty"],
)
async def test_a_damaged_export_is_refused_before_anything_is_written(
    tmp_path: Path, mangle: Any, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = await rich_export(tmp_path)
    lines = exported.read_text().splitlines()
    exported.write_text("\n".join(mangle(lines)) + "\n")
    target = tmp_path / "b"
    target.mkdir()
    async with Store.open(target / LOCAL_STORE) as store:
        await store.create_session(session_id="mine")
    before = dump(target / LOCAL_STORE)
    capsys.readouterr()
    assert await run("import", exported, "--data-dir", target) == 2
    err = capsys.readouterr().err
    assert err.startswith("threadline: ") and error in err and err.count("\n") == 1, err
    assert dump(target / LOCAL_STORE) == before


async def test_markdown_export_marks_branches_and_compactions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await build_rich(tmp_path / LOCAL_STORE)
    assert await run("export", "trip", "--format", "markdown", "--data-dir", tmp_path) == 0
    text = capsys.readouterr().out
    assert "# context block `memory` (shared by all sessions)\n\nPrefers trains." in text
    assert "# Trip to Kyoto" in text and "# Kyoto, cheaper" not in text  # only what was asked
    assert "> ✂ `compaction:1`: the " in text and "The plan so far: Kyoto, bamboo." in text
    assert "> ⎇ 1 other branch from here" in text
    assert re.search(r"## branch ending at `[\w-]+` \(after `[\w-]+`\)", text)
    assert "actually, Osaka?" in text  # the other branch is printed too
    assert "checking trains" in text and '"tool_use_id": "t1"' in text


async def test_export_of_an_unknown_session_is_one_line_and_writes_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert await run("sessions", "list", "--data-dir", tmp_path) == 2  # no store: nothing created
    assert not (tmp_path / LOCAL_STORE).exists()
    capsys.readouterr()
    (tmp_path / "d").mkdir()
    out = tmp_path / "e.jsonl"
    assert await run("import", "-", "--data-dir", tmp_path / "d") == 2  # empty stdin
    assert "threadline: stdin is empty" in capsys.readouterr().err
    assert list((tmp_path / "d").iterdir()) == []  # a refused import creates no store
    async with Store.open(tmp_path / "d" / LOCAL_STORE):
        pass
    assert await run("export", "nope", "-o", out, "--data-dir", tmp_path / "d") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "threadline: session 'nope' not found"
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- on a terminal --------------------------------------------------------------------------


def on_terminal(argv: list[str], columns: int = 100, timeout: float = 120) -> str:
    """Run the CLI on a pseudo-terminal of ``columns`` columns; what the terminal showed."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "threadline", *argv],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        assert process.wait(timeout=10) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return b"".join(chunks).decode()


async def test_sessions_list_renders_as_a_table_on_a_terminal(tmp_path: Path) -> None:
    async with Store.open(tmp_path / LOCAL_STORE) as store:
        await store.create_session(title="A title long enough to be cut on a narrow terminal " * 2)
        short = await store.create_session(title="Short")
        await store.append_messages(
            short.session_id, [{"role": "user", "content": "hi " * 400}] * 1
        )
    shown = on_terminal(["sessions", "list", "--data-dir", str(tmp_path)], columns=80)
    lines = shown.replace("\r\n", "\n").rstrip("\n").split("\n")
    assert re.match(r"ID +TITLE +STATUS +MESSAGES +TOKENS +LAST ACTIVITY$", lines[0]), shown
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), shown
    assert lines[1].startswith(short.session_id) and " active " in lines[1]
    columns = [m.start() for m in re.finditer(r"MESSAGES|TOKENS|LAST", lines[0])]
    assert lines[1][columns[1] - 1 :].split()[0] == "400"  # right-aligned under TOKENS
    assert "…" in lines[2]  # the long title was cut to fit


async def test_a_large_import_shows_a_progress_bar(tmp_path: Path) -> None:
    source = tmp_path / "a"
    source.mkdir()
    async with Store.open(source / LOCAL_STORE) as store:
        for s in range(6):
            sid = (await store.create_session(title=f"s{s}")).session_id
            for _ in range(5):
                await store.append_messages(
                    sid, [{"role": "user", "content": f"message {i} " * 20} for i in range(1000)]
                )
    exported = tmp_path / "e.jsonl"
    assert await run("export", "-o", exported, "--data-dir", source) == 0
    shown = on_terminal(["import", str(exported), "--data-dir", str(tmp_path / "b")])
    frames = [f for f in re.split(r"[\r\n]+", shown) if f.startswith("importing ")]
    assert len(frames) >= 2, shown  # drawn as it went, not only at the end
    assert frames[-1].endswith("100%  30,000/30,000 messages") and "█" * 30 in frames[-1]
    assert "imported 6 sessions (30,000 messages)" in shown


async def test_an_export_taken_while_a_server_writes_is_one_consistent_snapshot(
    tmp_path: Path,
) -> None:
    source = tmp_path / "a"
    source.mkdir()
    async with Store.open(source / LOCAL_STORE) as store:
        ids = [(await store.create_session(title=f"s{i}")).session_id for i in range(20)]
        for sid in ids:
            await store.append_messages(sid, [{"role": "user", "content": "x " * 50}] * 1)
            await store.append_messages(
                sid, [{"role": "user", "content": f"m{i} " * 50} for i in range(300)]
            )
        exported = tmp_path / "e.jsonl"
        written = 0
        async with anyio.create_task_group() as tg:

            async def keep_writing() -> None:
                nonlocal written
                while True:
                    for sid in ids:
                        await store.append_messages(sid, [{"role": "user", "content": "more"}])
                        written += 1
                    await store.create_session(title="new")

            tg.start_soon(keep_writing)
            assert await run("export", "-o", exported, "--data-dir", source) == 0
            tg.cancel_scope.cancel()
    assert written > 0  # the export really overlapped with writes
    assert await run("import", exported, "--data-dir", tmp_path / "b") == 0
    header = json.loads(exported.read_text().split("\n", 1)[0])
    async with Store.open(tmp_path / "b" / LOCAL_STORE) as copy:
        counts = [(await copy.get_session(sid)).message_count for sid in ids]
    assert sum(counts) <= header["messages"] and min(counts) >= 301


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda s: s["messages"].reverse(), "is not an earlier message"),
        (lambda s: s["messages"].append(dict(s["messages"][0])), "appears twice"),
        (lambda s: s.update(head_id="nowhere"), "head_id: 'nowhere' is no message"),
        (lambda s: s["compactions"][0].update(first_id=s["messages"][-1]["id"]), "not on the path"),
        (
            lambda s: s["messages"][1].update(id="compaction:9"),
            "messages.1.id: String should match pattern",
        ),
        (
            lambda s: s["messages"][2].update(content="a\ud800b"),
            "messages[2].content: must be valid Unicode",
        ),
    ],
    ids=["child-first", "duplicate-id", "head", "compaction-range", "reserved-id", "surrogate"],
)
async def test_an_export_whose_references_do_not_hold_is_refused_whole(
    tmp_path: Path, edit: Any, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sessions are checked before any is imported, so a bad last session imports nothing."""
    exported = await rich_export(tmp_path, "long", "empty", "trip")
    lines = exported.read_text().splitlines()
    trip = json.loads(lines[-1])
    assert trip["session_id"] == "trip"
    edit(trip)
    exported.write_text("\n".join([*lines[:-1], json.dumps(trip)]) + "\n")
    capsys.readouterr()
    assert await run("import", exported, "--data-dir", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert err.startswith("threadline: ") and error in err and err.count("\n") == 1, err
    assert not (tmp_path / "b").exists()


# -- every field checked before anything is written (issue 13, item 6) ------------------------


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda s: s.update(metadata={"x": float("nan")}), "metadata"),
        (lambda s: s.update(title="a\ud800b"), "title: must be valid Unicode"),
        (lambda s: s["usage"][0].update(input_tokens=2**70), "input_tokens"),
        (lambda s: s.update(turns=2**64), "turns"),
        (lambda s: s.update(cost=float("inf")), "cost"),
        (lambda s: s["usage"][1].update(cost=float("nan")), "cost"),
        (
            lambda s: s["compactions"][0].update(summary_id="compaction:9999999999999999999"),
            "compactions[0].summary_id: must be compaction:N",
        ),
        (lambda s: s["compactions"][0].update(summary="\udc00"), "compactions[0].summary: must"),
        (lambda s: s["blocks"][0].update(content="x\udc00"), "blocks[0].content: must be valid"),
        (lambda s: s["messages"][0].update(name="\ud800"), "messages[0].name: must be valid"),
        (lambda s: s.update(blocks=5), "blocks"),
        (lambda s: s.update(session_id=".."), "session_id: must not be"),
    ],
    ids=[
        "nan-metadata", "surrogate-title", "usage-2^70", "turns-2^64", "inf-cost", "nan-cost",
        "summary-id-overflow", "surrogate-summary", "surrogate-block", "surrogate-name",
        "blocks-not-a-list", "dot-dot-id",
    ],
)  # fmt: skip
async def test_a_bad_field_in_the_second_session_imports_nothing(
    tmp_path: Path, edit: Any, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = await rich_export(tmp_path, "long", "trip", "empty")
    lines = exported.read_text().splitlines()
    trip = json.loads(lines[3])
    assert trip["session_id"] == "trip"
    edit(trip)
    lines[3] = json.dumps(trip)
    exported.write_text("\n".join(lines) + "\n")
    capsys.readouterr()

    assert await run("import", exported, "--data-dir", tmp_path / "b") == 2

    err = capsys.readouterr().err
    assert err.startswith("threadline: ") and error in err and err.count("\n") == 1, err
    assert "line 4" in err or "session trip" in err or "session .." in err, err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("fmt", "edit", "error"),
    [
        ("jsonl", lambda lines: [lines[0], '{"type": "blocks", "blocks": 5}', *lines[2:]],
         "line 2: must be a list"),
        ("jsonl", lambda lines: [lines[0], '{"type": "blocks", "blocks": null}', *lines[2:]],
         "line 2: must be a list"),
        ("json", lambda doc: {**doc, "sessions": 5}, "sessions: must be a list"),
        ("json", lambda doc: {**doc, "blocks": None}, "blocks: must be a list"),
    ],
    ids=["blocks-5", "blocks-null", "sessions-5", "json-blocks-null"],
)  # fmt: skip
async def test_a_file_whose_lists_are_not_lists_is_one_line_of_refusal(
    tmp_path: Path, fmt: str, edit: Any, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a"
    source.mkdir()
    await build_rich(source / LOCAL_STORE)
    exported = tmp_path / f"e.{fmt}"
    assert await run("export", "--format", fmt, "-o", exported, "--data-dir", source) == 0
    if fmt == "jsonl":
        exported.write_text("\n".join(edit(exported.read_text().splitlines())) + "\n")
    else:
        exported.write_text(json.dumps(edit(json.loads(exported.read_text()))))
    capsys.readouterr()

    assert await run("import", exported, "--data-dir", tmp_path / "b") == 2

    err = capsys.readouterr().err
    assert err.startswith("threadline: ") and error in err and err.count("\n") == 1, err
    assert not (tmp_path / "b").exists()


async def test_imported_summary_ids_stay_in_the_store_range_and_cursors_round_trip(
    tmp_path: Path,
) -> None:
    exported = await rich_export(tmp_path, "trip")
    lines = exported.read_text().splitlines()
    trip = json.loads(lines[2])
    trip["compactions"][0]["summary_id"] = "compaction:9223372036854775807"
    lines[2] = json.dumps(trip)
    exported.write_text("\n".join(lines) + "\n")
    assert await run("import", exported, "--data-dir", tmp_path / "b") == 0

    async with Store.open(tmp_path / "b" / LOCAL_STORE) as store:
        page = await store.get_history("trip", limit=2)
        ids = [m.id for m in (await store.get_history("trip")).messages]
        assert [i for i in ids if i.startswith("compaction:")] == ["compaction:1"]  # renumbered
        more = [{"role": "user", "content": f"more {i}"} for i in range(20)]
        await store.append_messages("trip", more)
        later = await store.compact_session("trip", "More.", keep_last=2)  # still possible
        assert later.summary_id == "compaction:2"
        assert page.next_before is not None
        await store.get_history("trip", before=page.next_before)  # what it gives, it takes
    big = "compaction:" + str(2**63 - 1)
    assert validate.message_id(big) == big


@pytest.mark.parametrize("writer", [JsonlWriter, JsonWriter])
async def test_the_library_exports_to_a_file_and_imports_it_without_the_cli(
    tmp_path: Path, writer: type[JsonlWriter]
) -> None:
    ids = await build_rich(tmp_path / "a.db")
    export = tmp_path / "backup"
    async with Store.open(tmp_path / "a.db") as store:
        with atomic_output(export) as out:
            header = await store.export(writer(out))
    assert header.sessions == len(set(ids))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []
    seen: list[tuple[int, int]] = []
    async with Store.open(tmp_path / "b.db") as store:
        with export.open(encoding="utf-8") as source:
            summary = await import_file(store, source, progress=lambda d, t: seen.append((d, t)))
        assert sorted(s.session_id for s in summary.imported) == sorted(set(ids))
        assert seen[-1] == (header.messages, header.messages)
        with export.open(encoding="utf-8") as source, pytest.raises(ImportRefused) as refused:
            await import_file(store, source)
        assert sorted(refused.value.taken) == sorted(set(ids))
        assert "pass skip_existing" in str(refused.value)
        with export.open(encoding="utf-8") as source:
            again = await import_file(store, source, skip_existing=True)
        assert again.imported == [] and sorted(again.skipped_sessions) == sorted(set(ids))
    assert await observe(tmp_path / "b.db", ids) == await observe(tmp_path / "a.db", ids)


async def test_the_library_names_the_file_and_the_place_it_cannot_read(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        with pytest.raises(ExportUnreadable) as empty:
            await import_file(store, io.StringIO(""), "backup.jsonl")
        assert str(empty.value) == "backup.jsonl is empty"
        bad = io.StringIO('{"type": "session"}\n')
        with pytest.raises(ExportUnreadable) as headless:
            await import_file(store, bad, "backup.jsonl")
        assert str(headless.value) == (
            "backup.jsonl is not a threadline export (it starts with no export header)"
        )
        assert (await store.list_sessions()).sessions == []


async def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("the old backup\n", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_output(target) as out:
        out.write("half of a new one")
        raise RuntimeError("stopped")
    assert target.read_text(encoding="utf-8") == "the old backup\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]

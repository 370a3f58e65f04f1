"""The ``threadline`` command line on real stores.

Stores are real SQLite files in ``tmp_path``, made through ``Store``; commands run in-process
through ``threadline.cli.main`` (stdout and stderr read with capsys), and as a real
``python -m threadline`` process only where the process is the point: exit codes, tracebacks.
Export and import round trips live in test_transfer.py; here only their command-line surface.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import dump, integrity
from threadline import Store
from threadline.cli import hosts, main
from threadline.paths import LOCAL_STORE, STATIC_ISSUER, USERS_DIR, user_file
from threadline.server.auth import TokenFile
from threadline.storage.schema import LATEST

HEADER = ["ID", "TITLE", "STATUS", "MESSAGES", "TOKENS", "LAST ACTIVITY"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


def refused(result: Result, code: int | None, *needles: str) -> str:
    """Assert a clean refusal: exit ``code`` (None: any failure), nothing on stdout, and one
    ``threadline:`` line on stderr holding every needle; returns that line."""
    assert result.code == code if code is not None else result.code != 0, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("threadline: "), result.err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def rows(table: str) -> list[list[str]]:
    """A printed table's lines, split into cells (cells are separated by 2+ spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.splitlines()]


def process(*argv: object, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m threadline ARGV`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "threadline", *map(str, argv)],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        timeout=30,
        check=False,
    )


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient config or data dir; a wide, fixed terminal so tables never squeeze."""
    monkeypatch.delenv("THREADLINE_CONFIG", raising=False)
    monkeypatch.delenv("THREADLINE_DATA_DIR", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Cli:
    """Run ``threadline ARGV --data-dir DATA`` in-process; ``stdin`` is a pipe, not a terminal."""

    def run(*argv: object, stdin: str = "", data: Path | None = None) -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([*map(str, argv), "--data-dir", str(data or data_dir)])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@dataclass
class Seeded:
    path: Path
    child: str  # the session that the split of "old" started


async def _seed(path: Path) -> Seeded:
    """trip: 8 messages t1..t8, a branch alt5 off t4, t3..t5 compacted; parser: 2 messages;
    old: ended by a split into a child session."""
    async with Store.open(path) as store:
        await store.create_session(
            title="Trip to Kyoto",
            session_id="trip",
            messages=[
                {
                    "id": f"t{i}",
                    "role": "user" if i % 2 else "assistant",
                    "content": f"kyoto day {i}: temples and gardens",
                }
                for i in range(1, 9)
            ],
        )
        await store.append_messages(
            "trip",
            [{"id": "alt5", "role": "assistant", "content": "an alternative: Osaka instead"}],
            parent_id="t4",
        )
        await store.set_head("trip", "t8")
        await store.compact_session("trip", "days 3 to 5, summarised", keep_first=2, keep_last=3)
        await store.create_session(
            title="Refactor the parser",
            session_id="parser",
            messages=[
                {"id": "p1", "role": "user", "content": "the tokenizer drops unicode"},
                {"id": "p2", "role": "assistant", "content": "use a Pratt parser for temples"},
            ],
        )
        await store.create_session(
            title="Old notes",
            session_id="old",
            messages=[{"role": "user", "content": f"old note {i}"} for i in range(6)],
        )
        split = await store.compact_session(
            "old", "old notes, summarised", keep_first=1, keep_last=1, split=True
        )
        assert split.new_session_id is not None
        return Seeded(path, split.new_session_id)


@pytest.fixture
def seeded(data_dir: Path) -> Seeded:
    data_dir.mkdir()
    return anyio.run(_seed, data_dir / LOCAL_STORE)


async def _empty_store(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    async with Store.open(path):
        pass


# -- sessions list ----------------------------------------------------------------------------


def test_sessions_list_prints_a_table_of_every_session(cli: Cli, seeded: Seeded) -> None:
    result = cli("sessions", "list")
    assert result.code == 0 and result.err == ""
    header, *body = rows(result.out)
    assert header == HEADER
    by_id = {r[0]: r for r in body}
    assert set(by_id) == {"trip", "parser", "old", seeded.child}
    assert by_id["trip"][1:4] == ["Trip to Kyoto", "active", "9"]
    assert by_id["trip"][4].isdigit()
    assert by_id["parser"][1:4] == ["Refactor the parser", "active", "2"]
    assert by_id["old"][2] == "ended"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", by_id["trip"][5])


def test_sessions_list_json_has_every_summary(cli: Cli, seeded: Seeded) -> None:
    result = cli("sessions", "list", "--json")
    assert result.code == 0
    listed = {s["session_id"]: s for s in result.json()}
    assert set(listed) == {"trip", "parser", "old", seeded.child}
    assert listed["trip"]["title"] == "Trip to Kyoto"
    assert listed["trip"]["message_count"] == 9
    assert listed["old"]["status"] == "ended"
    assert listed[seeded.child]["parent_session_id"] == "old"


def test_sessions_list_squeezes_the_title_to_the_terminal(
    cli: Cli, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the widest line holds a 16-character id, "Refactor the parser" and 52 more columns: 81
    monkeypatch.setenv("COLUMNS", "75")
    result = cli("sessions", "list")
    assert max(len(line) for line in result.out.splitlines()) == 75
    assert "  Refactor the…  " in result.out
    assert "  Trip to Kyoto  " in result.out


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--status", "ended"], {"old"}),
        (["--status", "active"], {"trip", "parser", "CHILD"}),
        (["--title", "KYOTO"], {"trip"}),
        (["--title", "parser", "--status", "ended"], set()),
        (["--limit", "0"], {"trip", "parser", "old", "CHILD"}),
    ],
)
def test_sessions_list_filters(
    cli: Cli, seeded: Seeded, options: list[str], expected: set[str]
) -> None:
    found = {s["session_id"] for s in cli("sessions", "list", "--json", *options).json()}
    assert found == {seeded.child if e == "CHILD" else e for e in expected}


def test_sessions_list_limit_keeps_the_most_recently_active(cli: Cli, seeded: Seeded) -> None:
    everything = cli("sessions", "list", "--json").json()
    limited = cli("sessions", "list", "--json", "--limit", "2").json()
    assert limited == everything[:2]
    table = cli("sessions", "list", "--limit", "1").out
    assert len(rows(table)) == 2 and rows(table)[1][0] == everything[0]["session_id"]


def test_sessions_list_says_when_nothing_matches(cli: Cli, seeded: Seeded) -> None:
    result = cli("sessions", "list", "--title", "zebra")
    assert (result.code, result.out, result.err) == (0, "", "no sessions match\n")
    assert cli("sessions", "list", "--title", "zebra", "--json").json() == []


def test_sessions_list_of_an_empty_store(cli: Cli, data_dir: Path) -> None:
    anyio.run(_empty_store, data_dir / LOCAL_STORE)
    result = cli("sessions", "list")
    assert (result.code, result.out, result.err) == (0, "", "no sessions\n")


# -- sessions show ----------------------------------------------------------------------------


def test_sessions_show_marks_compactions_and_branches(cli: Cli, seeded: Seeded) -> None:
    result = cli("sessions", "show", "trip")
    assert result.code == 0 and result.err == ""
    text = result.out
    assert text.startswith("# Trip to Kyoto\n")
    assert "session `trip` · active · 9 messages · 2 branches · 1 compaction" in text
    assert "## head" in text
    assert "> ✂ `compaction:1`: the 3 messages from `t3` to `t5` read as this summary" in text
    assert "> days 3 to 5, summarised" in text
    assert "> ✂ end of `compaction:1`" in text
    compacted = re.findall(r"`(t\d)` · compacted", text)
    assert compacted == ["t3", "t4", "t5"]
    assert "> ⎇ 1 other branch from here, ending at `alt5`" in text
    # the mark follows t4, where the branch starts
    assert text.index("· `t4`") < text.index("⎇") < text.index("· `t5`")
    assert re.findall(r"· `(\w+)`", text) == [f"t{i}" for i in range(1, 9)]
    assert "Osaka" not in text


def test_sessions_show_leaf_prints_that_branch(cli: Cli, seeded: Seeded) -> None:
    text = cli("sessions", "show", "trip", "--leaf", "alt5").out
    assert "## branch ending at `alt5`" in text
    assert "an alternative: Osaka instead" in text
    assert re.findall(r"· `(\w+)`", text) == ["t1", "t2", "t3", "t4", "alt5"]


def test_sessions_show_last_hides_the_earlier_messages(cli: Cli, seeded: Seeded) -> None:
    text = cli("sessions", "show", "trip", "--last", "2").out
    assert "*(6 earlier messages not shown)*" in text
    assert re.findall(r"· `(\w+)`", text) == ["t7", "t8"]


def test_sessions_show_all_adds_the_other_branches(cli: Cli, seeded: Seeded) -> None:
    text = cli("sessions", "show", "trip", "--all").out
    assert "## head" in text
    assert "## branch ending at `alt5` (after `t4`)" in text
    assert text.index("## head") < text.index("## branch ending at `alt5`")
    assert text.count("`alt5`") >= 2  # named by the ⎇ mark and by its own section


def test_sessions_show_json_is_the_stored_record(cli: Cli, seeded: Seeded) -> None:
    record = cli("sessions", "show", "trip", "--json").json()
    assert record["session_id"] == "trip"
    assert record["head_id"] == "t8"
    assert {m["id"] for m in record["messages"]} == {f"t{i}" for i in range(1, 9)} | {"alt5"}
    assert [
        (c["summary_id"], c["first_id"], c["last_id"], c["replaced"]) for c in record["compactions"]
    ] == [("compaction:1", "t3", "t5", 3)]


def test_sessions_show_of_a_split_session_names_its_lineage(cli: Cli, seeded: Seeded) -> None:
    text = cli("sessions", "show", seeded.child).out
    assert "split from `old`" in text
    assert "· ended ·" in cli("sessions", "show", "old").out


# -- rename, delete, fork ---------------------------------------------------------------------


def test_sessions_rename_changes_and_removes_the_title(cli: Cli, seeded: Seeded) -> None:
    assert cli("sessions", "rename", "trip", "Kyoto in spring").out == "trip: 'Kyoto in spring'\n"
    assert cli("sessions", "show", "trip", "--json").json()["title"] == "Kyoto in spring"
    renamed = cli("sessions", "rename", "trip", "", "--json").json()
    assert renamed["session_id"] == "trip" and renamed["title"] is None
    assert cli("sessions", "rename", "parser", "").out == "parser: untitled\n"


def test_sessions_delete_refuses_without_yes_when_stdin_is_not_a_terminal(
    cli: Cli, seeded: Seeded
) -> None:
    before = dump(seeded.path)
    result = cli("sessions", "delete", "trip", stdin="y\n")  # piped, so nobody was asked
    refused(result, 2, "nothing deleted", "--yes")
    assert dump(seeded.path) == before


def test_sessions_delete_with_yes(cli: Cli, seeded: Seeded) -> None:
    result = cli("sessions", "delete", "trip", "trip", "--yes")
    assert (result.code, result.out) == (0, "deleted trip (9 messages)\n")
    remaining = {s["session_id"] for s in cli("sessions", "list", "--json").json()}
    assert remaining == {"parser", "old", seeded.child}
    deleted = cli("sessions", "delete", "parser", "old", "-y", "--json").json()
    assert deleted == [
        {"session_id": "parser", "messages_deleted": 2, "head_id": None},
        {"session_id": "old", "messages_deleted": 6, "head_id": None},
    ]


def test_sessions_delete_of_an_unknown_id_deletes_none_of_them(cli: Cli, seeded: Seeded) -> None:
    before = dump(seeded.path)
    refused(cli("sessions", "delete", "parser", "nope", "--yes"), 1, "'nope' not found")
    assert dump(seeded.path) == before


def test_sessions_fork_copies_the_head_path(cli: Cli, seeded: Seeded) -> None:
    result = cli("sessions", "fork", "trip")
    match = re.fullmatch(
        r"(\S+): Trip to Kyoto \(fork\) \(8 messages, forked from trip\)\n", result.out
    )
    assert match, result.out
    fork = cli("sessions", "show", match[1], "--json").json()
    assert (fork["lineage"], fork["parent_session_id"]) == ("fork", "trip")
    assert len(fork["messages"]) == 8


def test_sessions_fork_at_a_message_with_a_title(cli: Cli, seeded: Seeded) -> None:
    info = cli("sessions", "fork", "trip", "--at", "t4", "--title", "Plan B", "--json").json()
    assert info["title"] == "Plan B"
    assert info["message_count"] == 4
    assert info["forked_from_message_id"] == "t4"
    assert info["parent_session_id"] == "trip"
    assert "Plan B" in cli("sessions", "list").out


# -- search -----------------------------------------------------------------------------------


def test_search_prints_ranked_hits_with_their_session(cli: Cli, seeded: Seeded) -> None:
    result = cli("search", "temples")
    assert result.code == 0 and result.err == ""
    heads = [line for line in result.out.splitlines() if not line.startswith("   ")]
    snippets = [line for line in result.out.splitlines() if line.startswith("   ")]
    assert len(heads) == len(snippets) == 9  # t1..t8 and p2
    assert heads[0].startswith("1. ")
    assert any(
        re.fullmatch(r"\d+\. Trip to Kyoto \(trip\) · (user|assistant) · .+ · t\d", h)
        for h in heads
    )
    assert any("Refactor the parser (parser) · assistant" in h for h in heads)
    assert all("**temples**" in s.lower() for s in snippets)  # not a terminal: no colour codes
    assert "\x1b[" not in result.out


@pytest.mark.parametrize(
    ("options", "sessions", "roles", "count"),
    [
        (["--session", "parser"], {"parser"}, {"assistant"}, 1),
        (["--role", "user"], {"trip"}, {"user"}, 4),
        (["--limit", "3"], None, None, 3),
    ],
)
def test_search_filters(
    cli: Cli,
    seeded: Seeded,
    options: list[str],
    sessions: set[str] | None,
    roles: set[str] | None,
    count: int,
) -> None:
    hits = cli("search", "temples", "--json", *options).json()["hits"]
    assert len(hits) == count
    if sessions is not None:
        assert {h["session_id"] for h in hits} == sessions
    if roles is not None:
        assert {h["role"] for h in hits} == roles


def test_search_context_shows_the_exchange_around_each_hit(cli: Cli, seeded: Seeded) -> None:
    result = cli("search", "pratt", "--context", "1")
    assert result.code == 0 and result.err == ""
    lines = result.out.splitlines()
    assert lines[0].startswith("1. Refactor the parser (parser) · assistant")
    assert lines[1:] == [
        "     user: the tokenizer drops unicode",
        "   > assistant: use a **Pratt** parser for temples",
    ]
    hit = cli("search", "pratt", "--context", "1", "--json").json()["hits"][0]
    assert [n["message_id"] for n in hit["before"]] == ["p1"] and hit["after"] == []


def test_search_orders_by_time_and_bounds_it(cli: Cli, seeded: Seeded) -> None:
    oldest = cli("search", "temples", "--order", "oldest", "--json").json()["hits"]
    newest = cli("search", "temples", "--order", "newest", "--json").json()["hits"]
    assert [h["message_id"] for h in oldest] == [h["message_id"] for h in reversed(newest)]
    assert oldest[0]["message_id"] == "t1" and newest[0]["message_id"] == "p2"
    assert cli("search", "temples", "--after", "2999-01-01", "--json").json()["hits"] == []
    assert len(cli("search", "temples", "--before", "2999-01-01", "--json").json()["hits"]) == 9


@pytest.mark.parametrize(
    ("options", "code", "needle"),
    [
        (["--after", "yesterday"], 1, "after: must be an ISO 8601 date or time"),
        (["--after", "2026-03-02", "--before", "2026-03-01"], 1, "must be later than after"),
        (["--context", "6"], 2, "--context must be from 0 to 5"),
    ],
)
def test_search_refuses_bad_bounds_and_options(
    cli: Cli, seeded: Seeded, options: list[str], code: int, needle: str
) -> None:
    refused(cli("search", "temples", *options), code, needle)


def test_search_without_hits_says_so_on_stderr(cli: Cli, seeded: Seeded) -> None:
    result = cli("search", "zebra")
    assert (result.code, result.out, result.err) == (0, "", "no messages match 'zebra'\n")
    assert cli("search", "zebra", "--json").json() == {"hits": [], "next_cursor": None}


# -- context ----------------------------------------------------------------------------------


def test_context_show_without_session_is_the_user_blocks(cli: Cli, seeded: Seeded) -> None:
    text = cli("context", "show").out
    assert re.search(r"^## soul \(user, read-only\) · \d+/500 tokens$", text, re.M)
    assert re.search(r"^## memory \(user\) · 0/1100 tokens$", text, re.M)
    assert "*(empty)*" in text
    assert "scratchpad" not in text and "frozen system prompt" not in text
    blocks = cli("context", "show", "--json").json()
    assert [(b["label"], b["scope"]) for b in blocks] == [("soul", "user"), ("memory", "user")]


def test_context_show_with_session_adds_its_blocks_and_prompt(cli: Cli, seeded: Seeded) -> None:
    text = cli("context", "show", "--session", "trip").out
    assert "## scratchpad (session) · 0/800 tokens" in text
    assert "## frozen system prompt · rendered " in text
    assert "<memory_blocks>" in text
    view = cli("context", "show", "--session", "trip", "--json").json()
    assert view["session_id"] == "trip"
    assert [b["label"] for b in view["blocks"]] == ["soul", "memory", "scratchpad"]
    assert view["system_prompt"].startswith("<memory_blocks>")
    assert view["stale"] is False


def test_context_set_from_an_argument(cli: Cli, seeded: Seeded) -> None:
    result = cli("context", "set", "memory", "Prefers trains.")
    assert result.code == 0
    assert re.fullmatch(r"memory: \d+/1100 tokens, \d+%\n", result.out)
    shown = {b["label"]: b for b in cli("context", "show", "--json").json()}
    assert shown["memory"]["content"] == "Prefers trains."
    # the frozen prompt of an existing session is now stale
    assert "· stale:" in cli("context", "show", "--session", "trip").out


@pytest.mark.parametrize("text_argument", [[], ["-"]])
def test_context_set_from_stdin(cli: Cli, seeded: Seeded, text_argument: list[str]) -> None:
    result = cli(
        "context", "set", "scratchpad", *text_argument, "--session", "trip", "--json",
        stdin="plan:\n- temples\n- gardens\n",
    )  # fmt: skip
    assert result.code == 0
    assert result.json()["label"] == "scratchpad" and result.json()["scope"] == "session"
    view = cli("context", "show", "--session", "trip", "--json").json()
    assert view["blocks"][2]["content"] == "plan:\n- temples\n- gardens\n"
    other = cli("context", "show", "--session", "parser", "--json").json()
    assert other["blocks"][2]["content"] == ""


def test_context_set_append_adds_a_line(cli: Cli, seeded: Seeded) -> None:
    cli("context", "set", "memory", "Prefers trains.")
    cli("context", "set", "memory", "Vegetarian.", "--append")
    blocks = {b["label"]: b["content"] for b in cli("context", "show", "--json").json()}
    assert blocks["memory"] == "Prefers trains.\nVegetarian."


def test_context_set_session_block_without_session_is_refused(cli: Cli, seeded: Seeded) -> None:
    before = dump(seeded.path)
    refused(cli("context", "set", "scratchpad", "a plan"), None, "'scratchpad'", "session")
    assert dump(seeded.path) == before


def test_context_set_session_block_without_session_names_the_option(
    cli: Cli, seeded: Seeded
) -> None:
    refused(cli("context", "set", "scratchpad", "a plan"), 2, "--session")


def test_context_set_user_block_before_any_session(cli: Cli, data_dir: Path) -> None:
    anyio.run(_empty_store, data_dir / LOCAL_STORE)
    assert cli("context", "set", "memory", "Lives in Lyon.").code == 0
    blocks = {b["label"]: b["content"] for b in cli("context", "show", "--json").json()}
    assert blocks["memory"] == "Lives in Lyon."
    assert cli("sessions", "list", "--json").json() == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["context", "set", "soul", "be rude"], "read-only"),
        (["context", "set", "nolabel", "x"], "no context block 'nolabel'"),
    ],
)
def test_context_set_refusals_change_nothing(
    cli: Cli, seeded: Seeded, argv: list[str], needle: str
) -> None:
    before = dump(seeded.path)
    refused(cli(*argv), 1, needle)
    assert dump(seeded.path) == before


# -- users ------------------------------------------------------------------------------------


async def _user_store(path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    async with Store.open(path) as store:
        await store.create_session(title=title, session_id="mine")


def test_user_option_reads_that_users_store(cli: Cli, seeded: Seeded, data_dir: Path) -> None:
    anyio.run(_user_store, user_file(data_dir, (STATIC_ISSUER, "bob")), "Bob's thread")
    anyio.run(_user_store, user_file(data_dir, ("https://idp.example", "bob")), "Bob at the IdP")
    bob = cli("sessions", "list", "--user", "bob", "--json").json()
    assert [(s["session_id"], s["title"]) for s in bob] == [("mine", "Bob's thread")]
    jwt_bob = cli(
        "sessions", "list", "--user", "bob", "--issuer", "https://idp.example", "--json"
    ).json()
    assert [s["title"] for s in jwt_bob] == ["Bob at the IdP"]
    local = {s["session_id"] for s in cli("sessions", "list", "--json").json()}
    assert "mine" not in local and "trip" in local
    cli("context", "set", "memory", "Bob likes tea.", "--user", "bob")
    bob_blocks = cli("context", "show", "--user", "bob", "--json").json()
    local_blocks = cli("context", "show", "--json").json()
    assert (bob_blocks[1]["content"], local_blocks[1]["content"]) == ("Bob likes tea.", "")


@pytest.mark.parametrize(
    "argv",
    [
        ["sessions", "list"],
        ["sessions", "show", "trip"],
        ["search", "temples"],
        ["context", "show"],
        ["context", "set", "memory", "x"],
        ["export"],
    ],
)
@pytest.mark.parametrize("user", [[], ["--user", "ghost"]])
def test_reading_a_missing_store_is_one_line_and_creates_nothing(
    cli: Cli, tmp_path: Path, argv: list[str], user: list[str]
) -> None:
    data = tmp_path / "empty"
    data.mkdir()
    line = refused(cli(*argv, *user, data=data), 2, "no store for")
    assert ("user 'ghost'" if user else "the local user") in line
    assert list(data.iterdir()) == []


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["sessions", "show", "nope"], 1, "session 'nope' not found"),
        (["sessions", "rename", "nope", "x"], 1, "session 'nope' not found"),
        (["sessions", "delete", "nope", "--yes"], 1, "session 'nope' not found"),
        (["sessions", "fork", "nope"], 1, "session 'nope' not found"),
        (["sessions", "fork", "trip", "--at", "nope"], 1, "'nope' not found"),
        (["search", "temples", "--session", "nope"], 1, "session 'nope' not found"),
        (["search", ""], 1, "query"),
        (["context", "show", "--session", "nope"], 1, "session 'nope' not found"),
        (["context", "set", "scratchpad", "x", "--session", "nope"], 1, "'nope' not found"),
        (["export", "nope"], 1, "session 'nope' not found"),
        (["sessions", "show", "trip", "--leaf", "nope"], 2, "--leaf"),
        (["sessions", "show", "trip", "--last", "0"], 2, "--last must be 1 or more"),
        (["sessions", "list", "--limit", "-1"], 2, "--limit must be 0 (all) or more"),
        (["import", "missing.jsonl"], 2, "cannot read missing.jsonl"),
    ],
)
def test_errors_are_one_line_with_the_exit_code(
    cli: Cli, seeded: Seeded, argv: list[str], code: int, needle: str
) -> None:
    before = dump(seeded.path)
    refused(cli(*argv), code, needle)
    assert dump(seeded.path) == before


@pytest.mark.parametrize("limit", ["0", "51"])
def test_search_limit_out_of_range_is_a_usage_error(cli: Cli, seeded: Seeded, limit: str) -> None:
    refused(cli("search", "temples", "--limit", limit), 2, "--limit")


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["sessions", "show", "nope"], 1, "threadline: session 'nope' not found"),
        (["sessions", "list", "--limit", "-1"], 2, "threadline: --limit must be 0"),
        (["sessions", "delete", "trip"], 2, "threadline: nothing deleted"),
        (
            ["sessions", "list", "--limit", "many"],
            2,
            "threadline: sessions list: argument --limit: invalid int value: 'many' "
            "(see threadline sessions list --help)",
        ),
        (["sessions", "frobnicate"], 2, "threadline: sessions: argument VERB: invalid choice"),
        (["search", "x", "--order", "random"], 2, "search: argument --order: invalid choice"),
    ],
)
def test_a_real_process_exits_with_the_code_and_no_traceback(
    seeded: Seeded, data_dir: Path, tmp_path: Path, argv: list[str], code: int, needle: str
) -> None:
    done = process(*argv, "--data-dir", data_dir, cwd=tmp_path)
    assert done.returncode == code
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("threadline: ") and needle in lines[0]


def test_a_real_process_succeeds_with_exit_0(
    seeded: Seeded, data_dir: Path, tmp_path: Path
) -> None:
    done = process("sessions", "list", "--data-dir", data_dir, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert rows(done.stdout)[0] == HEADER


# -- export and import, at the command line ---------------------------------------------------


def test_export_jsonl_is_a_header_blocks_and_one_line_per_session(cli: Cli, seeded: Seeded) -> None:
    result = cli("export")
    assert result.code == 0 and result.err == ""
    lines = [json.loads(line) for line in result.out.splitlines()]
    header, blocks, *sessions = lines
    assert (header["type"], header["format"], header["version"]) == (
        "header",
        "threadline-export",
        1,
    )
    assert header["sessions"] == 4 == len(sessions)
    assert header["messages"] == sum(len(s["messages"]) for s in sessions)
    assert blocks == {"type": "blocks", "blocks": []}
    assert {s["type"] for s in sessions} == {"session"}
    assert {s["session_id"] for s in sessions} == {"trip", "parser", "old", seeded.child}


def test_export_json_is_one_document(cli: Cli, seeded: Seeded) -> None:
    cli("context", "set", "memory", "Prefers trains.")
    document = json.loads(cli("export", "parser", "trip", "--format", "json").out)
    assert document["header"]["sessions"] == 2
    assert [s["session_id"] for s in document["sessions"]] == ["parser", "trip"]
    assert [b["label"] for b in document["blocks"]] == ["memory"]


def test_export_markdown_is_readable_with_every_branch(cli: Cli, seeded: Seeded) -> None:
    cli("context", "set", "memory", "Prefers trains.")
    text = cli("export", "trip", "--format", "markdown").out
    assert re.match(r"<!-- threadline export \S+: 1 session, 9 messages -->\n", text)
    assert "# context block `memory` (shared by all sessions)\n\nPrefers trains." in text
    assert "# Trip to Kyoto" in text
    assert "## branch ending at `alt5` (after `t4`)" in text
    assert "> ✂ `compaction:1`" in text


def test_export_to_a_file_replaces_it_whole(cli: Cli, seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "out" / "backup.jsonl"
    out.parent.mkdir()
    out.write_text("an older backup\n")
    result = cli("export", "-o", out)
    assert (result.code, result.out, result.err) == (0, "", f"wrote {out}\n")
    assert [p.name for p in out.parent.iterdir()] == ["backup.jsonl"]
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["sessions"] == 4 and len(lines) == 6
    # a failed export leaves the previous file as it was, and no temporary file
    before = out.read_bytes()
    refused(cli("export", "trip", "nope", "-o", out), 1, "'nope' not found")
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["backup.jsonl"]


def test_export_into_a_missing_directory_is_one_line(
    cli: Cli, seeded: Seeded, tmp_path: Path
) -> None:
    refused(cli("export", "-o", tmp_path / "missing" / "x.jsonl"), 2, "missing")


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_import_from_a_file_and_from_stdin(
    cli: Cli, seeded: Seeded, tmp_path: Path, fmt: str
) -> None:
    exported = cli("export", "--format", fmt).out
    messages = cli("export", "--format", "json").json()["header"]["messages"]
    path = tmp_path / f"all.{fmt}"
    path.write_text(exported)
    first = cli("import", path, data=tmp_path / "a")
    assert first.code == 0, first.err
    store = tmp_path / "a" / LOCAL_STORE
    assert (
        first.out == f"imported 4 sessions ({messages} messages) and 0 user blocks into {store}\n"
    )
    piped = cli("import", "-", "--json", stdin=exported, data=tmp_path / "b")
    assert piped.code == 0, piped.err
    summary = piped.json()
    assert {r["session_id"] for r in summary["imported"]} == {"trip", "parser", "old", seeded.child}
    assert summary["skipped_sessions"] == [] and summary["user_blocks_kept"] == []
    assert dump(tmp_path / "a" / LOCAL_STORE) == dump(tmp_path / "b" / LOCAL_STORE)


@pytest.mark.parametrize(
    "indent",
    [
        2,
        pytest.param(None),
    ],
    ids=["indented", "one-line"],
)
def test_import_of_a_json_export_formatted_another_way(
    cli: Cli, seeded: Seeded, tmp_path: Path, indent: int | None
) -> None:
    path = tmp_path / "reformatted.json"
    path.write_text(json.dumps(cli("export", "--format", "json").json(), indent=indent))
    result = cli("import", path, data=tmp_path / "target")
    assert result.code == 0, result.err
    assert result.out.startswith("imported 4 sessions (")


def test_import_into_a_store_that_has_them_refuses_unless_skip_existing(
    cli: Cli, seeded: Seeded, tmp_path: Path
) -> None:
    path = tmp_path / "all.jsonl"
    path.write_text(cli("export").out)
    before = dump(seeded.path)
    refused(cli("import", path), 2, "nothing imported: 4 sessions already exist", "--skip-existing")
    assert dump(seeded.path) == before
    skipped = cli("import", path, "--skip-existing")
    assert skipped.code == 0
    assert skipped.out.splitlines()[0].startswith("imported 0 sessions (0 messages)")
    assert skipped.out.splitlines()[1].startswith("skipped 4 sessions that already exist: ")
    assert dump(seeded.path) == before


def test_import_skip_existing_keeps_this_stores_user_blocks(
    cli: Cli, seeded: Seeded, tmp_path: Path
) -> None:
    cli("context", "set", "memory", "Prefers trains.")
    cli("sessions", "delete", "parser", "--yes")
    path = tmp_path / "all.jsonl"
    path.write_text(cli("export").out)
    target = tmp_path / "other"
    anyio.run(_empty_store, target / LOCAL_STORE)
    cli("context", "set", "memory", "Prefers planes.", data=target)
    refused(cli("import", path, data=target), 2, "user blocks memory hold other content")
    result = cli("import", path, "--skip-existing", "--json", data=target)
    assert result.json()["user_blocks_kept"] == ["memory"]
    assert len(result.json()["imported"]) == 3
    blocks = {
        b["label"]: b["content"] for b in cli("context", "show", "--json", data=target).json()
    }
    assert blocks["memory"] == "Prefers planes."


def _header_lies(exported: str) -> str:
    header, rest = exported.split("\n", 1)
    fields = json.loads(header)
    fields["sessions"] += 1
    return json.dumps(fields) + "\n" + rest


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (lambda _: '{"header": ', "not JSON"),
        (lambda _: "", "is empty"),
        (lambda _: "[1, 2, 3]\n", "is not a threadline export"),
        (lambda e: e.split("\n", 1)[1], "is not a threadline export"),
        (_header_lies, "the header announces 5 sessions"),
        (lambda e: e.replace('"session_id": "trip"', '"session_id": "no spaces allowed"'), "line"),
        (lambda e: e + e.splitlines()[2] + "\n", "appears twice"),
    ],
    ids=["not-json", "empty", "no-header", "headless-jsonl", "header-counts", "bad-id", "twice"],
)
def test_import_of_a_bad_file_writes_nothing(
    cli: Cli,
    seeded: Seeded,
    tmp_path: Path,
    content: Callable[[str], str],
    needle: str,
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content(cli("export").out))
    target = tmp_path / "target"
    refused(cli("import", path, data=target), 2, needle)
    assert not target.exists()


def test_import_of_a_binary_file_is_one_line(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not text")
    refused(cli("import", path, data=tmp_path / "target"), 2, "photo.jpg")
    assert not (tmp_path / "target").exists()


# -- doctor -----------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME (and XDG config dir), with the working directory in a fresh folder."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(work)
    return home


def checks(cli: Cli, *argv: object, data: Path | None = None) -> tuple[int, list[dict[str, Any]]]:
    result = cli("doctor", "--json", *argv, data=data)
    return result.code, result.json()


def check(found: list[dict[str, Any]], what: str) -> dict[str, Any]:
    (hit,) = [c for c in found if c["what"].startswith(what)]
    return hit


def test_doctor_on_a_healthy_store(cli: Cli, seeded: Seeded, data_dir: Path, home: Path) -> None:
    data_dir.chmod(0o700)
    result = cli("doctor")
    assert result.code == 0, result.out
    lines = result.out.splitlines()
    assert "ok    config: none given; the defaults apply" in lines
    assert any(line.startswith(f"ok    data directory: {data_dir} (") for line in lines)
    with closing(sqlite3.connect(seeded.path)) as conn:
        (messages,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    facts = f"ok    store local.db (local): schema {LATEST}, 4 sessions, {messages} messages, "
    assert facts in result.out
    assert "; search index up to date; quick_check ok" in result.out
    assert "warn  MCP hosts: no host config mentions threadline" in lines
    assert lines[-1] == "0 problems, 1 warning"
    code, found = checks(cli)
    assert code == 0
    assert {c["level"] for c in found} == {"ok", "warn"}
    assert set(found[0]) == {"level", "what", "detail", "fix"}


def test_doctor_reports_what_is_wrong(cli: Cli, seeded: Seeded, data_dir: Path, home: Path) -> None:
    """A damaged page, a foreign file, a newer schema: each FAILs with its fix."""
    users = data_dir / USERS_DIR
    users.mkdir()
    damaged = users / ("a" * 32 + ".db")
    shutil.copy(seeded.path, damaged)
    size = damaged.stat().st_size
    with damaged.open("r+b") as f:
        f.seek(size // 4096 // 2 * 4096)
        f.write(b"\xa5" * 8192)
    newer = users / ("b" * 32 + ".db")
    shutil.copy(seeded.path, newer)
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 7}")
    with closing(sqlite3.connect(users / ("c" * 32 + ".db"))) as conn:
        conn.execute("CREATE TABLE notes (x)")
        conn.commit()

    code, found = checks(cli)
    assert code == 1
    bad = check(found, f"store {damaged.name}")
    assert bad["level"] == "fail"
    assert "damaged" in bad["detail"] or "cannot be read" in bad["detail"]
    assert "export" in bad["fix"] or "import" in bad["fix"]
    new = check(found, f"store {newer.name}")
    assert (new["level"], new["fix"]) == ("fail", "upgrade threadline")
    assert f"schema {LATEST + 7} is newer than this threadline ({LATEST})" in new["detail"]
    foreign = check(found, "store " + "c" * 32)
    assert (foreign["level"], foreign["detail"]) == ("fail", "is not a threadline store")
    assert "move" in foreign["fix"]
    assert check(found, "store local.db")["level"] == "ok"
    text = cli("doctor").out
    assert text.count("FAIL  store ") == 3
    assert "      fix: upgrade threadline" in text
    assert text.splitlines()[-1].startswith("3 problems")


def test_doctor_reports_a_word_index_still_to_build(
    cli: Cli, seeded: Seeded, data_dir: Path, home: Path
) -> None:
    with closing(sqlite3.connect(seeded.path)) as conn:
        conn.execute("INSERT INTO fts_words (fts_words) VALUES ('delete-all')")
        conn.execute(
            "INSERT INTO fts_words (rowid, body) "
            "SELECT pk, coalesce(body, content) FROM messages WHERE pk <= 2"
        )
        conn.execute("UPDATE search_state SET words_pk = 2")
        conn.commit()
        (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()

    code, found = checks(cli)
    store = check(found, "store local.db")
    assert code == 0 and store["level"] == "warn"
    assert f"word index built up to message #2 of #{indexed}" in store["detail"]
    cli("sessions", "list")  # opening the store builds the rest
    assert "search index up to date" in check(checks(cli)[1], "store local.db")["detail"]
    assert integrity(seeded.path) == ("ok", "ok")


def test_doctor_warns_of_a_leftover_creation_file(
    cli: Cli, seeded: Seeded, data_dir: Path, home: Path
) -> None:
    leftover = data_dir / f".{LOCAL_STORE}.x1y2.new"
    leftover.write_bytes(b"")
    code, found = checks(cli)
    assert code == 0
    warned = [c for c in found if c["what"] == "store local.db (local)" and c["level"] == "warn"]
    assert len(warned) == 1
    assert leftover.name in warned[0]["detail"]
    assert warned[0]["fix"] == f"remove it: rm {leftover}"


def test_doctor_fails_a_tokens_file_others_can_read(
    cli: Cli, seeded: Seeded, data_dir: Path, home: Path
) -> None:
    bob = user_file(data_dir, (STATIC_ISSUER, "bob"))
    anyio.run(_user_store, bob, "Bob's thread")
    tokens = data_dir / "tokens.json"
    TokenFile(tokens).add("bob")
    tokens.chmod(0o644)
    code, found = checks(cli)
    assert code == 1
    named = check(found, f"store {bob.name}")
    assert named["what"] == f"store {bob.name} (user 'bob')"
    assert check(found, "tokens file") == {
        "level": "fail",
        "what": "tokens file",
        "detail": f"{tokens} is readable by others",
        "fix": f"chmod 600 {tokens}",
    }
    tokens.chmod(0o600)
    code, found = checks(cli)
    assert code == 0 and check(found, "tokens file")["level"] == "ok"


def test_doctor_reports_an_invalid_config_and_checks_the_rest(
    cli: Cli, seeded: Seeded, tmp_path: Path, home: Path
) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text("busy_timeout = -3\n")
    result = cli("doctor", "--config", config)
    assert result.code == 1
    assert re.search(r"^FAIL  config: .*busy_timeout", result.out, re.M)
    assert "store local.db (local)" in result.out  # the other checks still ran
    assert result.err == ""


def test_doctor_fails_a_host_config_whose_command_is_gone(
    cli: Cli, seeded: Seeded, home: Path
) -> None:
    cursor = home / ".cursor" / "mcp.json"
    cursor.parent.mkdir()
    cursor.write_text(
        json.dumps({"mcpServers": {"threadline": {"command": "/gone/threadline", "args": []}}})
    )
    code, found = checks(cli)
    assert code == 1
    assert check(found, "Cursor") == {
        "level": "fail",
        "what": "Cursor",
        "detail": f"{cursor} starts '/gone/threadline', which does not exist",
        "fix": "threadline config cursor --write",
    }
    text = cli("doctor").out
    assert f"FAIL  Cursor: {cursor} starts '/gone/threadline'" in text
    assert "      fix: threadline config cursor --write" in text
    # once it points at a command that exists, the host is fine
    cursor.write_text(
        json.dumps(
            {"mcpServers": {"tl": {"command": sys.executable, "args": ["-m", "threadline"]}}}
        )
    )
    code, found = checks(cli)
    assert code == 0
    assert check(found, "Cursor") == {
        "level": "ok",
        "what": "Cursor",
        "detail": f"{cursor} (mcpServers.tl)",
        "fix": None,
    }


def test_doctor_of_a_missing_data_dir_warns_and_creates_nothing(
    cli: Cli, tmp_path: Path, home: Path
) -> None:
    missing = tmp_path / "not-yet"
    code, found = checks(cli, data=missing)
    assert code == 0
    assert check(found, "data directory")["level"] == "warn"
    assert not missing.exists()


def test_doctor_leaves_the_data_directory_as_it_found_it(
    cli: Cli, seeded: Seeded, data_dir: Path, home: Path
) -> None:
    before = sorted(p.name for p in data_dir.iterdir())
    assert cli("doctor").code == 0
    assert sorted(p.name for p in data_dir.iterdir()) == before


def test_doctor_with_a_relative_data_dir(
    seeded: Seeded,
    data_dir: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(data_dir.parent)
    assert main(["doctor", "--data-dir", data_dir.name]) == 0
    assert "ok    store local.db (local)" in capsys.readouterr().out


# -- config HOST ------------------------------------------------------------------------------

HOST_FILES: dict[str, Callable[[Path], Path]] = {
    "claude-desktop": lambda home: home / ".config" / "Claude" / "claude_desktop_config.json",
    "claude-code": lambda home: Path.cwd() / ".mcp.json",
    "cursor": lambda home: home / ".cursor" / "mcp.json",
    "vscode": lambda home: Path.cwd() / ".vscode" / "mcp.json",
}


def _snippet(out: str) -> dict[str, Any]:
    """The JSON of `threadline config HOST` (claude-code prints a command line first)."""
    return json.loads(out[out.index("{") :])


@pytest.mark.parametrize("host", list(HOST_FILES))
def test_config_prints_a_snippet_with_absolute_paths(
    host: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("cfg.toml").write_text("busy_timeout = 5\n")
    assert main(["config", host, "--data-dir", "stores", "--config", "cfg.toml"]) == 0
    out = capsys.readouterr().out
    key = "servers" if host == "vscode" else "mcpServers"
    entry = _snippet(out)[key]["threadline"]
    assert Path(entry["command"]).is_absolute()
    assert Path(entry["command"]).exists()
    args = entry["args"]
    assert "serve" in args
    assert args[args.index("--data-dir") + 1] == str(Path.cwd() / "stores")
    assert args[args.index("--config") + 1] == str(Path.cwd() / "cfg.toml")
    assert entry.get("type") == ("stdio" if host == "vscode" else None)
    if host == "claude-code":
        assert out.startswith("claude mcp add --scope user threadline -- ")
    assert not HOST_FILES[host](home).exists()  # printing writes nothing


@pytest.mark.parametrize("host", list(HOST_FILES))
def test_config_write_creates_the_host_file(
    host: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = HOST_FILES[host](home)
    assert main(["config", host, "--write", "--data-dir", "stores"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"updated {target}",
        f"restart {hosts.HOSTS[host].title} to load it",
    ]
    written = json.loads(target.read_text())
    key = "servers" if host == "vscode" else "mcpServers"
    assert list(written) == [key] and list(written[key]) == ["threadline"]
    assert str(Path.cwd() / "stores") in written[key]["threadline"]["args"]
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def _backups(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f"{target.name}.bak-*"))


def test_config_write_keeps_other_servers_and_backs_up(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = HOST_FILES["cursor"](home)
    target.parent.mkdir()
    original = {
        "mcpServers": {"git": {"command": "uvx", "args": ["mcp-server-git"]}},
        "theme": "dark",
    }
    target.write_text(json.dumps(original, indent=4))
    previous = target.read_bytes()
    assert main(["config", "cursor", "--write"]) == 0
    (backup,) = _backups(target)
    assert backup.read_bytes() == previous
    assert f"(the previous file is {backup})" in capsys.readouterr().out
    written = json.loads(target.read_text())
    assert written["theme"] == "dark"
    assert written["mcpServers"]["git"] == original["mcpServers"]["git"]
    assert "threadline" in written["mcpServers"]

    # the same entry again: nothing changes, no backup
    previous = target.read_bytes()
    assert main(["config", "cursor", "--write"]) == 0
    assert (
        capsys.readouterr().out == f"{target} already starts threadline this way; nothing changed\n"
    )
    assert target.read_bytes() == previous
    assert _backups(target) == [backup]


def test_config_write_backs_up_each_previous_version(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = HOST_FILES["claude-code"](home)
    target.write_text('{"mcpServers": {"git": {"command": "uvx"}}}')
    versions = [target.read_bytes()]
    for second, data in enumerate(["one", "two"]):
        # a later second each time, so each backup gets its own name
        monkeypatch.setattr(hosts, "datetime", _clock(datetime(2030, 1, 2, 3, 4, second)))
        assert main(["config", "claude-code", "--write", "--data-dir", data]) == 0
        versions.append(target.read_bytes())
    assert [b.read_bytes() for b in _backups(target)] == versions[:2]
    assert json.loads(target.read_text())["mcpServers"]["git"] == {"command": "uvx"}


def test_config_write_twice_in_one_second_keeps_both_backups(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = HOST_FILES["claude-code"](home)
    target.write_text('{"mcpServers": {"git": {"command": "uvx"}}}')
    original = target.read_bytes()
    monkeypatch.setattr(hosts, "datetime", _clock(datetime(2030, 1, 2, 3, 4, 5)))
    assert main(["config", "claude-code", "--write", "--data-dir", "one"]) == 0
    assert main(["config", "claude-code", "--write", "--data-dir", "two"]) == 0
    assert original in [b.read_bytes() for b in _backups(target)]


def _clock(moment: datetime) -> type[datetime]:
    """A ``datetime`` whose ``now()`` is ``moment`` (backups are named by the second)."""

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return moment

    return Clock


@pytest.mark.parametrize(
    "content",
    ['{"servers": {"git": ', '["a list"]', '{"servers": []}'],
    ids=["broken", "not-an-object", "servers-not-an-object"],
)
def test_config_write_refuses_a_host_file_it_cannot_merge(
    home: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    target = HOST_FILES["vscode"](home)
    target.parent.mkdir()
    target.write_text(content)
    before = target.read_bytes()
    code = main(["config", "vscode", "--write"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"threadline: {target}")
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["mcp.json"]


# -- help -------------------------------------------------------------------------------------


# what each command's --help must mention: its options, verbs or a phrase of its description
HELP: dict[str, list[str]] = {
    "": ["serve", "sessions", "search", "context", "export", "import", "doctor", "config",
         "token", "demo", "threadline COMMAND --help"],
    "serve": ["--transport", "--host", "--port", "--tokens-file", "--no-auth"],
    "sessions": ["list", "show", "rename", "delete", "fork"],
    "sessions list": ["--status", "--title", "--limit", "--json", "--user", "--issuer",
                      "--data-dir", "--config"],
    "sessions show": ["session_id", "--leaf", "--last", "--all", "--json"],
    "sessions rename": ["session_id", "title", "removes it"],
    "sessions delete": ["session_id", "--yes", "confirmation"],
    "sessions fork": ["--at", "--title", "(fork)"],
    "search": ["query", "--session", "--role", "--after", "--before", "--order", "--context",
               "--limit", "1-50", "double quotes"],
    "context": ["show", "set"],
    "context show": ["--session", "--json", "--user"],
    "context set": ["label", "text", "--session", "--append", "standard input"],
    "export": ["--format", "jsonl", "markdown", "--output", "--user"],
    "import": ["file", "--skip-existing", "stdin"],
    "doctor": ["--json", "--data-dir", "--config", "changes nothing"],
    "config": ["claude-desktop", "claude-code", "cursor", "vscode", "--write"],
    "token": ["add", "list", "revoke"],
    "token add": ["user", "--tokens-file"],
    "token list": ["--tokens-file"],
    "token revoke": ["user_or_id", "--tokens-file"],
    "demo": ["--data-dir"],
}  # fmt: skip


@pytest.mark.parametrize("command", list(HELP), ids=[c or "threadline" for c in HELP])
def test_help_describes_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command.split(), "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: threadline {command}".rstrip())
    for mention in HELP[command]:
        assert mention in out, mention


def test_help_in_a_real_process(tmp_path: Path) -> None:
    done = process("--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert "threadline COMMAND --help" in done.stdout
    done = process("sessions", "show", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "--leaf" in done.stdout

"""Stores written by every released schema version open with their content intact.

``fixtures/schema-v<N>.db`` was written by schema version N (v1 by threadline 0.1.0, v2 by
main at 56d44f8, both with ``fixtures/make_schema_fixture.py``) and is never rebuilt: when
the schema moves to version N+1, the new code must open and migrate each older fixture
without losing what it held. Tests always work on a copy.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import integrity
from threadline import Store
from threadline.storage.schema import LATEST

FIXTURES = Path(__file__).parent / "fixtures"


VERSIONS = (1, 2)


@pytest.fixture(params=VERSIONS, ids=lambda n: f"v{n}")
def old(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    copy = tmp_path / "old.db"
    shutil.copyfile(FIXTURES / f"schema-v{request.param}.db", copy)
    return copy


@pytest.mark.parametrize("version", VERSIONS)
def test_each_fixture_has_its_schema_version(version: int) -> None:
    conn = sqlite3.connect(f"file:{FIXTURES / f'schema-v{version}.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (version,)
    finally:
        conn.close()


async def test_an_older_store_opens_with_its_content_intact(old: Path) -> None:
    async with Store.open(old) as store:
        listed = await store.list_sessions()
        assert sorted(s.title or "" for s in listed.sessions) == [
            "Kyoto trip",
            "fork",
            "nothing yet",
        ]
        trip = await store.get_session("trip")
        assert (trip.metadata, trip.message_count, trip.branch_count, trip.compactions) == (
            {"tag": "travel"}, 13, 2, 1,
        )  # fmt: skip
        assert (trip.input_tokens, trip.output_tokens, trip.cost, trip.last_model) == (
            120, 40, 0.002, "model-x",
        )  # fmt: skip
        history = await store.get_history("trip")
        assert [m.id for m in history.messages] == ["q1", "compaction:1", "m6", "m7"]
        assert history.messages[1].content == "We planned Kyoto day by day."
        full = await store.get_history("trip", include_compacted=True)
        assert [m.id for m in full.messages] == [
            "q1", "a1", "q2", "a2b", "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7",
        ]  # fmt: skip
        assert full.messages[1].content == [{"type": "text", "text": "Day 1: Fushimi Inari."}]
        other = await store.get_history("trip", leaf_id="a2")
        assert other.messages[-1].content == "Arashiyama 竹林."
        context = {b.label: b.content for b in (await store.get_context("trip")).blocks}
        assert (context["memory"], context["scratchpad"]) == ("Prefers trains.", "Book the ryokan.")
        fork = next(s for s in listed.sessions if s.title == "fork")
        copied = await store.get_history(fork.session_id)
        assert [m.id for m in copied.messages] == ["q1", "a1", "q2"]
        hits = await store.session_search("竹林")
        assert [(h.session_id, h.message_id) for h in hits.hits] == [("trip", "a2")]
        # Ranked by words, stems included, over what the old schema stored (the migration
        # built the word index): a question in plain words finds the compacted original.
        asked = await store.session_search("What did we plan for the first day?", context=1)
        assert ("trip", "a1") in [(h.session_id, h.message_id) for h in asked.hits]
        planned = await store.session_search("planning", context=1)
        # The trip's first question and its fork's copy, and the summary "We planned Kyoto
        # day by day." (the old schema stored it; it is searched too).
        assert sorted(h.message_id for h in planned.hits) == ["compaction:1", "q1", "q1"]
        summary = next(h for h in planned.hits if h.message_id == "compaction:1")
        assert (summary.session_id, summary.summary_of, summary.role) == ("trip", 9, "user")
        first = next(h for h in planned.hits if h.session_id == "trip" and h.message_id == "q1")
        assert [n.message_id for n in first.after] == ["a1"]
    conn = sqlite3.connect(old)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (LATEST,)
        # The word index was rebuilt without positions, over every message.
        (words,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'fts_words'").fetchone()
        assert "detail = 'none'" in words
        top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        assert conn.execute("SELECT words_pk, indexed_pk FROM search_state").fetchone() == top * 2
    finally:
        conn.close()
    assert integrity(old) == ("ok", "ok")

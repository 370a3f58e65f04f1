"""What ranked search answers: questions in plain words, over conversations written for it.

Each test stores a few short conversations where one message answers the question and the
others are near misses (the same names, the same common words), then asks the way a model
or a person would. Most run on both the default store (recent messages in the unindexed
tail) and the eager one (everything in the word index): ranking must not depend on which.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import integrity
from tests.test_search import ids, seed
from threadline import Config, InvalidInput, Store
from threadline.storage import indexing, schema, snippets, words

STORES = ["store", "eager_store"]


@pytest.fixture(params=STORES)
def any_store(request: pytest.FixtureRequest) -> Store:
    store: Store = request.getfixturevalue(request.param)
    return store


DIARY = [
    "Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
    "Melanie: That sounds great! What did you do at the weekend?",
    "Caroline: I painted a sunrise over the lake, my first painting in years.",
    "Melanie: My kids and I went camping at the beach last month.",
    "Caroline: The adoption agency called me back about the interview.",
    "Melanie: I have been running every morning to clear my head.",
]


async def test_a_question_in_plain_words_finds_the_message_that_answers_it(
    any_store: Store,
) -> None:
    await seed(any_store, DIARY)

    found = await any_store.session_search("When did Caroline go to the LGBTQ support group?")

    assert ids(found)[0] == "m0"
    assert "**LGBTQ**" in found.hits[0].snippet and "**support**" in found.hits[0].snippet


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("What did Caroline paint?", "m2"),  # painted, painting
        ("Where did Melanie's family go camping?", "m3"),  # camping
        ("Has Melanie taken up runs?", "m5"),  # running
        ("Did the agency call Caroline?", "m4"),  # called
    ],
)
async def test_word_forms_match(any_store: Store, question: str, answer: str) -> None:
    await seed(any_store, DIARY)

    assert ids(await any_store.session_search(question))[0] == answer


async def test_painted_finds_painting_and_the_stem_is_bolded(any_store: Store) -> None:
    await seed(any_store, ["we visited the gallery", "her paintings were in the hall"])

    found = await any_store.session_search("painted")

    assert ids(found) == ["m1"]
    assert "**paintings**" in found.hits[0].snippet


async def test_a_question_of_stop_words_only_still_finds_them(any_store: Store) -> None:
    await seed(any_store, ["what is it", "a cat sat", "it was what it was"])

    assert set(ids(await any_store.session_search("what was it"))) == {"m0", "m2"}


async def test_common_words_weigh_little_beside_a_rare_one(eager_store: Store) -> None:
    common = [f"Melanie said the weather was fine on day {i}" for i in range(30)]
    await seed(eager_store, [*common, "the sculpture Melanie made is in the garden"])

    found = await eager_store.session_search("Where is the sculpture Melanie said she made?")

    assert ids(found)[0] == "m30"


async def test_an_old_exact_answer_beats_recent_noise(eager_store: Store) -> None:
    await seed(eager_store, ["Our wifi password is hunter2 by the router"])
    for day in range(3):
        await seed(eager_store, [f"the router rebooted again on day {day}"] * 40)

    found = await eager_store.session_search("what is the wifi password?")

    assert found.hits[0].snippet.startswith("Our **wifi** **password**")


async def test_a_reply_ranks_with_the_question_it_answers(any_store: Store) -> None:
    """Two replies hold the same one query word; the one whose question holds the other
    words of the query ranks first."""
    await seed(any_store, ["Did you ever get a dog?", "Yes, a beagle named Max."])
    await seed(any_store, ["Max called about the invoice.", "Thanks, Max sent it."])

    found = await any_store.session_search("what kind of dog is Max?")

    order = [(h.message_id, h.snippet) for h in found.hits]
    assert order[0][1].startswith("Did you ever get a **dog**")
    assert order[1][1] == "Yes, a beagle named **Max**."


async def test_a_neighbour_raises_a_hit_but_never_makes_one(any_store: Store) -> None:
    await seed(any_store, ["tell me about the volcano", "it erupted in 1991", "ok"])

    found = await any_store.session_search("volcano")

    assert ids(found) == ["m0"]


async def test_a_quoted_phrase_finds_that_phrase_before_scattered_words(any_store: Store) -> None:
    await seed(
        any_store,
        ["the support group met", "group support for everyone", "a support worker in a group"],
    )

    assert ids(await any_store.session_search('"support group"')) == ["m0"]
    assert ids(await any_store.session_search("support group"))[0] == "m0"


async def test_time_bounds_keep_hits_from_after_until_before(any_store: Store) -> None:
    for text in ["lantern one", "lantern two", "lantern three"]:
        await seed(any_store, [text])
    stamps = {h.snippet: h.created_at for h in (await any_store.session_search("lantern")).hits}
    second = stamps["**lantern** two"]

    later = await any_store.session_search("lantern", after=second)
    earlier = await any_store.session_search("lantern", before=second)
    day = second[:10]

    assert {h.snippet for h in later.hits} == {"**lantern** two", "**lantern** three"}
    assert {h.snippet for h in earlier.hits} == {"**lantern** one"}
    assert len((await any_store.session_search("lantern", after=day)).hits) == 3
    assert (await any_store.session_search("lantern", before=day)).hits == []
    zoned = second[:19] + "+00:00"  # the same moment without microseconds, with a zone
    assert len((await any_store.session_search("lantern", before=zoned)).hits) <= 1


@pytest.mark.parametrize(
    ("after", "before", "field"),
    [
        ("yesterday", None, "after"),
        (None, "2026-13-01", "before"),
        (20260301, None, "after"),
        ("2026-03-02", "2026-03-01", "before"),
        ("2026-03-01", "2026-03-01", "before"),
    ],
)
async def test_a_bad_time_bound_is_refused_naming_the_field(
    any_store: Store, after: Any, before: Any, field: str
) -> None:
    await seed(any_store, ["lantern"])

    with pytest.raises(InvalidInput) as refused:
        await any_store.session_search("lantern", after=after, before=before)

    assert refused.value.field == field


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_order_by_time_lists_every_hit_by_time(any_store: Store, order: str) -> None:
    await seed(any_store, ["kite", "a red kite", "kite kite kite", "no match", "kites fly"])

    found = await any_store.session_search("kite", order=order)  # type: ignore[arg-type]

    by_time = ["m0", "m1", "m2", "m4"]
    assert ids(found) == (by_time if order == "oldest" else by_time[::-1])


async def test_an_unknown_order_is_refused(any_store: Store) -> None:
    with pytest.raises(InvalidInput, match="one of relevance, newest, oldest"):
        await any_store.session_search("kite", order="random")  # type: ignore[arg-type]


async def test_context_returns_the_exchange_around_each_hit_on_its_path(
    any_store: Store,
) -> None:
    sid = await seed(any_store, ["q1", "a1", "Where is the ferry?", "Pier 4, at noon.", "q3"])
    await any_store.append_messages(sid, [{"id": "alt", "role": "user", "content": "hm"}], "m2")

    hit = (await any_store.session_search("ferry", context=2)).hits[0]

    assert [n.message_id for n in hit.before] == ["m0", "m1"]
    # After follows the newest branch from the hit: the edit "alt", not the old reply.
    assert [n.message_id for n in hit.after] == ["alt"]
    assert hit.before[1].text == "a1" and hit.before[1].role == "user"
    plain = (await any_store.session_search("ferry")).hits[0]
    assert (plain.before, plain.after) == ([], [])


async def test_context_shortens_long_neighbours(any_store: Store) -> None:
    await seed(any_store, ["word " * 200, "the answer is here"])

    hit = (await any_store.session_search("answer", context=1)).hits[0]

    assert len(hit.before[0].text) == snippets.NEIGHBOUR_CHARS
    assert hit.before[0].text.endswith("…")


@pytest.mark.parametrize("context", [-1, 6, 2.5, True, "1"])
async def test_context_outside_0_to_5_is_refused(any_store: Store, context: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        await any_store.session_search("kite", context=context)
    assert refused.value.field == "context"


async def test_filters_combine_with_ranking(any_store: Store) -> None:
    a = await seed(any_store, ["the harbour at dusk", "harbour fees"], role="assistant")
    await seed(any_store, ["the harbour at dusk", "harbour fees"], role="user")

    found = await any_store.session_search("harbour dusk", session_id=a, role="assistant")

    assert [(h.session_id, h.message_id) for h in found.hits] == [(a, "m0"), (a, "m1")]


async def test_compacted_messages_are_ranked_like_any_other(any_store: Store) -> None:
    sid = await seed(any_store, [f"filler {i}" for i in range(6)] + ["the glacier trek"])
    await any_store.compact_session(sid, "We talked.", keep_first=0, keep_last=1)
    await any_store.append_messages(sid, [{"role": "user", "content": "glacier again?"}])

    found = await any_store.session_search("Where was the glacier trek?")

    assert ids(found)[0] == "m6"


async def test_a_word_the_tokenizer_splits_is_searched_by_its_parts(any_store: Store) -> None:
    # U+19B0 is a letter to Python but a separator to SQLite's Unicode tables: the query word
    # is two index words, and the index (without positions) takes no phrase.
    await seed(any_store, ["the kala\u19b0mora festival", "kala alone", "nothing here"])

    found = await any_store.session_search("Where is kala\u19b0mora?")

    assert ids(found) == ["m0", "m1"]


def test_the_query_tokenizer_is_the_word_index_tokenizer() -> None:
    statements = " ".join(
        statement for _, migration in schema.MIGRATIONS for statement in migration
    )
    assert f"tokenize = '{words.WORD_TOKENIZER}'" in statements


# -- migration: the word index of a store that had none ---------------------------------------


def _forget_words(path: Path, keep: int) -> None:
    """Make the store look migrated midway: the word index holds messages up to ``keep``."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO fts_words (fts_words) VALUES ('delete-all')")
        conn.execute(
            "INSERT INTO fts_words (rowid, body) "
            "SELECT pk, coalesce(body, content) FROM messages WHERE pk <= ?",
            (keep,),
        )
        conn.execute("UPDATE search_state SET words_pk = ?", (keep,))
        conn.commit()
    finally:
        conn.close()


def _words_pk(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT words_pk, indexed_pk FROM search_state").fetchone()
        return int(row[0]), int(row[1])
    finally:
        conn.close()


class _KilledAfterOneChunk(sqlite3.Connection):
    """A connection whose process dies (KeyboardInterrupt) as it commits a second chunk."""

    commits = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.commits += 1
            if self.commits == 2:
                raise KeyboardInterrupt
        return super().execute(sql, *args)


async def test_opening_a_store_builds_the_missing_word_index_resuming_a_killed_build(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(index_batch=1)
    async with Store.open(db_path, config) as store:
        await seed(store, [f"note {i} about the orchard" for i in range(50)])
    _forget_words(db_path, keep=10)

    conn = sqlite3.connect(db_path, isolation_level=None, factory=_KilledAfterOneChunk)
    try:
        with pytest.raises(KeyboardInterrupt):
            indexing.backfill_words(conn, chunk=15)
    finally:
        conn.close()
    assert _words_pk(db_path) == (25, 50)  # the first chunk stays; the second rolled back

    caplog.set_level("INFO", logger="threadline.storage.indexing")
    async with Store.open(db_path, config) as store:
        assert _words_pk(db_path) == (50, 50)
        found = await store.session_search("What did the notes say about orchards?", limit=50)
        assert len(found.hits) == 50
    assert "messages up to #50 of #50 indexed" in caplog.text
    assert integrity(db_path) == ("ok", "ok")


# -- compaction summaries ---------------------------------------------------------------------


async def test_text_only_in_a_summary_is_found_and_marked_as_a_summary(any_store: Store) -> None:
    sid = await seed(any_store, [f"turn {i}" for i in range(12)])
    compacted = await any_store.compact_session(sid, "We chose the ryokan in Gion.", keep_last=2)

    ranked = await any_store.session_search("Which ryokan did we choose?")
    exact = await any_store.session_search('"ryokan in Gion"')

    for found in (ranked, exact):
        (hit,) = found.hits
        assert (hit.session_id, hit.message_id) == (sid, compacted.summary_id)
        assert (hit.role, hit.summary_of) == ("user", compacted.replaced)
        assert "**ryokan**" in hit.snippet or "**ryokan in Gion**" in hit.snippet
    plain = (await any_store.session_search("turn")).hits
    assert all(h.summary_of is None for h in plain)


async def test_summaries_follow_the_filters(any_store: Store) -> None:
    sid = await seed(any_store, [f"turn {i}" for i in range(12)])
    other = await seed(any_store, ["nothing here"])
    await any_store.compact_session(sid, "The ferry leaves at noon.", keep_last=2)

    assert ids(await any_store.session_search("ferry", role="user")) == ["compaction:1"]
    assert ids(await any_store.session_search("ferry", role="assistant")) == []
    assert ids(await any_store.session_search("ferry", session_id=other)) == []
    assert ids(await any_store.session_search("ferry", after="2999-01-01")) == []
    assert ids(await any_store.session_search("ferry", before="2999-01-01")) == ["compaction:1"]
    await any_store.delete_session(sid)
    assert (await any_store.session_search("ferry")).hits == []


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_a_summary_sorts_in_time_as_the_last_message_it_stands_for(
    any_store: Store, order: str
) -> None:
    sid = await seed(any_store, ["kite 0", *(f"kite {i}" for i in range(1, 10)), "kite 10"])
    await any_store.compact_session(sid, "kites all day", keep_first=1, keep_last=1)

    found = ids(await any_store.session_search("kite", order=order, limit=20))  # type: ignore[arg-type]

    oldest = ["m0", *(f"m{i}" for i in range(1, 10)), "compaction:1", "m10"]
    assert found == (oldest if order == "oldest" else oldest[::-1])


async def test_pages_of_an_exact_search_hold_each_summary_and_message_once(
    any_store: Store,
) -> None:
    sid = await seed(any_store, [f"the heron {i}" for i in range(30)])
    await any_store.compact_session(sid, "herons, and the heron again", keep_last=3)

    hits = await every_hit_of(any_store, '"heron"', limit=7)

    assert len(hits) == len(set(hits)) == 31
    assert hits[0] == "compaction:1"  # an exact search lists summaries first


async def every_hit_of(store: Store, query: str, limit: int) -> list[str]:
    found: list[str] = []
    cursor = None
    for _ in range(50):
        page = await store.session_search(query, limit=limit, cursor=cursor)
        found += ids(page)
        cursor = page.next_cursor
        if cursor is None:
            return found
    raise AssertionError("paging never ended")

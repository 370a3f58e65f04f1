"""Full-text search (``Store.session_search``) over real SQLite files.

Search runs over two kinds of messages: those below the watermark ``search_state.indexed_pk``
(found through the FTS5 indexes) and the unindexed tail above it (found by a scan). The
``store`` fixture leaves recent messages in the tail (``index_batch=512``) and ``eager_store``
indexes at every write, so most tests run against both (``any_store``): search must answer the
same either way.
"""

from __future__ import annotations

import base64
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio.from_thread
import anyio.to_thread
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.helpers import integrity
from threadline import Config, InvalidInput, SessionNotFound, Store
from threadline.storage import exact
from threadline.storage.models import SearchHit, SearchResults

STORES = ["store", "eager_store"]


@pytest.fixture(params=STORES)
def any_store(request: pytest.FixtureRequest) -> Store:
    """The default store (recent messages unindexed) and the eager one (everything indexed)."""
    store: Store = request.getfixturevalue(request.param)
    return store


# -- helpers ----------------------------------------------------------------------------------


async def seed(
    store: Store,
    texts: Sequence[str | list[Any]],
    *,
    title: str | None = "notes",
    role: str = "user",
) -> str:
    """A new session holding one message per text (ids ``m0``, ``m1``, ...); its id."""
    messages = [{"id": f"m{i}", "role": role, "content": text} for i, text in enumerate(texts)]
    info = await store.create_session(title=title, messages=messages)
    return info.session_id


def ids(results: SearchResults) -> list[str]:
    return [hit.message_id for hit in results.hits]


async def every_hit(store: Store, query: str, **kwargs: Any) -> list[SearchHit]:
    """All hits of a query, following ``next_cursor`` to the end."""
    hits: list[SearchHit] = []
    cursor = None
    for _ in range(100):
        page = await store.session_search(query, limit=50, cursor=cursor, **kwargs)
        hits += page.hits
        cursor = page.next_cursor
        if cursor is None:
            return hits
    raise AssertionError("paging never ended")


def watermark(path: Path) -> tuple[int, int]:
    """(``search_state.indexed_pk``, highest message pk ever) read from the file."""
    conn = sqlite3.connect(path)
    try:
        (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return indexed, row[0] if row else 0
    finally:
        conn.close()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def schema_sql(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, sql FROM sqlite_schema ORDER BY name").fetchall()
    finally:
        conn.close()


# -- 1. basics --------------------------------------------------------------------------------


async def test_a_word_in_one_message_finds_that_message_with_its_details(any_store: Store) -> None:
    messages = [
        {"id": "q1", "role": "user", "content": "Shall we walk along the harbour tomorrow?"},
        {"id": "a1", "role": "assistant", "content": "Yes, the weather looks fine."},
    ]
    info = await any_store.create_session(title="Trip planning", messages=messages)
    await any_store.create_session(title="Other", messages=[{"role": "user", "content": "hi"}])

    results = await any_store.session_search("harbour")

    assert len(results.hits) == 1
    assert results.next_cursor is None
    hit = results.hits[0]
    history = await any_store.get_history(info.session_id)
    stored = {m.id: m for m in history.messages}
    assert hit.session_id == info.session_id
    assert hit.session_title == "Trip planning"
    assert hit.message_id == "q1"
    assert hit.role == "user"
    assert hit.created_at == stored["q1"].created_at
    assert "**harbour**" in hit.snippet
    assert hit.snippet == "Shall we walk along the **harbour** tomorrow?"


async def test_a_word_no_message_holds_finds_nothing(any_store: Store) -> None:
    await seed(any_store, ["the cat sat on the mat"])

    results = await any_store.session_search("giraffe")

    assert results.hits == []
    assert results.next_cursor is None


async def test_the_snippet_of_a_long_message_is_a_short_window_around_the_match(
    any_store: Store,
) -> None:
    text = "filler " * 200 + "the lighthouse keeper" + " padding" * 200
    await seed(any_store, [text])

    (hit,) = (await any_store.session_search("lighthouse")).hits

    assert "**lighthouse**" in hit.snippet
    assert hit.snippet.startswith("…")
    assert hit.snippet.endswith("…")
    assert len(hit.snippet) < 200


async def test_the_snippet_bolds_every_term_in_its_original_case(any_store: Store) -> None:
    await seed(any_store, ["Paris in spring, then PARIS in autumn, with Rome between"])

    (hit,) = (await any_store.session_search("paris rome")).hits

    assert hit.snippet == "**Paris** in spring, then **PARIS** in autumn, with **Rome** between"


async def test_a_session_without_a_title_gives_hits_with_no_title(any_store: Store) -> None:
    sid = await seed(any_store, ["untitled musings about walruses"], title=None)

    (hit,) = (await any_store.session_search("walruses")).hits

    assert hit.session_id == sid
    assert hit.session_title is None


# -- 2. ranking -------------------------------------------------------------------------------


async def test_among_equal_scores_more_mentions_rank_higher(
    eager_store: Store,
) -> None:
    # The repeated mention is stored first, so "newest first" cannot explain the order.
    await seed(
        eager_store,
        [
            "zeppelin zeppelin zeppelin, the zeppelin and its zeppelin hangar",
            "a zeppelin once flew over the town during the long summer festival of music",
        ],
    )

    results = await eager_store.session_search("zeppelin")

    assert ids(results) == ["m0", "m1"]


async def test_a_rare_word_weighs_more_than_a_common_one(eager_store: Store) -> None:
    # Each hit holds one of the words; newest first would put m1 first.
    await seed(eager_store, [f"cobalt note {i}" for i in range(40)])
    await seed(eager_store, ["a walrus here", "a cobalt here"])

    results = await eager_store.session_search("cobalt walrus")

    assert ids(results)[:2] == ["m0", "m1"]


async def test_a_message_holding_more_of_the_words_ranks_higher(any_store: Store) -> None:
    await seed(any_store, ["the lantern", "the harbour lantern at dusk", "harbour view"])

    results = await any_store.session_search("Where is the harbour lantern?")

    assert ids(results)[0] == "m1"
    assert set(ids(results)) == {"m0", "m1", "m2"}


async def test_ranking_covers_the_whole_store_not_the_newest_messages(
    eager_store: Store,
) -> None:
    # The best hit is the oldest of WINDOW + 100 hits: newest first would put it last.
    count = exact.WINDOW + 100
    texts = ["a quokka and a zebra, the oldest"] + [
        f"a zebra seen on day {i}" for i in range(count)
    ]
    sid = await seed(eager_store, texts)

    first = await eager_store.session_search("quokka zebra", limit=5)
    hits = await every_hit(eager_store, "quokka zebra", session_id=sid)

    assert ids(first)[0] == "m0"
    order = [hit.message_id for hit in hits]
    assert order[0] == "m0"
    assert sorted(order) == sorted(f"m{i}" for i in range(count + 1))  # each exactly once


# -- 3. filters -------------------------------------------------------------------------------


async def test_session_id_restricts_hits_to_that_session(any_store: Store) -> None:
    first = await seed(any_store, ["a lantern in the window", "another lantern"])
    second = await seed(any_store, ["my lantern broke"])

    results = await any_store.session_search("lantern", session_id=second)
    everywhere = await any_store.session_search("lantern")

    assert [(h.session_id, h.message_id) for h in results.hits] == [(second, "m0")]
    assert {(h.session_id, h.message_id) for h in everywhere.hits} == {
        (first, "m0"),
        (first, "m1"),
        (second, "m0"),
    }


async def test_role_restricts_hits_to_that_role(any_store: Store) -> None:
    messages = [
        {"id": "u", "role": "user", "content": "what is a quokka"},
        {"id": "a", "role": "assistant", "content": "a quokka is a small marsupial"},
        {"id": "t", "role": "tool", "content": "quokka: Setonix brachyurus"},
        {"id": "s", "role": "system", "content": "you know quokka facts"},
    ]
    sid = (await any_store.create_session(messages=messages)).session_id

    for role in ("user", "assistant", "tool", "system"):
        results = await any_store.session_search("quokka", role=role)
        assert [(h.message_id, h.role) for h in results.hits] == [(role[0], role)]
    both = await any_store.session_search("quokka", session_id=sid, role="assistant")
    assert ids(both) == ["a"]


async def test_an_unknown_session_id_is_session_not_found(any_store: Store) -> None:
    await seed(any_store, ["some words"])

    with pytest.raises(SessionNotFound) as caught:
        await any_store.session_search("words", session_id="no-such-session")

    assert caught.value.session_id == "no-such-session"


@pytest.mark.parametrize("role", ["admin", "USER", "", "user "])
async def test_an_invalid_role_is_refused(any_store: Store, role: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search("words", role=role)  # type: ignore[arg-type]

    assert caught.value.field == "role"


@pytest.mark.parametrize("limit", [0, -1, 51, 10**9, True, 2.5, "10"])
async def test_a_limit_outside_1_to_50_is_refused(any_store: Store, limit: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search("words", limit=limit)

    assert caught.value.field == "limit"


# -- 4. paging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index_batch",
    [
        pytest.param(512, id="unindexed"),
        pytest.param(1, id="indexed"),
        pytest.param(10, id="mixed"),
    ],
)
async def test_pages_of_ten_chain_through_all_25_hits_once(db_path: Path, index_batch: int) -> None:
    async with Store.open(
        db_path, Config(index_batch=index_batch, index_chunk=10**6, index_delay=60)
    ) as store:
        misses = [{"role": "assistant", "content": f"papaya {i}"} for i in range(25)]
        sid = (await store.create_session(title="pages", messages=misses)).session_id
        for i in range(25):  # one write each, so index_batch=10 indexes 20 and leaves 5
            await store.append_messages(
                sid, [{"id": f"hit{i:02d}", "role": "user", "content": f"mango number {i}"}]
            )
        indexed, top = watermark(db_path)
        if index_batch == 10:
            assert (indexed, top) == (45, 50), "the mixed case holds indexed and unindexed hits"

        pages: list[SearchResults] = []
        cursor = None
        while True:
            page = await store.session_search("mango", limit=10, cursor=cursor)
            pages.append(page)
            cursor = page.next_cursor
            if cursor is None or len(pages) > 5:
                break

    assert [len(p.hits) for p in pages] == [10, 10, 5]
    assert pages[-1].next_cursor is None
    found = [h.message_id for p in pages for h in p.hits]
    assert len(found) == len(set(found))
    assert set(found) == {f"hit{i:02d}" for i in range(25)}


async def test_only_writes_that_add_messages_index_along(db_path: Path) -> None:
    # index_delay=60: nothing is indexed because the test pauses, only along with writes.
    config = Config(index_batch=5, index_chunk=2, index_delay=60)
    async with Store.open(db_path, config) as store:
        seeded = [{"role": "user", "content": f"lychee {i}"} for i in range(10)]
        sid = (await store.create_session(messages=seeded)).session_id
        assert watermark(db_path) == (2, 10)  # 10 wait, so the seeding write indexed a chunk
        await store.compact_session(sid, "the gist", keep_last=2)
        await store.rename_session(sid, "renamed")
        await store.record_usage(sid, input_tokens=5, output_tokens=7)
        assert watermark(db_path) == (2, 10)  # none of these added a message: none indexed
        await store.append_messages(sid, [{"role": "user", "content": "lychee 10"}])
        assert watermark(db_path) == (4, 11)
        assert len((await store.session_search("lychee", limit=20)).hits) == 11


async def test_a_fork_indexes_nothing_along_and_its_copies_are_found(db_path: Path) -> None:
    config = Config(index_batch=5, index_chunk=2, index_delay=60)
    async with Store.open(db_path, config) as store:
        seeded = [{"role": "user", "content": f"medlar {i}"} for i in range(10)]
        sid = (await store.create_session(messages=seeded)).session_id
        assert watermark(db_path) == (2, 10)

        child = (await store.fork_session(sid)).session_id
        assert watermark(db_path) == (2, 20)  # 18 wait, yet the fork indexed none
        assert len(await every_hit(store, "medlar", session_id=child)) == 10

        await store.append_messages(sid, [{"role": "user", "content": "medlar 10"}])
        assert watermark(db_path) == (4, 21)  # the next small write indexes along again


async def test_a_search_with_exactly_limit_hits_has_no_next_cursor(any_store: Store) -> None:
    await seed(any_store, [f"kiwi {i}" for i in range(10)])

    results = await any_store.session_search("kiwi", limit=10)

    assert len(results.hits) == 10
    assert results.next_cursor is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("abc", id="not-base64-json"),
        pytest.param("", id="empty"),
        pytest.param(_b64(b"\xff\xfe\x00garbage"), id="base64-garbage"),
        pytest.param(_b64(b"[-1]"), id="negative-offset"),
        pytest.param(_b64(b"[10001]"), id="offset-too-large"),
        pytest.param(_b64(b'["10"]'), id="offset-as-string"),
        pytest.param(_b64(b"[1.5]"), id="offset-as-float"),
        pytest.param(_b64(b"[true]"), id="offset-as-bool"),
        pytest.param(_b64(b"[10, 0]"), id="two-items"),
        pytest.param(_b64(b'{"offset": 10}'), id="object"),
        pytest.param("A" * 600, id="too-long"),
        pytest.param(10, id="not-a-string"),
    ],
)
async def test_a_forged_cursor_is_refused_naming_cursor(any_store: Store, cursor: Any) -> None:
    await seed(any_store, [f"plum {i}" for i in range(15)])

    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search("plum", limit=10, cursor=cursor)

    assert caught.value.field == "cursor"


# -- 5. literal text --------------------------------------------------------------------------

# Rows 20-22 of the hostile-input table in docs/reliability-plan.md.
HOSTILE = [
    '"abc',
    "AND",
    "OR x",
    "NEAR(",
    "*",
    "*reads",
    "(" * 100,
    "hello)",
    "x:y",
    "10:30",
    "a-b",
    "e-mail",
    "{title body}:x",
    "- body: x",
    "C++",
    "user@example.com",
    "O'Reilly",
    "#tag",
    "!",
]
INJECTION = ["' OR 1=1 --", "\"); ATTACH DATABASE 'x.db' AS y;--"]
DISTRACTORS = [
    "plain words only here",
    "nothing special at all",
    "hello world and goodbye",
    "reads the abc and the or",
    "C language and mail",
]


def _contains_every_term(text: str, query: str) -> bool:
    folded = text.casefold()
    return all(term.casefold() in folded for term in query.split())


def _holds_a_word_or_every_term(text: str, query: str) -> bool:
    words = set(re.findall(r"[^\W_]+", text.lower()))
    return _contains_every_term(text, query) or any(
        w in words for w in re.findall(r"[^\W_]+", query.lower())
    )


@pytest.mark.parametrize("literal", HOSTILE + INJECTION, ids=repr)
async def test_fts_syntax_in_a_query_is_searched_as_literal_text(
    any_store: Store, literal: str
) -> None:
    texts = DISTRACTORS + [f"before {text} after" for text in HOSTILE + INJECTION]
    await seed(any_store, texts)
    mine = f"m{len(DISTRACTORS) + (HOSTILE + INJECTION).index(literal)}"
    by_id = {f"m{i}": text for i, text in enumerate(texts)}

    hits = await every_hit(any_store, literal)

    found = [h.message_id for h in hits]
    assert mine in found
    assert _contains_every_term(by_id[found[0]], literal)  # as written ranks first
    assert len(found) == len(set(found))
    # Every hit holds a word of the query, or every term as written: no operator, column
    # filter or prefix query widened the match.
    wrong = [m for m in found if not _holds_a_word_or_every_term(by_id[m], literal)]
    assert wrong == []


@pytest.mark.parametrize("literal", HOSTILE + INJECTION, ids=repr)
async def test_fts_syntax_in_a_quoted_query_is_searched_as_literal_text(
    any_store: Store, literal: str
) -> None:
    texts = DISTRACTORS + [f"before {text} after" for text in HOSTILE + INJECTION]
    await seed(any_store, texts)
    by_id = {f"m{i}": text for i, text in enumerate(texts)}
    query = f'"before" {literal}'

    hits = await every_hit(any_store, query)

    found = [h.message_id for h in hits]
    assert found
    assert [m for m in found if not _contains_every_term(by_id[m], literal)] == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [("wow !", {"m0", "m4"}), ("ok !", {"m2", "m4"}), ("wow ok ?", {"m4"}), ("! ?", {"m4"})],
)
async def test_a_punctuation_only_term_must_match_alongside_words(
    any_store: Store, query: str, expected: set[str]
) -> None:
    await seed(any_store, ["wow! great", "wow great", "ok !", "ok then", "wow, ok? sure!"])

    first, rest = query.split(" ", 1)
    exact = await any_store.session_search(f'"{first}" {rest}')
    ranked = await any_store.session_search(query)

    assert set(ids(exact)) == expected
    assert len(exact.hits) == len(expected)
    assert set(ids(ranked)[: len(expected)]) == expected  # as typed first


@pytest.mark.parametrize("query", ["title:x", "body:before", "rank:1", "fts_words:x", "rowid:1"])
async def test_a_column_filter_cannot_target_hidden_columns(any_store: Store, query: str) -> None:
    await seed(any_store, ["before x after", "title x body rank 1"])

    exact = await any_store.session_search(f'"{query}"')
    ranked = await every_hit(any_store, query)

    texts = {"m0": "before x after", "m1": "title x body rank 1"}
    # No message holds the phrase: its words rank as usual, as plain text.
    assert all(query not in texts[h.message_id] for h in exact.hits)
    for hit in [*exact.hits, *ranked]:
        assert _holds_a_word_or_every_term(texts[hit.message_id], query)


async def test_sql_injection_is_stored_and_searched_literally_and_touches_nothing(
    any_store: Store, tmp_path: Path, db_path: Path
) -> None:
    title, content = INJECTION[1], f"quoted {INJECTION[0]} and {INJECTION[1]} done"
    sid = (
        await any_store.create_session(
            title=title, messages=[{"id": "evil", "role": "user", "content": content}]
        )
    ).session_id
    await seed(any_store, ["an innocent bystander"])
    files_before = listing(tmp_path)
    schema_before = schema_sql(db_path)

    for query in INJECTION:
        results = await any_store.session_search(query)
        assert [(h.session_id, h.message_id, h.session_title) for h in results.hits] == [
            (sid, "evil", title)
        ]
    assert "x.db" not in files_before
    assert listing(tmp_path) == files_before
    assert schema_sql(db_path) == schema_before


# -- 6. rejected queries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param("\t\n \r", id="whitespace"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("\x00", id="only-nul"),
        pytest.param("ok \ud800", id="lone-surrogate"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(["list"], id="list"),
    ],
)
async def test_an_empty_or_malformed_query_is_refused(any_store: Store, query: Any) -> None:
    await seed(any_store, ["a b ok"])

    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search(query)

    assert caught.value.field == "query"


async def test_a_query_over_1000_characters_is_refused_naming_the_limit(
    any_store: Store,
) -> None:
    await seed(any_store, ["a" * 1000])

    assert ids(await any_store.session_search("a" * 1000)) == ["m0"]
    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search("a" * 1001)

    assert caught.value.field == "query"
    assert "1000" in caught.value.rule


async def test_a_query_of_33_terms_is_refused_naming_the_limit(any_store: Store) -> None:
    words = [f"w{i}" for i in range(33)]
    await seed(any_store, [" ".join(words)])

    assert ids(await any_store.session_search(" ".join(words[:32]))) == ["m0"]
    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search(" ".join(words))

    assert caught.value.field == "query"
    assert "32" in caught.value.rule


async def test_a_megabyte_query_is_refused_quickly(any_store: Store) -> None:
    await seed(any_store, ["word " * 100])
    query = "word " * 200_000

    started = time.monotonic()
    with pytest.raises(InvalidInput) as caught:
        await any_store.session_search(query)

    assert caught.value.field == "query"
    assert time.monotonic() - started < 1.0


# -- 7. CJK -----------------------------------------------------------------------------------

CJK = [
    ("ja", "東京で会いましょう", "東京"),
    ("ja", "東京で会いましょう", "会いましょう"),
    ("ko", "서울에서 만나요", "서울"),
    ("ko", "서울에서 만나요", "만나요"),
    ("zh", "我们明天在北京见面", "北京"),
    ("zh", "我们明天在北京见面", "明天在北京"),
]


@pytest.mark.parametrize(("lang", "text", "query"), CJK)
async def test_cjk_words_are_found_inside_unspaced_text(
    any_store: Store, lang: str, text: str, query: str
) -> None:
    await seed(any_store, ["unrelated english text", text, "東西南北"])

    results = await any_store.session_search(query)

    assert ids(results) == ["m1"]
    assert f"**{query}**" in results.hits[0].snippet


# -- 8. substrings, case, AND -----------------------------------------------------------------


async def test_part_of_a_word_finds_the_word(any_store: Store) -> None:
    await seed(any_store, ["threadline keeps threads", "a dead line looms"])

    results = await any_store.session_search("eadli")

    assert ids(results) == ["m0"]
    assert "thr**eadli**ne" in results.hits[0].snippet


@pytest.mark.parametrize(("stored", "query"), [("kyoto", "KYOTO"), ("KYOTO", "kyoto")])
async def test_search_ignores_case(any_store: Store, stored: str, query: str) -> None:
    await seed(any_store, [f"we went to {stored} in May", "we went to Osaka"])

    results = await any_store.session_search(query)

    assert ids(results) == ["m0"]
    assert f"**{stored}**" in results.hits[0].snippet


async def test_a_quoted_query_needs_every_term(any_store: Store) -> None:
    await seed(
        any_store,
        ["alpha beta", "beta gamma", "alpha beta gamma", "gamma then alpha", "alphagamma"],
    )

    assert set(ids(await any_store.session_search('"alpha" gamma'))) == {"m2", "m3", "m4"}
    assert set(ids(await any_store.session_search('gamma "alpha"'))) == {"m2", "m3", "m4"}
    assert set(ids(await any_store.session_search('"alpha"  beta\tgamma'))) == {"m2"}
    # No message holds them all: the words rank as usual (delta is in none, alpha in three).
    assert set(ids(await any_store.session_search('"alpha" delta'))) == {"m0", "m2", "m3"}


async def test_an_unquoted_query_needs_any_word_and_ranks_those_with_more_first(
    any_store: Store,
) -> None:
    await seed(any_store, ["alpha beta", "beta gamma", "alpha beta gamma", "delta"])

    results = await any_store.session_search("alpha gamma")

    assert ids(results)[0] == "m2"
    assert set(ids(results)) == {"m0", "m1", "m2"}
    assert ids(await any_store.session_search("alpha epsilon")) == ["m2", "m0"]


async def test_two_letter_words_are_found(any_store: Store) -> None:
    await seed(any_store, ["go to the AI lab", "going nowhere", "the lab"])

    assert ids(await any_store.session_search("AI lab")) == ["m0", "m2"]
    assert ids(await any_store.session_search('"AI" lab')) == ["m0"]
    assert set(ids(await any_store.session_search('"go" lab'))) == {"m0"}


async def test_a_short_term_with_punctuation_is_matched_literally(any_store: Store) -> None:
    await seed(any_store, ["I write C# daily", "plain C language", "x: marks the spot", "x y"])

    assert ids(await any_store.session_search('"C#"')) == ["m0"]
    assert ids(await any_store.session_search('"x:"')) == ["m2"]
    assert ids(await any_store.session_search("C#"))[0] == "m0"  # as typed first
    assert ids(await any_store.session_search("x:"))[0] == "m2"


# (id, stored text, query): letters whose case mappings differ between Python and SQLite
UNUSUAL_CASE = [
    ("kelvin-sign", "temperature 300 \u212a", "300 \u212a"),
    ("kelvin-sign-word", "\u212a\u212a\u212a triple", "\u212a\u212a\u212a"),
    ("dotted-capital-i", "İstanbul trip", "İstanbul"),
    ("greek-capitals", "ΟΔΟΣ street", "ΟΔΟΣ"),
    ("capital-sharp-s", "ẞTRASSE", "ẞTRASSE"),
    ("titlecase-digraph", "ǅemal", "ǅemal"),
    ("ohm-sign", "\u2126hm", "\u2126hm"),
    ("cherokee", "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ", "ᏣᎳᎩ"),
    ("georgian-mtavruli", "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ", "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ"),
    ("adlam", "\U0001e900\U0001e901\U0001e902 text", "\U0001e900\U0001e901\U0001e902"),
    ("cyrillic", "ПРИВЕТ мир", "ПРИВЕТ"),
    ("latin-accents", "ÉCOLE normale", "ÉCOLE"),
]


def _unusual_case_params() -> list[Any]:
    return [
        pytest.param(kind, text, query, id=f"{kind}-{name}")
        for kind in STORES
        for name, text, query in UNUSUAL_CASE
    ]


@pytest.mark.parametrize(
    ("any_store", "text", "query"), _unusual_case_params(), indirect=["any_store"]
)
async def test_text_with_unusual_case_mappings_is_found_by_its_own_text(
    any_store: Store, text: str, query: str
) -> None:
    await seed(any_store, ["plain ascii words", text])

    results = await any_store.session_search(query)

    assert ids(results) == ["m1"]


EQUIVALENCE = [
    pytest.param("eadli", id="substring"),
    pytest.param("KYOTO", id="case"),
    pytest.param("!", id="punctuation-only"),
    pytest.param("lab", id="three-letters"),
    pytest.param("ab", id="two-letters-inside-a-word"),
    pytest.param("C#", id="short-with-punctuation"),
    pytest.param("東京", id="two-cjk"),
    pytest.param("strasse", id="full-case-folding"),
    pytest.param("ẞTRASSE", id="capital-sharp-s"),
    pytest.param("\u212a\u212a\u212a", id="kelvin-sign"),
    pytest.param("İstanbul", id="dotted-capital-i"),
    pytest.param("ΟΔΟΣ", id="final-sigma"),
]


@pytest.mark.parametrize("query", EQUIVALENCE)
async def test_a_query_finds_the_same_messages_indexed_or_not(tmp_path: Path, query: str) -> None:
    texts = [
        "threadline",
        "Kyoto trip",
        "wow!",
        "the AI lab",
        "kabob",
        "the ab muscles",
        "I write C# daily",
        "plain C language",
        "東京で会いましょう",
        "東京",
        "Straße",
        "strasse",
        "ẞTRASSE",
        "\u212a\u212a\u212a triple",
        "İstanbul trip",
        "ΟΔΟΣ street",
        "οδοσ x",
    ]
    found = []
    for name, batch in (("tail.db", 512), ("indexed.db", 1)):
        async with Store.open(
            tmp_path / name, Config(index_batch=batch, index_chunk=10**6, index_delay=60)
        ) as store:
            await seed(store, texts, title="same")
            found.append(sorted(ids(await store.session_search(query, limit=50))))

    assert found[0] == found[1]
    assert found[0] != []


# -- 9. text inside JSON parts ----------------------------------------------------------------

PARTS: list[list[Any]] = [
    [{"type": "text", "text": "the quarterly report is ready"}],
    [
        {"type": "text", "text": "let me look"},
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "run_query",
            "input": {"sql": "select revenue from ledger", "options": {"dialect": "sqlite"}},
        },
    ],
    [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "revenue was 42 gizmos"}],
    [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_02",
            "content": [{"type": "text", "text": "nested wombat output"}],
        }
    ],
    [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "UVVB"}}],
    [{"type": "image", "data": "SGVsbG9Xb3JsZEJhc2U2NA", "mime_type": "image/png"}],
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("quarterly", "m0"),
        ("ledger", "m1"),
        ("sqlite", "m1"),
        ("run_query", "m1"),
        ("gizmos", "m2"),
        ("wombat", "m3"),
    ],
)
async def test_text_inside_json_parts_is_found(any_store: Store, query: str, expected: str) -> None:
    await seed(any_store, PARTS, role="assistant")

    results = await any_store.session_search(query)

    assert ids(results) == [expected]
    snippet = results.hits[0].snippet
    assert f"**{query}**" in snippet
    assert '"type"' not in snippet


@pytest.mark.parametrize(
    "query",
    [
        "type",
        "text",
        "image",
        "tool_use",
        "tool_result",
        "toolu_01",
        "base64",
        "image/png",
        "UVVB",
        "SGVsbG9Xb3JsZEJhc2U2NA",
        "media_type",
        '"type":',
        "{",
    ],
)
async def test_json_structure_and_payload_are_not_hits(any_store: Store, query: str) -> None:
    await seed(any_store, PARTS, role="assistant")

    results = await any_store.session_search(query)

    assert results.hits == []


# -- 10. deletes and compaction ---------------------------------------------------------------


async def test_a_deleted_session_vanishes_from_results(any_store: Store) -> None:
    gone = await seed(any_store, ["marmalade on toast", "more marmalade"])
    kept = await seed(any_store, ["marmalade jar"])

    await any_store.delete_session(gone)

    hits = await every_hit(any_store, "marmalade")
    assert [(h.session_id, h.message_id) for h in hits] == [(kept, "m0")]


async def test_a_deleted_session_stays_gone_once_everything_is_indexed(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        deleted_early = await seed(store, ["marmalade early"])
        kept = await seed(store, ["marmalade kept"])
        await store.delete_session(deleted_early)  # while still unindexed
        deleted_late = await seed(store, ["marmalade late"])
    async with Store.open(db_path) as store:  # closing indexed everything
        assert watermark(db_path)[0] == watermark(db_path)[1]
        await store.delete_session(deleted_late)  # now indexed
        hits = await every_hit(store, "marmalade")
        assert [h.session_id for h in hits] == [kept]
    async with Store.open(db_path) as store:
        hits = await every_hit(store, "marmalade")
        assert [h.session_id for h in hits] == [kept]
    assert integrity(db_path) == ("ok", "ok")


async def test_deleting_messages_removes_the_subtree_from_results(any_store: Store) -> None:
    sid = await seed(any_store, ["root note", "walnut one", "walnut two"])
    await any_store.append_messages(
        sid, [{"id": "b0", "role": "user", "content": "walnut branch"}], parent_id="m0"
    )

    deleted = await any_store.delete_messages(sid, "m1")

    assert deleted.messages_deleted == 2
    assert ids(await any_store.session_search("walnut")) == ["b0"]
    assert ids(await any_store.session_search("root")) == ["m0"]


async def test_deleting_indexed_messages_removes_them_after_reopen(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        sid = await seed(store, ["root note", "walnut one", "walnut two", "walnut three"])
    async with Store.open(db_path) as store:
        await store.delete_messages(sid, "m2")
        assert ids(await store.session_search("walnut")) == ["m1"]
    async with Store.open(db_path) as store:
        assert ids(await store.session_search("walnut")) == ["m1"]
    assert integrity(db_path) == ("ok", "ok")


async def test_hits_inside_a_compacted_range_are_still_found(any_store: Store) -> None:
    texts = [f"turn {i} mentions heron{i:02d} by the river" for i in range(14)]
    messages = [
        {"id": f"m{i}", "role": ("user", "assistant")[i % 2], "content": text}
        for i, text in enumerate(texts)
    ]
    sid = (await any_store.create_session(title="birds", messages=messages)).session_id

    result = await any_store.compact_session(sid, "we talked about herons", keep_last=2)

    assert (result.first_id, result.last_id, result.replaced) == ("m2", "m11", 10)
    history = await any_store.get_history(sid)
    assert [m.id for m in history.messages] == ["m0", "m1", result.summary_id, "m12", "m13"]
    for i in range(14):
        assert ids(await any_store.session_search(f"heron{i:02d}")) == [f"m{i}"]
    all_herons = await every_hit(any_store, "river", session_id=sid)
    assert sorted(h.message_id for h in all_herons) == sorted(f"m{i}" for i in range(14))


# -- 11. no duplicates, forks -----------------------------------------------------------------


async def test_each_message_is_returned_once_before_and_after_indexing(db_path: Path) -> None:
    async with Store.open(db_path) as store:
        sid = await seed(store, [f"otter {i}" for i in range(8)])
        before = await every_hit(store, "otter")
    async with Store.open(db_path) as store:  # now indexed
        after_reopen = await every_hit(store, "otter")
        await store.append_messages(
            sid, [{"id": f"n{i}", "role": "user", "content": f"otter again {i}"} for i in range(4)]
        )
        mixed = await every_hit(store, "otter")
        indexed, top = watermark(db_path)
        assert 0 < indexed < top
    async with Store.open(db_path) as store:
        final = await every_hit(store, "otter")

    first_eight = {f"m{i}" for i in range(8)}
    assert sorted(h.message_id for h in before) == sorted(first_eight)
    assert sorted(h.message_id for h in after_reopen) == sorted(first_eight)
    all_twelve = first_eight | {f"n{i}" for i in range(4)}
    assert sorted(h.message_id for h in mixed) == sorted(all_twelve)
    assert sorted(h.message_id for h in final) == sorted(all_twelve)


async def test_a_forks_copies_are_hits_of_the_fork(any_store: Store) -> None:
    source = await seed(any_store, ["the pelican flies", "the pelican lands"], title="birds")
    fork = (await any_store.fork_session(source)).session_id

    hits = await every_hit(any_store, "pelican")
    in_fork = await every_hit(any_store, "pelican", session_id=fork)

    assert sorted((h.session_id, h.message_id) for h in hits) == sorted(
        [(source, "m0"), (source, "m1"), (fork, "m0"), (fork, "m1")]
    )
    assert {h.session_title for h in hits if h.session_id == fork} == {"birds (fork)"}
    assert sorted(h.message_id for h in in_fork) == ["m0", "m1"]
    assert {h.session_id for h in in_fork} == {fork}

    await any_store.delete_session(source)

    hits = await every_hit(any_store, "pelican")
    assert sorted((h.session_id, h.message_id) for h in hits) == [(fork, "m0"), (fork, "m1")]


# -- 12. property: never crashes, always finds stored text ------------------------------------

# FTS5 syntax, SQL punctuation and words the query language gives meaning to.
OPERATOR_PIECES = [
    *" \"'*():^-+{}[]!#@.,;:_~/\\%$&|<>=?`",
    *["AND", "OR", "NOT", "NEAR", "body", "rank", "x", "東京", "é", "ß", "C"],
]
OPERATOR_TEXT = st.lists(st.sampled_from(OPERATOR_PIECES), max_size=40).map("".join)
ANY_TEXT = (
    st.one_of(st.text(max_size=40), OPERATOR_TEXT)
    .map(lambda t: t[:40])
    .filter(lambda t: bool(t.strip()) and "\x00" not in t)
)


@pytest.mark.parametrize("index_batch", [512, 1], ids=["unindexed", "indexed"])
async def test_any_query_is_answered_or_refused_and_stored_text_is_found(
    db_path: Path, index_batch: int
) -> None:
    async with Store.open(
        db_path, Config(index_batch=index_batch, index_chunk=10**6, index_delay=60)
    ) as store:
        await seed(store, ["a neutral message", "(( ** '' \"\" :: --", "東京 AND OR NEAR"])

        tried = {"queries": 0, "stored": 0}

        def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return anyio.from_thread.run(functools.partial(fn, *args, **kwargs))

        @settings(max_examples=100, deadline=None)
        @given(ANY_TEXT)
        @example('"abc')
        @example("NEAR(x")
        @example("C++")
        @example("ÉCOLE")
        @example("東京")
        @example("* OR x:y")
        def check(text: str) -> None:
            try:
                call(store.session_search, text)
            except InvalidInput as exc:
                assert exc.field == "query"
                assert len(text.split()) > 32
            tried["queries"] += 1
            if len(text) < 3 or any(ch.isspace() for ch in text):
                return
            sid = call(seed, store, ["decoy", f"before {text} after"])
            results = call(store.session_search, text, session_id=sid)
            assert "m1" in ids(results)
            tried["stored"] += 1

        await anyio.to_thread.run_sync(check)
        assert tried["queries"] >= 50
        assert tried["stored"] >= 5

    assert integrity(db_path) == ("ok", "ok")


# -- 13. integrity ----------------------------------------------------------------------------


@pytest.mark.parametrize("index_batch", [512, 1, 3])
async def test_indexes_pass_integrity_checks_after_a_mixed_workload(
    db_path: Path, index_batch: int
) -> None:
    config = Config(index_batch=index_batch, index_chunk=10**6, index_delay=60)
    async with Store.open(db_path, config) as store:
        first = await seed(store, HOSTILE + INJECTION + [c[1] for c in CJK] + PARTS, title="mix")
        second = await seed(store, [f"turn {i} heron" for i in range(14)], title="long")
        await store.compact_session(second, "herons", keep_last=2)
        fork = (await store.fork_session(second)).session_id
        await store.delete_messages(first, "m5")
        await store.append_messages(fork, [{"role": "user", "content": "heron after fork"}])
        gone = await seed(store, ["short lived heron"])
        await store.delete_session(gone)
        # The messages of both sessions and the one after the fork, and the summary
        # "herons" in the session and (copied) in its fork.
        hits = await every_hit(store, "heron")
        assert len(hits) == 14 + 14 + 1 + 2
        assert [h.summary_of for h in hits if h.message_id.startswith("compaction:")] == [10, 10]
    assert integrity(db_path) == ("ok", "ok")
    indexed, top = watermark(db_path)
    assert indexed == top

    async with Store.open(db_path, config) as store:
        await store.delete_session(first)
        await store.delete_messages(fork, "m3")
        hits = await every_hit(store, "heron")
        assert sorted({h.session_id for h in hits}) == sorted({second, fork})
        # The fork's copy of the summary went with the messages it stood for.
        assert len(hits) == 14 + 3 + 1
    assert integrity(db_path) == ("ok", "ok")

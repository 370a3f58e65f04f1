"""Workloads 3, 4 and 5 on one large store: history, search, fork and compaction.

The store is built once per run in a temporary directory. Read workloads alternate threadline
and the raw query in small blocks, so that a noisy neighbour slows both alike.
"""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baseline
from bench.sizes import Results, Sizes, clock, file_size, role
from bench.stats import Latencies, Row
from bench.text import WordSalad
from threadline import Store
from threadline.config import Config
from threadline.storage.exact import WINDOW
from threadline.storage.words import fts_match

_WORDS = re.compile(r"[^\W_]+")

# -- 3, 4, 5: a large store ------------------------------------------------------------------


@dataclass
class BigStore:
    """The store workloads 3-5 share, and what they need to know about it."""

    path: Path
    large: str
    small: str
    fillers: list[str]
    messages: int
    seconds: float


def _plan_sessions(sizes: Sizes) -> dict[str, int]:
    counts = {"large": sizes.large, "small": sizes.small}
    rest = sizes.total - sizes.large - sizes.small
    i = 0
    while rest > 0:
        counts[f"filler-{i:04d}"] = min(sizes.filler, rest)
        rest -= counts[f"filler-{i:04d}"]
        i += 1
    return counts


async def build_store(path: Path, sizes: Sizes, salad: WordSalad, results: Results) -> BigStore:
    """Fill a store through ``append_messages`` in batches of ``build_batch``.

    The batches of all sessions come in a seeded random order (each session's own batches in
    order), so a session's messages are spread over the table as they would be in use. Text
    is generated between calls; only the calls are timed.
    """
    counts = _plan_sessions(sizes)
    order = [sid for sid, count in counts.items() for _ in range(-(-count // sizes.build_batch))]
    random.Random(3).shuffle(order)
    done = dict.fromkeys(counts, 0)
    rng = random.Random(f"{salad.seed}/build")
    seconds = 0.0
    async with Store.open(path) as store:
        for sid in counts:
            await store.create_session(session_id=sid, title=sid)
        for sid in order:
            first = done[sid]
            batch = [
                {"role": role(first + j), "content": salad.message(rng)}
                for j in range(min(sizes.build_batch, counts[sid] - first))
            ]
            t0 = clock()
            await store.append_messages(sid, batch)
            seconds += clock() - t0
            done[sid] += len(batch)
    built = BigStore(
        path=path,
        large="large",
        small="small",
        fillers=[
            sid
            for sid, count in counts.items()
            if sid.startswith("filler") and count == sizes.filler
        ],
        messages=sum(counts.values()),
        seconds=seconds,
    )
    size = file_size(path)
    space = _space(path)
    results.details["build"] = {
        "messages": built.messages,
        "sessions": len(counts),
        "batch": sizes.build_batch,
        "append_seconds": seconds,
        "rate_per_s": built.messages / seconds,
        "file_bytes": size,
        "bytes_by_object": space,
    }
    work = f"3. build {built.messages:,} msgs"
    results.add(
        Row(
            work,
            f"append_messages x{sizes.build_batch}",
            built.messages / seconds,
            "msg/s",
            "higher",
        )
    )
    results.add(Row(work, "file size per message", size / built.messages, "bytes", "lower"))
    for table, label in (("fts_trigram", "trigram index"), ("fts_words", "word index")):
        fts = sum(v for k, v in space.items() if k.startswith(table))
        if fts:
            results.add(Row(work, f"of which {label}", fts / built.messages, "bytes", "lower"))
    return built


def _space(path: Path) -> dict[str, int]:
    """Bytes of pages per table and index (SQLite's ``dbstat``), or {} where it is missing."""
    conn = baseline.read_only(path)
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {name: int(size) for name, size in sorted(rows, key=lambda r: -r[1])}


_RAW_HISTORY = """SELECT id, role, content, created_at FROM messages
    WHERE session_id = ? ORDER BY pk DESC LIMIT ?"""
# The same 50 rows by threadline's own access path: from the session's head up the parent
# links, by primary key. The schema has no (session_id, pk) index, so the SELECT above reads
# every row of the session and sorts them; this walk reads 50.
_RAW_WALK = """WITH RECURSIVE chain (n, pk) AS (
        SELECT 1, head_pk FROM sessions WHERE id = ?
        UNION ALL
        SELECT n + 1, m.parent_pk FROM chain JOIN messages m ON m.pk = chain.pk
        WHERE n < ? AND m.parent_pk IS NOT NULL)
    SELECT m.id, m.role, m.content, m.created_at FROM chain JOIN messages m ON m.pk = chain.pk
    ORDER BY chain.n"""
_RAW_LABELS = {
    _RAW_HISTORY: "raw SELECT WHERE session_id ORDER BY pk DESC",
    _RAW_WALK: "raw recursive CTE walk from head (50 rows)",
}


async def history(big: BigStore, sizes: Sizes, results: Results) -> None:
    """Workload 3: ``get_history(limit=50)`` of a small and a large session vs raw queries."""
    details: dict[str, Any] = {}
    results.details["history"] = details
    async with Store.open(big.path) as store:
        raw = baseline.read_only(big.path)
        try:
            for sql in _RAW_LABELS:
                plan = raw.execute("EXPLAIN QUERY PLAN " + sql, ("large", 50)).fetchall()
                details[f"plan: {_RAW_LABELS[sql]}"] = [row[-1] for row in plan]
            for sid, count in ((big.small, sizes.small), (big.large, sizes.large)):
                tl, bases = await _history_trials(store, raw, sid, sizes.history_calls)
                details[sid] = {"messages": count, "threadline": tl.summary_ms()}
                details[sid].update({_RAW_LABELS[k]: v.summary_ms() for k, v in bases.items()})
                work = f"3. history last 50 of {count:,}"
                for q in (50, 99):
                    for sql, base in bases.items():
                        ms = base.p(q) * 1e3
                        results.add(
                            Row(work, f"p{q}", tl.p(q) * 1e3, "ms", "lower", _RAW_LABELS[sql], ms)
                        )
        finally:
            raw.close()


async def _history_trials(
    store: Store, raw: sqlite3.Connection, sid: str, calls: int, block: int = 20
) -> tuple[Latencies, dict[str, Latencies]]:
    def select(sql: str) -> list[Any]:
        return raw.execute(sql, (sid, 50)).fetchall()

    # The same 50 messages in the same order, or the comparison means nothing.
    page = await store.get_history(sid, limit=50)
    ids = [m.id for m in page.messages]
    assert ids == [row[0] for row in reversed(select(_RAW_HISTORY))], sid
    assert ids == [row[0] for row in reversed(select(_RAW_WALK))], sid
    for _ in range(5):  # warm up: statement caches, the reader pool, pages in memory
        await store.get_history(sid, limit=50)
        for sql in _RAW_LABELS:
            select(sql)
    tl = Latencies()
    bases = {sql: Latencies() for sql in _RAW_LABELS}
    for _ in range(max(1, calls // block)):  # alternate in blocks: noise hits all alike
        for _ in range(block):
            t0 = clock()
            await store.get_history(sid, limit=50)
            tl.add(clock() - t0)
        for sql, base in bases.items():
            for _ in range(block):
                t0 = clock()
                select(sql)
                base.add(clock() - t0)
    return tl, bases


def queries_for(raw: sqlite3.Connection, salad: WordSalad, count: int) -> list[str]:
    """Half drawn uniformly from the vocabulary, half from the words of a stored message.

    Uniform draws are mostly rare words and, with two or three of them, mostly find nothing;
    words taken from one stored message always find it (and the messages like it).
    """
    uniform = salad.queries(count - count // 2, seed=4)
    rng = random.Random(f"{salad.seed}/search")
    (top,) = raw.execute("SELECT max(pk) FROM messages").fetchone()
    recalled: list[str] = []
    while len(recalled) < count // 2:
        row = raw.execute(
            "SELECT content FROM messages WHERE pk = ?", (rng.randint(1, top),)
        ).fetchone()
        words = {w.strip(".,").lower() for w in row[0].split()} if row else set()
        words = {w for w in words if len(w) >= 3 and not w.isdigit()}
        if words:
            recalled.append(" ".join(rng.sample(sorted(words), min(len(words), rng.randint(1, 3)))))
    return [q for pair in zip(uniform, recalled, strict=False) for q in pair]


_QUESTIONS = (
    "What did we decide about the {0} and the {1}?",
    "When did you last mention {0}?",
    "Can you remind me what the {0} was for, and how {1} fits in?",
    "Where did I say the {0} {1} should go after the {2}?",
    "Why was the {0} slower than the {1} last time?",
    "Who told me about {0} and {1} a while ago?",
    "Is there anything about {0} that I should know before the {1} {2}?",
)


def questions_for(raw: sqlite3.Connection, salad: WordSalad, count: int) -> list[str]:
    """Questions of 5-15 words, as a model asks them: glue words around two or three words
    of a stored message (so each has an answer) or of the vocabulary (so some have none)."""
    rng = random.Random(f"{salad.seed}/questions")
    (top,) = raw.execute("SELECT max(pk) FROM messages").fetchone()
    common = set(salad.vocabulary[:300])
    questions: list[str] = []
    while len(questions) < count:
        template = rng.choice(_QUESTIONS)
        if len(questions) % 2:
            words = rng.sample(salad.vocabulary, 3)
        else:
            (text,) = raw.execute(
                "SELECT content FROM messages WHERE pk = ?", (rng.randint(1, top),)
            ).fetchone()
            found = {w.strip(".,").lower() for w in text.split()} - common
            words = rng.sample(sorted(w for w in found if w.isalpha()), 3)
        questions.append(template.format(*words))
    return questions


def fts_query(query: str) -> str:
    """Threadline's MATCH expression for a query: every term quoted (literal text)."""
    return fts_match(list(dict.fromkeys(query.split())))


_RAW_RANK = "raw FTS5 MATCH ... ORDER BY rank LIMIT 10"
_RAW_WINDOW = f"raw FTS5 MATCH ... ORDER BY rowid DESC LIMIT {WINDOW}"
_RAW_SEARCHES = {
    # FTS5's own bm25 over every match: how threadline ranked before it ranked a window.
    _RAW_RANK: "SELECT rowid FROM fts_trigram WHERE fts_trigram MATCH ? ORDER BY rank LIMIT 10",
    # The candidates threadline ranks, fetched bare: the floor of its own plan.
    _RAW_WINDOW: "SELECT rowid FROM fts_trigram WHERE fts_trigram MATCH ? "
    f"ORDER BY rowid DESC LIMIT {WINDOW}",
}


# Questions rank by any of their words: the baseline is FTS5's own bm25 over the word index,
# OR of the words, the whole store ranked (what a plain full-text engine does).
_RAW_OR = "raw FTS5 words MATCH a OR b ... ORDER BY rank LIMIT 10"
_RAW_OR_SQL = "SELECT rowid FROM fts_words WHERE fts_words MATCH ? ORDER BY rank LIMIT 10"
# ... run for the first questions only: over a word index without positions bm25 reads every
# matching row (about 10 s a question at 1,000,000 messages).
_RAW_OR_QUERIES = 10


async def search(big: BigStore, sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workload 4: ``session_search(q, limit=10)`` on the fully indexed store, for keyword
    queries (vs a raw trigram MATCH) and for questions in plain words (vs FTS5's bm25)."""
    async with Store.open(big.path) as store:
        raw = baseline.read_only(big.path)
        try:
            keywords = queries_for(raw, salad, sizes.queries)
            questions = questions_for(raw, salad, sizes.queries)
            for q in keywords[:5] + questions[:5]:
                await store.session_search(q, limit=10)
            for kind, queries, baselines in (
                ("keywords", keywords, _RAW_SEARCHES),
                ("questions", questions, {_RAW_OR: _RAW_OR_SQL}),
            ):
                await _search_trials(store, raw, big, kind, queries, baselines, results)
        finally:
            raw.close()


async def _search_trials(
    store: Store,
    raw: sqlite3.Connection,
    big: BigStore,
    kind: str,
    queries: list[str],
    baselines: dict[str, str],
    results: Results,
) -> None:
    tl = Latencies()
    bases = {label: Latencies() for label in baselines}
    hits: list[int] = []
    for i, q in enumerate(queries):
        t0 = clock()
        found = await store.session_search(q, limit=10)
        tl.add(clock() - t0)
        hits.append(len(found.hits))
        words = dict.fromkeys(_WORDS.findall(q.lower()))
        any_word = " OR ".join(fts_match([w]) for w in words)
        for label, sql in baselines.items():
            if label == _RAW_OR and i >= _RAW_OR_QUERIES:
                continue
            match = fts_query(q) if label in _RAW_SEARCHES else any_word
            t0 = clock()
            raw.execute(sql, (match,)).fetchall()
            bases[label].add(clock() - t0)
    # The same queries back to back: a long baseline query between two of threadline's lets
    # the machine reclaim the file's cached pages (seen on these VMs), so the pass above is
    # partly cold; this one is what a server answering a stream of searches sees.
    alone = Latencies()
    for q in queries:
        t0 = clock()
        await store.session_search(q, limit=10)
        alone.add(clock() - t0)
    slowest = sorted(zip(tl.samples, queries, strict=True), reverse=True)[:5]
    results.details[f"search_{kind}"] = {
        "queries": len(queries),
        "threadline": tl.summary_ms(),
        "threadline_back_to_back": alone.summary_ms(),
        **{label: base.summary_ms() for label, base in bases.items()},
        "queries_with_10_hits": sum(h == 10 for h in hits),
        "queries_with_no_hits": sum(h == 0 for h in hits),
        "slowest": [{"query": q, "ms": s * 1e3} for s, q in slowest],
    }
    work = f"4. search {kind}, limit 10, {big.messages:,} msgs"
    for pct in (50, 99):
        for label, base in bases.items():
            ms, base_ms = tl.p(pct) * 1e3, base.p(pct) * 1e3
            results.add(Row(work, f"p{pct}", ms, "ms", "lower", label, base_ms))
    for pct in (50, 99):
        results.add(Row(work, f"p{pct} back to back", alone.p(pct) * 1e3, "ms", "lower"))


async def fork_and_compact(big: BigStore, sizes: Sizes, results: Results) -> None:
    """Workload 5: fork the large session; compact ``filler``-message sessions (keep_last=10)."""
    forks, compactions = Latencies(), Latencies()
    summary = (
        "Summary of the conversation so far: " + "the plan, the facts, the open questions. " * 8
    )
    async with Store.open(big.path) as store:
        # Untimed: a store's first write waits for its integrity check (``PRAGMA
        # quick_check`` reads the whole file: about 0.6 s at 200,000 messages).
        await store.rename_session(big.large, "the large session")
        for _ in range(sizes.fork_runs):
            t0 = clock()
            child = await store.fork_session(big.large)
            forks.add(clock() - t0)
            assert child.message_count == sizes.large
        for sid in big.fillers[: sizes.compact_runs]:
            t0 = clock()
            done = await store.compact_session(sid, summary, keep_last=10)
            compactions.add(clock() - t0)
            assert done.replaced == sizes.filler - 10 - Config().compaction.keep_first
    results.details["fork"] = {
        "messages": sizes.large,
        **forks.summary_ms(),
    }
    results.details["compaction"] = {"messages": sizes.filler, **compactions.summary_ms()}
    results.add(
        Row(
            f"5. fork {sizes.large:,} msgs",
            f"median of {sizes.fork_runs}",
            forks.p(50) * 1e3,
            "ms",
            "lower",
        )
    )
    results.add(
        Row(
            f"5. compact {sizes.filler:,} msgs (keep_last=10)",
            f"median of {sizes.compact_runs}",
            compactions.p(50) * 1e3,
            "ms",
            "lower",
        )
    )

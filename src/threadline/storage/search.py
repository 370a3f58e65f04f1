"""Search over every message of the user: ranked by words, or exact.

**Ranked (the default).** The query's words are stemmed the way the word index stems them
(FTS5's ``porter`` tokenizer over ``unicode61``; the index keeps which messages hold a word,
not where: ``detail = 'none'``), English stop words are dropped (unless the
query holds nothing else), and every message holding *any* of the remaining words is a hit.
A message scores the sum of the inverse document frequencies of the query words it holds
(bm25 with k1 = 0: a rare word counts for much, a common one for little, a repeat or a long
message for nothing more). Ranking is over the whole store, within a budget: the words are
taken rarest first while their messages add up to at most ``BUDGET``; the commoner words
left over weigh least and are not scored, and a word that alone exceeds the budget counts
its newest ``BUDGET`` messages. Then the best ``RERANK`` hits are re-ranked with their
conversation: a hit passes a share of its score (``NEIGHBOURS``) to the messages one and two
steps away on its path (parent and children, grandparent and grandchildren) that are hits
themselves, so a reply ranks higher when the question it answers matches too. A hit that
holds the query as typed ranks first, then one that holds every term of it; among equal scores,
more mentions of the words rank higher, then newer messages. Hits past the window follow by
score.

**Exact.** A query with a double-quoted phrase searches literally: every quoted phrase and
every other term must occur, as a case-insensitive substring; when no message holds them
all, the query's words rank as above (so no query with a stored word finds nothing). A
query none of whose words is in the word index (part of a word, CJK text without spaces,
``C#``) is searched literally too. A trigram FTS5 index (``fts_trigram``) finds terms of
three or more characters; the newest ``WINDOW`` matches are ranked by bm25 from their text,
older matches follow newest first; shorter terms are checked on the candidates, and a query
of short terms only scans the messages, newest first. (One known gap: letters that SQLite's
trigram tokenizer does not case-fold, such as Cherokee, are found indexed only in the case
they were written in.)

The store's writer thread indexes in chunks, up to watermarks in ``search_state``: inside the
transaction of a write that adds messages (not a fork) once ``index_batch`` wait, and
whenever writes pause for ``index_delay``. Search also reads the committed messages above
the watermarks, so every acknowledged message is found.

Compaction summaries are candidates too, in both modes: read from ``compactions`` for each
query (they are few beside the messages), tokenized once each, scored with the same word
weights (or, exact, tested for every term), keyed by minus their pk; an exact search lists
them first, a search by time puts each right after the last message it stands for.

User text is never FTS syntax: every word or term is quoted, so quotes, operators, column
filters, ``C++`` or e-mail addresses are searched literally.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from threadline.config import Config
from threadline.storage import engine, validate
from threadline.storage.errors import InvalidInput
from threadline.storage.indexing import newest_pk
from threadline.storage.models import Neighbour, SearchHit, SearchResults
from threadline.storage.rows import session_row
from threadline.storage.words import WORD, Query, Tokenizer, fts_match, parse, quote

log = logging.getLogger(__name__)

Order = Literal["relevance", "newest", "oldest"]

SNIPPET_CHARS = 160
NEIGHBOUR_CHARS = 300
MAX_OFFSET = 10_000
MAX_CONTEXT = 5
TRIGRAM = 3
WINDOW = 200  # exact search: the newest matches ranked by bm25
RERANK = 100  # ranked search: the best hits re-ranked with their neighbours
BUDGET = 25_000  # word postings scored per query
NEIGHBOURS = (0.4, 0.15)  # share of a hit's score given 1 and 2 steps away on its path
DF_SAMPLE = 20_000  # a word's messages counted; beyond, its frequency is extrapolated
COMMON = 1_000  # exact search: a term in this many messages or more weighs as common
K1, B = 1.2, 0.75  # bm25's usual constants, as FTS5 uses them (exact search)

_EDGES = re.compile(r"^\W+|\W+$")  # punctuation around a term ("dog?")

_HIT_COLUMNS = """m.pk, m.session_id, s.title, m.id, m.role, m.created_at,
                  coalesce(m.body, m.content)"""
_TEXT = "coalesce(m.body, m.content)"
_FROM = "FROM messages m JOIN sessions s ON s.id = m.session_id"


@dataclass(frozen=True)
class Scope:
    """The filters, as SQL over ``messages m`` (each clause starts with AND), and the same
    over ``compactions m`` for the summaries (which read as user messages), if any pass."""

    sql: str
    args: tuple[Any, ...]
    summary_sql: str | None = None
    summary_args: tuple[Any, ...] = ()


def scope(
    conn: sqlite3.Connection,
    session_id: str | None,
    role: str | None,
    after: object,
    before: object,
) -> Scope:
    sql, args = "", []
    if session_id is not None:
        session_row(conn, session_id, "1")
        sql += " AND m.session_id = ?"
        args.append(session_id)
    if role is not None and role not in ("system", "user", "assistant", "tool"):
        raise InvalidInput("role", "must be one of system, user, assistant, tool")
    start, end = validate.moment(after, "after"), validate.moment(before, "before")
    if start is not None and end is not None and start >= end:
        raise InvalidInput("before", "must be later than after")
    if start is not None:
        sql += " AND m.created_at >= ?"
        args.append(start)
    if end is not None:
        sql += " AND m.created_at < ?"
        args.append(end)
    # Summaries read as user messages: the same clauses (compactions have these columns).
    summaries = (sql, tuple(args)) if role in (None, "user") else (None, ())
    if role is not None:
        sql += " AND m.role = ?"
        args.append(role)
    return Scope(sql, tuple(args), *summaries)


class Searcher:
    """Search for one store: the query path, and what it keeps between queries (the word
    tokenizer, word frequencies, and the stems of messages not yet in the word index)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._tokens = Tokenizer()
        self._frequency: dict[str, tuple[float, int]] = {}  # word -> (df, watermark then)
        self._tail: dict[int, frozenset[str]] = {}  # pk -> stems, above the word watermark
        self._summary_stems: dict[int, frozenset[str]] = {}  # -compaction pk -> stems
        self._lock = threading.Lock()

    def search(
        self,
        conn: sqlite3.Connection,
        query: str,
        *,
        session_id: str | None = None,
        role: str | None = None,
        after: object = None,
        before: object = None,
        order: Order = "relevance",
        context: int = 0,
        limit: int = 10,
        cursor: str | None = None,
    ) -> SearchResults:
        parsed = parse(query, self.config)
        if order not in ("relevance", "newest", "oldest"):
            raise InvalidInput("order", "must be one of relevance, newest, oldest")
        if type(context) is not int or not 0 <= context <= MAX_CONTEXT:
            raise InvalidInput("context", f"must be a whole number from 0 to {MAX_CONTEXT}")
        where = scope(conn, session_id, role, after, before)
        offset = 0
        if cursor is not None:
            (offset,) = validate.decode_cursor(cursor, "cursor", (int,))
            if not 0 <= offset <= MAX_OFFSET:
                raise InvalidInput("cursor", "is not a cursor returned by the previous page")
        rows: list[Any] = []
        words: list[str] = []
        summaries = _summaries(conn, where)
        if parsed.exact:
            rows = _exact(conn, parsed.terms, where, order, offset, limit + 1, summaries)
        if not rows and parsed.words and not (parsed.exact and offset):
            words, rows = self._ranked(conn, parsed, where, order, offset + limit + 1, summaries)
            rows = rows[offset:]
        if not rows and not parsed.exact:  # no message holds a word: the terms as written
            rows = _exact(conn, parsed.terms, where, order, offset, limit + 1, summaries)
        hits = self._hits(conn, rows[:limit], parsed, words, context, summaries)
        next_offset = offset + limit
        more = len(rows) > limit and next_offset <= MAX_OFFSET
        return SearchResults.model_construct(
            hits=hits, next_cursor=validate.encode_cursor([next_offset]) if more else None
        )

    # -- ranked -------------------------------------------------------------------------

    def _ranked(
        self,
        conn: sqlite3.Connection,
        query: Query,
        where: Scope,
        order: Order,
        want: int,
        summaries: dict[int, Summary],
    ) -> tuple[list[str], list[Any]]:
        """The query's words that count (one per stem), and the hits' rows best first (at
        least ``want`` where there are so many); no rows when no message holds any word."""
        top = newest_pk(conn)
        (watermark,) = conn.execute("SELECT words_pk FROM search_state").fetchone()
        by_stem: dict[str, str] = {}
        for word, found in self._tokens.words(query.words):
            for stem in found:
                by_stem.setdefault(stem, word)
        tail = self._tail_stems(conn, watermark)
        # How many messages hold each stem: in the index, plus in the tail.
        frequency = {
            stem: self._indexed_frequency(conn, word, watermark)
            + sum(stem in stems for stems in tail.values())
            for stem, word in by_stem.items()
        }
        total = max(top, 1)
        weight = {
            stem: max(1e-6, math.log((total - df + 0.5) / (df + 0.5)))
            for stem, df in frequency.items()
        }
        branches: list[str] = []
        args: list[Any] = []
        spent = 0.0
        for stem in sorted(by_stem, key=lambda stem: frequency[stem]):
            df = frequency[stem]
            if df <= 0 or (branches and spent + df > BUDGET):
                continue
            spent += df
            branch = (
                f"SELECT f.rowid AS pk, ? AS w FROM fts_words f "
                f"{'JOIN messages m ON m.pk = f.rowid ' if where.sql else ''}"
                f"WHERE fts_words MATCH ?{where.sql}"
            )
            args += [weight[stem], quote(by_stem[stem]), *where.args]
            if df > BUDGET and not where.sql:  # alone over the budget: its newest messages
                branch = f"SELECT * FROM ({branch} ORDER BY f.rowid DESC LIMIT ?)"
                args.append(BUDGET)
            branches.append(branch)
        scores: dict[int, float] = {}
        if branches:
            sort = {"relevance": "s DESC, pk DESC", "newest": "pk DESC", "oldest": "pk ASC"}
            depth = want + (5 * RERANK if order == "relevance" else 0)
            scores = dict(
                conn.execute(
                    f"SELECT pk, sum(w) AS s FROM ({' UNION ALL '.join(branches)}) "
                    f"GROUP BY pk ORDER BY {sort[order]} LIMIT ?",
                    [*args, depth],
                ).fetchall()
            )
        # Scored here, from their stems: the tail (in scope) and the summaries.
        unindexed = tail
        if tail and where.sql:
            unindexed = {
                pk: tail[pk]
                for (pk,) in conn.execute(
                    f"SELECT m.pk FROM messages m WHERE m.pk > ?{where.sql}",
                    [watermark, *where.args],
                )
                if pk in tail
            }
        stemmed = self._stemmed(
            self._summary_stems, list(summaries), lambda keys: {k: summaries[k].text for k in keys}
        )
        for key, stems in [*unindexed.items(), *stemmed.items()]:
            score = sum(w for stem, w in weight.items() if stem in stems)
            if score:
                scores[key] = score
        words = list(by_stem.values())
        if not scores:
            return words, []
        if order == "relevance":
            pks = self._rerank(conn, scores, query, where, summaries)
        else:
            pks = sorted(scores, key=lambda pk: _when(pk, summaries), reverse=order == "newest")
        return words, self._rows(conn, pks[:want], where, summaries)

    def _stemmed(
        self,
        cache: dict[int, frozenset[str]],
        keys: list[int],
        texts_of: Callable[[list[int]], dict[int, str]],
    ) -> dict[int, frozenset[str]]:
        """The stems of each key's text, from ``cache``; each text is tokenized once (a
        message's or a summary's text never changes under its key)."""
        with self._lock:
            missing = [key for key in keys if key not in cache]
        if missing:
            texts = texts_of(missing)
            found = self._tokens.stems([texts[key] for key in missing])
            with self._lock:
                if len(cache) > 50_000:
                    cache.clear()
                cache.update((key, frozenset(s)) for key, s in zip(missing, found, strict=True))
        with self._lock:
            return {key: cache.get(key, frozenset()) for key in keys}

    def _indexed_frequency(self, conn: sqlite3.Connection, word: str, watermark: int) -> float:
        """How many indexed messages hold the word: counted, or for a common word
        extrapolated from its newest ``DF_SAMPLE``; kept until the index grows."""
        with self._lock:
            known = self._frequency.get(word)
        if known is not None and known[1] == watermark:
            return known[0]
        count, oldest = conn.execute(
            "SELECT count(*), min(rowid) FROM (SELECT rowid FROM fts_words "
            "WHERE fts_words MATCH ? ORDER BY rowid DESC LIMIT ?)",
            (quote(word), DF_SAMPLE),
        ).fetchone()
        df = float(count)
        if count == DF_SAMPLE:
            df = count * watermark / max(1, watermark - oldest + 1)
        with self._lock:
            if len(self._frequency) > 50_000:
                self._frequency.clear()
            self._frequency[word] = (df, watermark)
        return df

    def _tail_stems(self, conn: sqlite3.Connection, watermark: int) -> dict[int, frozenset[str]]:
        """The stems of every message above the word watermark (committed, not indexed yet),
        tokenized once each."""
        pks = [pk for (pk,) in conn.execute("SELECT pk FROM messages WHERE pk > ?", (watermark,))]
        with self._lock:
            for pk in [pk for pk in self._tail if pk <= watermark]:
                del self._tail[pk]
        return self._stemmed(self._tail, pks, lambda missing: _texts(conn, missing))

    def _rerank(
        self,
        conn: sqlite3.Connection,
        scores: dict[int, float],
        query: Query,
        where: Scope,
        summaries: dict[int, Summary],
    ) -> list[int]:
        """Every scored pk, best first: the best ``RERANK`` with their neighbours' share and
        the literal match of the query first, then the rest by score."""
        ranked = sorted(scores, key=lambda pk: (-scores[pk], -pk))
        window = ranked[:RERANK]
        final = {pk: scores[pk] for pk in window}
        parents = _links(conn, window, "pk", "parent_pk")
        children = _links(conn, window, "parent_pk", "pk")
        grandparents = _links(conn, [p for ps in parents.values() for p in ps], "pk", "parent_pk")
        grandchildren = _links(conn, [c for cs in children.values() for c in cs], "parent_pk", "pk")
        near, far = NEIGHBOURS

        def give(to: int, share: float) -> None:
            if to in scores:  # a neighbour raises a hit; it does not make one
                final[to] = final.get(to, scores[to]) + share

        for pk in window:
            share = scores[pk]
            for parent in parents.get(pk, ()):
                give(parent, near * share)
                for grandparent in grandparents.get(parent, ()):
                    give(grandparent, far * share)
            for child in children.get(pk, ()):
                give(child, near * share)
                for grandchild in grandchildren.get(child, ()):
                    give(grandchild, far * share)
        texts = _texts(conn, list(final), where)
        texts.update((key, summaries[key].text) for key in final if key in summaries)
        needles = [t.lower() for t in query.terms]
        typed = " ".join(needles)

        def key(pk: int) -> tuple[int, float, int, int]:
            text = " ".join(texts[pk].lower().split())
            # The query as typed, then every term of it, then the rest.
            literal = 0 if typed in text else 1 if all(n in text for n in needles) else 2
            return (literal, -final[pk], -sum(text.count(w) for w in query.words), -pk)

        best = sorted((pk for pk in final if pk in texts), key=key)
        shown = set(best)
        return best + [pk for pk in ranked[RERANK:] if pk not in shown]

    @staticmethod
    def _rows(
        conn: sqlite3.Connection, pks: list[int], where: Scope, summaries: dict[int, Summary]
    ) -> list[Any]:
        found = {
            row[0]: row
            for row in conn.execute(
                f"SELECT {_HIT_COLUMNS} {_FROM} "
                f"WHERE m.pk IN (SELECT value FROM json_each(?)){where.sql}",
                [json.dumps([pk for pk in pks if pk > 0]), *where.args],
            )
        }
        found.update((key, summaries[key].row) for key in pks if key in summaries)
        return [found[pk] for pk in pks if pk in found]

    # -- hits ---------------------------------------------------------------------------

    def _hits(
        self,
        conn: sqlite3.Connection,
        rows: list[Any],
        query: Query,
        words: list[str],
        context: int,
        summaries: dict[int, Summary],
    ) -> list[SearchHit]:
        marks = self._tokens.marks([row[-1] for row in rows], words) if words else None
        needles = [t.lower() for t in query.terms]
        # Ranked: bold the words that matched and terms that glue words (``run_query``),
        # not a word inside another ("name" in "named"); exact: every occurrence of a term.
        cores = [_EDGES.sub("", n) for n in needles]
        glued = [core for core in cores if core and not WORD.fullmatch(core)]
        hits = []
        for i, row in enumerate(rows):
            pk, session_id, title, message_id, role, created_at, text = row
            spans = marks[i] if marks is not None else []
            summary = summaries.get(pk)
            near = context and summary is None
            before, after = _surroundings(conn, pk, context) if near else ([], [])
            hits.append(
                SearchHit.model_construct(
                    session_id=session_id,
                    session_title=title,
                    message_id=message_id,
                    role=role,
                    snippet=snippet(text, needles if not spans else glued, spans=spans),
                    created_at=created_at,
                    before=before,
                    after=after,
                    summary_of=summary.replaced if summary is not None else None,
                )
            )
        return hits


@dataclass(frozen=True, slots=True)
class Summary:
    """A compaction summary as a search candidate, keyed by minus its pk (messages' pks are
    positive). ``row`` is shaped like a message hit's row."""

    row: tuple[Any, ...]
    replaced: int
    end_pk: int

    @property
    def text(self) -> str:
        return str(self.row[-1])


def _summaries(conn: sqlite3.Connection, where: Scope) -> dict[int, Summary]:
    """Every compaction summary in scope: what is searched besides the messages."""
    if where.summary_sql is None:
        return {}
    rows = conn.execute(
        "SELECT -m.pk, m.session_id, s.title, 'compaction:' || m.pk, 'user', m.created_at, "
        "m.summary, m.replaced, m.end_pk FROM compactions m JOIN sessions s ON s.id = "
        f"m.session_id WHERE 1{where.summary_sql}",
        where.summary_args,
    ).fetchall()
    return {row[0]: Summary(tuple(row[:7]), row[7], row[8]) for row in rows}


def _when(key: int, summaries: dict[int, Summary]) -> tuple[int, int]:
    """Where a hit sorts in time: a message by its pk, a summary right after the last
    message it stands for."""
    return (summaries[key].end_pk, 1) if key in summaries else (key, 0)


def _texts(conn: sqlite3.Connection, pks: list[int], where: Scope | None = None) -> dict[int, str]:
    """The searchable text of each pk (that passes the filters)."""
    sql, args = (where.sql, where.args) if where is not None else ("", ())
    return dict(
        conn.execute(
            f"SELECT m.pk, {_TEXT} FROM messages m "
            f"WHERE m.pk IN (SELECT value FROM json_each(?)){sql}",
            [json.dumps(pks), *args],
        ).fetchall()
    )


def _links(conn: sqlite3.Connection, pks: Iterable[int], by: str, to: str) -> dict[int, list[int]]:
    """For each pk, the pks it links to: its parent (``by="pk", to="parent_pk"``) or its
    children (``by="parent_pk", to="pk"``)."""
    out: dict[int, list[int]] = {}
    keys = list(dict.fromkeys(pks))
    if not keys:
        return out
    for key, value in conn.execute(
        f"SELECT {by}, {to} FROM messages WHERE {by} IN (SELECT value FROM json_each(?)) "
        f"AND {to} IS NOT NULL",
        (json.dumps(keys),),
    ):
        out.setdefault(key, []).append(value)
    return out


def _surroundings(
    conn: sqlite3.Connection, pk: int, count: int
) -> tuple[list[Neighbour], list[Neighbour]]:
    """Up to ``count`` messages before ``pk`` on its path and after it (following the newest
    branch), oldest first."""
    before = conn.execute(
        """WITH RECURSIVE up (pk, n) AS (
            SELECT parent_pk, 1 FROM messages WHERE pk = ?
            UNION ALL SELECT m.parent_pk, up.n + 1 FROM messages m JOIN up ON m.pk = up.pk
            WHERE up.n < ?)
        SELECT m.id, m.role, m.created_at, coalesce(m.body, m.content)
        FROM up JOIN messages m ON m.pk = up.pk ORDER BY up.n DESC""",
        (pk, count),
    ).fetchall()
    after = conn.execute(
        """WITH RECURSIVE down (pk, n) AS (
            SELECT ?, 0
            UNION ALL SELECT (SELECT max(c.pk) FROM messages c WHERE c.parent_pk = down.pk),
                down.n + 1 FROM down WHERE down.n < ? AND down.pk IS NOT NULL)
        SELECT m.id, m.role, m.created_at, coalesce(m.body, m.content)
        FROM down JOIN messages m ON m.pk = down.pk WHERE down.n > 0 ORDER BY down.n""",
        (pk, count),
    ).fetchall()
    return [_neighbour(row) for row in before], [_neighbour(row) for row in after]


def _neighbour(row: Any) -> Neighbour:
    message_id, role, created_at, text = row
    text = " ".join(text.split())
    if len(text) > NEIGHBOUR_CHARS:
        text = text[: NEIGHBOUR_CHARS - 1] + "…"
    return Neighbour.model_construct(
        message_id=message_id, role=role, created_at=created_at, text=text
    )


# -- exact ------------------------------------------------------------------------------


@engine.sql_function("tl_contains", 2)
def _contains(haystack: str | None, needle: str) -> bool:
    """The substring test for non-ASCII terms: ``needle`` is already lower-cased."""
    return haystack is not None and needle in haystack.lower()


def _contains_all(words: list[str]) -> tuple[str, list[str]]:
    """SQL that holds when the lower-cased text holds every lower-cased term.

    ASCII terms use SQLite's ``instr`` (fast, in C); others ``tl_contains`` (Python's full
    Unicode lower-casing, registered below), whose folding SQLite lacks.
    """
    sql, params = "", []
    for word in words:
        needle = word.lower()
        if word.isascii():
            # In C for ASCII text; Python only for text with other letters, some of which
            # lower-case to ASCII (the Kelvin sign to "k").
            sql += (
                f" AND (instr(lower({_TEXT}), ?) OR ({_TEXT} GLOB '*[^' || char(1) || '-' "
                f"|| char(127) || ']*' AND tl_contains({_TEXT}, ?)))"
            )
            params += [needle, needle]
        else:
            sql += f" AND tl_contains({_TEXT}, ?)"
            params.append(needle)
    return sql, params


def _exact(
    conn: sqlite3.Connection,
    words: list[str],
    where: Scope,
    order: Order,
    skip: int,
    want: int,
    summaries: dict[int, Summary],
) -> list[Any]:
    """``want`` rows of messages (and summaries) holding every term, after the first ``skip``.

    By relevance: summaries (newest first), the unindexed tail (newest first), then the
    ranked window of indexed matches, then older matches newest first. By time: newest or
    oldest first.
    """
    needles = [w.lower() for w in words]
    held = [
        summaries[key].row
        for key in sorted(summaries)  # newest first: -pk ascending
        if all(n in summaries[key].text.lower() for n in needles)
    ]
    (indexed,) = conn.execute("SELECT indexed_pk FROM search_state").fetchone()
    # Every hit holds every term by this one test, indexed or not. The index only narrows the
    # candidates: MATCH gets the terms as typed, folded by its tokenizer like the index was.
    all_sql, all_args = _contains_all(words)
    long = [w for w in words if len(w) >= TRIGRAM]
    filters, params = f"{all_sql}{where.sql}", [*all_args, *where.args]
    if order != "relevance":
        direction = "DESC" if order == "newest" else "ASC"
        if long:
            source = "FROM fts_trigram f JOIN messages m ON m.pk = f.rowid "
            source += "JOIN sessions s ON s.id = m.session_id WHERE fts_trigram MATCH ?"
            params = [fts_match(long), *params]
        else:
            source = f"{_FROM} WHERE 1"
        # The unindexed tail is not in the index: read it apart and merge.
        rows = conn.execute(
            f"SELECT {_HIT_COLUMNS} {source}{filters} ORDER BY m.pk {direction} LIMIT ?",
            [*params, skip + want],
        ).fetchall()
        if long:
            rows += conn.execute(
                f"SELECT {_HIT_COLUMNS} {_FROM} WHERE m.pk > ?{filters}",
                [indexed, *all_args, *where.args],
            ).fetchall()
        rows += held
        rows.sort(key=lambda row: _when(row[0], summaries), reverse=order == "newest")
        return rows[skip : skip + want]

    rows = held[skip : skip + want]
    want -= len(rows)
    skip = max(0, skip - len(held))
    if want <= 0:
        return rows
    tail = conn.execute(
        f"SELECT {_HIT_COLUMNS} {_FROM} WHERE m.pk > ?{filters} ORDER BY m.pk DESC",
        [indexed, *params],
    ).fetchall()
    page = tail[skip : skip + want]
    rows += page
    want -= len(page)
    skip = max(0, skip - len(tail))
    if want > 0 and long:
        rows += _indexed(conn, long, filters, params, want, skip)
    elif want > 0:
        rows += conn.execute(
            f"SELECT {_HIT_COLUMNS} {_FROM} "
            f"WHERE m.pk <= ?{filters} ORDER BY m.pk DESC LIMIT ? OFFSET ?",
            [indexed, *params, want, skip],
        ).fetchall()
    return rows


def _indexed(
    conn: sqlite3.Connection, long: list[str], where: str, args: list[Any], want: int, skip: int
) -> list[Any]:
    """``want`` indexed hits after the first ``skip``: the ranked window, then older matches
    newest first. Every page slices that same order."""
    query = (
        f"SELECT {_HIT_COLUMNS} FROM fts_trigram f "
        "JOIN messages m ON m.pk = f.rowid JOIN sessions s ON s.id = m.session_id "
        f"WHERE fts_trigram MATCH ?{where}"
    )
    match = fts_match(long)
    window = conn.execute(
        f"{query} ORDER BY f.rowid DESC LIMIT ?", [match, *args, WINDOW]
    ).fetchall()
    rows = _rank(conn, window, long)[skip : skip + want] if skip < len(window) else []
    if len(window) == WINDOW and skip + want > WINDOW:
        rows += conn.execute(
            f"{query} AND f.rowid < ? ORDER BY f.rowid DESC LIMIT ? OFFSET ?",
            [match, *args, window[-1][0], want - len(rows), max(0, skip - WINDOW)],
        ).fetchall()
    return rows


def _rank(conn: sqlite3.Connection, rows: list[Any], long: list[str]) -> list[Any]:
    """``rows`` best first by bm25 over the terms, newest first among equals.

    A term's weight is its inverse document frequency; every row holds every term, so with
    one term the weight changes no order and is not looked up.
    """
    if len(rows) < 2:
        return rows
    needles = [w.lower() for w in long]
    if len(long) == 1:
        weights = [1.0]
    else:
        total = newest_pk(conn)
        weights = [_rarity(conn, w, total) for w in long]
    average = sum(len(row[-1]) for row in rows) / len(rows)

    def score(row: Any) -> tuple[float, int]:
        text = row[-1].lower()
        norm = K1 * (1 - B + B * len(text) / average)
        total = 0.0
        for needle, weight in zip(needles, weights, strict=True):
            count = text.count(needle)
            total += weight * count * (K1 + 1) / (count + norm)
        return -total, -row[0]

    return sorted(rows, key=score)


def _rarity(conn: sqlite3.Connection, term: str, total: int) -> float:
    """bm25's inverse document frequency of ``term`` among ``total`` messages, counting its
    messages up to ``COMMON``."""
    (found,) = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM fts_trigram WHERE fts_trigram MATCH ? LIMIT ?)",
        (fts_match([term]), COMMON),
    ).fetchone()
    total = max(total, found)
    return max(1e-6, math.log((total - found + 0.5) / (found + 0.5)))


# -- snippets ---------------------------------------------------------------------------


def snippet(
    text: str,
    needles: list[str],
    width: int = SNIPPET_CHARS,
    spans: Sequence[tuple[int, int]] = (),
) -> str:
    """A window of ``text`` around the first match, each match in **bold**: the given
    ``spans`` (matched words) and every occurrence of a term."""
    lower = text.lower()
    if len(lower) != len(text):  # lower-casing changed lengths: positions would drift
        lower = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    positions = [p for p in (lower.find(n) for n in needles) if p >= 0]
    positions += [a for a, _b in spans]
    first = min(positions, default=0)
    start = max(0, first - width // 3)
    end = min(len(text), start + width)
    window, folded = text[start:end], lower[start:end]
    marks: list[tuple[int, int]] = []

    def mark(a: int, b: int) -> None:
        if a < b and not any(x < b and a < y for x, y in marks):
            marks.append((a, b))

    for needle in sorted(needles, key=len, reverse=True):
        i = folded.find(needle)
        while i >= 0 and needle:
            mark(i, i + len(needle))
            i = folded.find(needle, i + len(needle))
    for a, b in spans:
        mark(max(a, start) - start, min(b, end) - start)
    out, last = [], 0
    for a, b in sorted(marks):
        out += [window[last:a], "**", window[a:b], "**"]
        last = b
    out.append(window[last:])
    body = "".join(out).replace("\n", " ")
    return ("…" if start > 0 else "") + body + ("…" if end < len(text) else "")

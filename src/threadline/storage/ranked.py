"""Ranked search: every message holding any of the query's words, scored by the rarity of the
words it holds, the best re-ranked with their conversation (see ``search`` for the rules)."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any

from threadline.storage.indexing import newest_pk
from threadline.storage.scope import FROM, HIT_COLUMNS, TEXT, Order, Scope, Summary, when
from threadline.storage.words import Query, Tokenizer, quote

RERANK = 100  # the best hits re-ranked with their neighbours
BUDGET = 25_000  # word postings scored per query
NEIGHBOURS = (0.4, 0.15)  # share of a hit's score given 1 and 2 steps away on its path
DF_SAMPLE = 20_000  # a word's messages counted; beyond, its frequency is extrapolated


class Ranker:
    """Ranked search for one store, and what it keeps between queries: the word tokenizer,
    word frequencies, and the stems of messages not yet in the word index and of summaries."""

    def __init__(self) -> None:
        self.tokens = Tokenizer()
        self._frequency: dict[str, tuple[float, int]] = {}  # word -> (df, watermark then)
        self._tail: dict[int, frozenset[str]] = {}  # pk -> stems, above the word watermark
        self._summary_stems: dict[int, frozenset[str]] = {}  # -compaction pk -> stems
        self._lock = threading.Lock()

    def rank(
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
        for word, found in self.tokens.words(query.words):
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
            pks = sorted(scores, key=lambda pk: when(pk, summaries), reverse=order == "newest")
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
            found = self.tokens.stems([texts[key] for key in missing])
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
                f"SELECT {HIT_COLUMNS} {FROM} "
                f"WHERE m.pk IN (SELECT value FROM json_each(?)){where.sql}",
                [json.dumps([pk for pk in pks if pk > 0]), *where.args],
            )
        }
        found.update((key, summaries[key].row) for key in pks if key in summaries)
        return [found[pk] for pk in pks if pk in found]


def _texts(conn: sqlite3.Connection, pks: list[int], where: Scope | None = None) -> dict[int, str]:
    """The searchable text of each pk (that passes the filters)."""
    sql, args = (where.sql, where.args) if where is not None else ("", ())
    return dict(
        conn.execute(
            f"SELECT m.pk, {TEXT} FROM messages m "
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

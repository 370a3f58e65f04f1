"""Search over every message of the user: ranked by words (``ranked``), or exact (``exact``).

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

import re
import sqlite3
from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import InvalidInput
from threadline.storage.exact import exact
from threadline.storage.models import SearchHit, SearchResults
from threadline.storage.ranked import Ranker
from threadline.storage.scope import Order, Summary, scope, summaries_of
from threadline.storage.snippets import snippet, surroundings
from threadline.storage.words import WORD, Query, parse

MAX_OFFSET = 10_000
MAX_CONTEXT = 5

_EDGES = re.compile(r"^\W+|\W+$")  # punctuation around a term ("dog?")


class Searcher:
    """Search for one store: the query path, ranked or exact, and the hits it shows."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._ranker = Ranker()

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
        found = summaries_of(conn, where)
        if parsed.exact:
            rows = exact(conn, parsed.terms, where, order, offset, limit + 1, found)
        if not rows and parsed.words and not (parsed.exact and offset):
            words, rows = self._ranker.rank(conn, parsed, where, order, offset + limit + 1, found)
            rows = rows[offset:]
        if not rows and not parsed.exact:  # no message holds a word: the terms as written
            rows = exact(conn, parsed.terms, where, order, offset, limit + 1, found)
        hits = self._hits(conn, rows[:limit], parsed, words, context, found)
        next_offset = offset + limit
        more = len(rows) > limit and next_offset <= MAX_OFFSET
        return SearchResults.model_construct(
            hits=hits, next_cursor=validate.encode_cursor([next_offset]) if more else None
        )

    def _hits(
        self,
        conn: sqlite3.Connection,
        rows: list[Any],
        query: Query,
        words: list[str],
        context: int,
        summaries: dict[int, Summary],
    ) -> list[SearchHit]:
        marks = self._ranker.tokens.marks([row[-1] for row in rows], words) if words else None
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
            before, after = surroundings(conn, pk, context) if near else ([], [])
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

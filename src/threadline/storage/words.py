"""The words of a query as the word index sees them: parsing a query into terms and words,
stop words, the index's own tokenizer (stems, splits, highlight spans), and FTS5 quoting so
user text is never FTS syntax."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import InvalidInput

WORD_TOKENIZER = "porter unicode61 remove_diacritics 2"


# English stop words: glue that says nothing about what a message is about.
_STOP = """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves s t d ll m re ve don doesn didn isn wasn aren weren hasn haven hadn won"""


STOP_WORDS = frozenset(_STOP.split())


WORD = re.compile(r"[^\W_]+")


_PHRASE = re.compile(r'"([^"]*)"')


@dataclass(frozen=True)
class Query:
    terms: list[str]  # whitespace-separated terms (quoted phrases whole), as typed
    words: list[str]  # the words to rank by, lower-cased
    exact: bool  # a quoted phrase asks for literal matching first


def parse(query: object, config: Config) -> Query:
    """The query's terms and words; the query is refused when empty or too long."""
    limits = config.limits
    text = validate.text(query, "query", limits.max_query_chars, allow_empty=False)
    if "\x00" in text:
        raise InvalidInput("query", "must not contain NUL characters")
    phrases = [p for p in _PHRASE.findall(text) if p.strip()]
    loose = _PHRASE.sub(" ", text) if phrases else text
    terms = list(dict.fromkeys([*phrases, *loose.split()]))
    if len(terms) > limits.max_query_terms:
        limit = limits.max_query_terms
        raise InvalidInput("query", f"has {len(terms)} terms; the limit is {limit}")
    words = list(dict.fromkeys(WORD.findall(text.lower())))
    meaningful = [w for w in words if w not in STOP_WORDS]
    return Query(terms, meaningful or words, bool(phrases))


def quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def fts_match(words: Sequence[str]) -> str:
    """FTS5 syntax for "every term, each as literal text"."""
    return " ".join(quote(w) for w in words)


class Tokenizer:
    """The word index's own tokenizer, run on a private in-memory database, so that the
    query, the unindexed tail and the snippets split and stem words exactly as the index."""

    OPEN, CLOSE = "\ue000", "\ue001"

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.execute(
            f"CREATE VIRTUAL TABLE t USING fts5 (body, tokenize = '{WORD_TOKENIZER}')"
        )
        self._conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab (t, 'instance')")
        self._lock = threading.Lock()

    def _load(self, texts: Sequence[str]) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        conn.execute("DELETE FROM t")
        conn.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)", enumerate(texts))
        conn.execute("COMMIT")

    def stems(self, texts: Sequence[str]) -> list[set[str]]:
        """The stems of each text's words."""
        out: list[set[str]] = [set() for _ in texts]
        with self._lock:
            self._load(texts)
            for doc, term in self._conn.execute("SELECT doc, term FROM v"):
                out[doc].add(term)
        return out

    def words(self, words: Sequence[str]) -> list[tuple[str, set[str]]]:
        """Each word with its stem, split where the tokenizer splits it (a few letters that
        SQLite's Unicode tables do not know are separators to it): the word index keeps no
        positions, so every word it is asked for must be one token."""
        out = []
        for word, stems in zip(words, self.stems(words), strict=True):
            if len(stems) <= 1:
                out.append((word, stems))
                continue
            kept = self.stems(list(word))
            parts = "".join(c if s else " " for c, s in zip(word, kept, strict=True)).split()
            out.extend(zip(parts, self.stems(parts), strict=True))
        return out

    def marks(self, texts: Sequence[str], words: Sequence[str]) -> list[list[tuple[int, int]]]:
        """For each text, the spans of its words that stem like one of ``words``."""
        out: list[list[tuple[int, int]]] = [[] for _ in texts]
        if not words:
            return out
        match = " OR ".join(quote(w) for w in words)
        with self._lock:
            self._load(texts)
            rows = self._conn.execute(
                "SELECT rowid, highlight(t, 0, ?, ?) FROM t WHERE t MATCH ?",
                (self.OPEN, self.CLOSE, match),
            ).fetchall()
        for doc, marked in rows:
            if self.OPEN in texts[doc] or self.CLOSE in texts[doc]:
                continue  # the text holds our markers: bold nothing rather than the wrong thing
            spans, position = [], 0
            for piece in re.split(f"([{self.OPEN}{self.CLOSE}])", marked):
                if piece == self.OPEN:
                    start = position
                elif piece == self.CLOSE:
                    spans.append((start, position))
                else:
                    position += len(piece)
            out[doc] = spans
        return out

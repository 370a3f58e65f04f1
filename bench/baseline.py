"""Raw sqlite3 baselines: the floor threadline is measured against, in the same run.

The raw loops write the same rows threadline writes into a table shaped like threadline's
``messages`` table (same columns, primary key, unique key and index), on a connection set up
the way threadline's is (WAL, ``synchronous=NORMAL``, autocommit mode with explicit
transactions). With ``index=True`` each row is also added to the two external-content FTS5
tables threadline keeps (trigram and stemmed words) in the same transaction: the
search-index work threadline does (threadline defers it
and does it in batches). Rows are prepared before timing starts, so the loops measure
SQLite's work alone. What the raw loops leave out: the ``sessions`` row threadline updates on
every append (head pointer, counts, token estimate), its foreign-key check, validation, ids
and clocks, and the hop to a worker thread. They are a floor, not a peer.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Latencies, Run
from threadline.storage import schema

# threadline's own statements, so the raw table cannot drift from the real one; the raw loops
# keep no sessions table, so the messages table refers to none.
_SESSION_KEY = " REFERENCES sessions (id) ON DELETE CASCADE"
_MESSAGES = schema.statement("CREATE TABLE messages")
assert _SESSION_KEY in _MESSAGES
RAW_SCHEMA = (
    _MESSAGES.replace(_SESSION_KEY, ""),
    schema.statement("CREATE INDEX messages_children"),
)
RAW_FTS = (
    schema.statement("CREATE VIEW message_text"),
    schema.statement("CREATE VIRTUAL TABLE fts_trigram"),
    schema.statement("CREATE VIRTUAL TABLE fts_words"),
    "INSERT INTO fts_trigram (fts_trigram, rank) VALUES ('automerge', 8)",
    "INSERT INTO fts_words (fts_words, rank) VALUES ('automerge', 8)",
)

_INSERT = """INSERT INTO messages (session_id, id, parent_pk, depth, path_tokens, role, content,
    is_json, body, name, metadata, tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL,
    NULL, NULL, ?, ?)"""
_INDEX = (
    "INSERT INTO fts_trigram (rowid, body) VALUES (?, ?)",
    "INSERT INTO fts_words (rowid, body) VALUES (?, ?)",
)

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as the raw loops insert it (what threadline would have computed)."""

    session_id: str
    id: str
    role: str
    content: str
    tokens: int
    created_at: str


def raw_messages(
    sessions: Sequence[str], texts: Sequence[Sequence[str]], seed: int
) -> list[RawMessage]:
    """Rows for ``texts[s][i]`` of session ``sessions[s]``, round-robin over the sessions.

    Round-robin is the order concurrent appends reach the database in, so the table ends up
    shaped the same (a session's messages interleaved with the others').
    """
    rng = random.Random(seed)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    out: list[RawMessage] = []
    longest = max((len(t) for t in texts), default=0)
    for i in range(longest):
        for sid, session_texts in zip(sessions, texts, strict=True):
            if i < len(session_texts):
                text = session_texts[i]
                out.append(
                    RawMessage(
                        session_id=sid,
                        id="".join(rng.choices(_ID_CHARS, k=16)),
                        role="user" if i % 2 == 0 else "assistant",
                        content=text,
                        tokens=max((len(text.encode()) + 3) // 4, len(text.split())),
                        created_at=stamp,
                    )
                )
    return out


def connect(path: Path) -> sqlite3.Connection:
    """A writer connection set up like threadline's (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create(path: Path, *, index: bool) -> sqlite3.Connection:
    conn = connect(path)
    conn.execute("BEGIN")
    for statement in RAW_SCHEMA:
        conn.execute(statement)
    for statement in RAW_FTS if index else ():
        conn.execute(statement)
    conn.execute("COMMIT")
    return conn


class _Chains:
    """Each session's last pk, depth and path tokens, so rows chain like threadline's."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int | None, int, int]] = {}

    def params(self, m: RawMessage) -> tuple[object, ...]:
        parent, depth, path = self.last.get(m.session_id, (None, 0, 0))
        return (
            m.session_id,
            m.id,
            parent,
            depth + 1,
            path + m.tokens,
            m.role,
            m.content,
            m.tokens,
            m.created_at,
        )

    def done(self, m: RawMessage, pk: int) -> None:
        _, depth, path = self.last.get(m.session_id, (None, 0, 0))
        self.last[m.session_id] = (pk, depth + 1, path + m.tokens)


def append_loop(path: Path, rows: Sequence[RawMessage], *, index: bool, batch: int = 1) -> Run:
    """Insert ``rows`` in transactions of ``batch`` rows, one commit each; time every commit.

    ``latencies`` holds one sample per transaction (per message when ``batch`` is 1).
    """
    conn = create(path, index=index)
    chains = _Chains()
    latencies = Latencies()
    clock = time.perf_counter
    try:
        start = clock()
        for first in range(0, len(rows), batch):
            t0 = clock()
            conn.execute("BEGIN")
            for m in rows[first : first + batch]:
                pk = conn.execute(_INSERT, chains.params(m)).lastrowid
                assert pk is not None
                if index:
                    for sql in _INDEX:
                        conn.execute(sql, (pk, m.content))
                chains.done(m, pk)
            conn.execute("COMMIT")
            latencies.add(clock() - t0)
        seconds = clock() - start
    finally:
        conn.close()
    return Run(seconds=seconds, count=len(rows), latencies=latencies)


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to a store's file, for the raw read baselines."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

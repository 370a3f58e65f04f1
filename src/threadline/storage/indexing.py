"""Indexing for search: the two FTS5 indexes (trigram and words) filled up to watermarks in
``search_state``, in chunks the store's writer runs, and the resumable backfill of the word
index for stores that had none."""

from __future__ import annotations

import logging
import sqlite3

log = logging.getLogger(__name__)

BACKFILL_CHUNK = 20_000


def newest_pk(conn: sqlite3.Connection) -> int:
    """The pk of the newest message ever stored (0 for none): it grows with every insert."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    return int(row[0]) if row else 0


def index_pending(conn: sqlite3.Connection, at_least: int = 1, at_most: int | None = None) -> int:
    """Index messages above the watermarks, oldest first, if ``at_least`` of them wait; at
    most ``at_most`` (all if None). Returns how many it indexed."""
    indexed, words = conn.execute("SELECT indexed_pk, words_pk FROM search_state").fetchone()
    top = newest_pk(conn)
    if top - indexed < at_least:
        return 0
    if at_most is not None:
        top = min(top, indexed + at_most)
    index_range(conn, "fts_trigram", indexed, top)
    index_range(conn, "fts_words", words, top)
    conn.execute("UPDATE search_state SET indexed_pk = ?, words_pk = ?", (top, top))
    return int(top - indexed)


def index_range(conn: sqlite3.Connection, table: str, since: int, top: int) -> None:
    """Add the messages with ``since < pk <= top`` to one index."""
    conn.execute(
        f"INSERT INTO {table} (rowid, body) "
        "SELECT pk, coalesce(body, content) FROM messages WHERE pk > ? AND pk <= ?",
        (since, top),
    )


def backfill_words(conn: sqlite3.Connection, chunk: int = BACKFILL_CHUNK) -> None:
    """Build the word index for messages a store held before it had one (schema 2).

    Each chunk commits on its own, so a process killed midway resumes where it stopped, and
    processes opening the store together share the work. Progress goes to the log.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            indexed, words = conn.execute(
                "SELECT indexed_pk, words_pk FROM search_state"
            ).fetchone()
            if words >= indexed:
                conn.execute("COMMIT")
                return
            top = min(indexed, words + chunk)
            index_range(conn, "fts_words", words, top)
            conn.execute("UPDATE search_state SET words_pk = ?", (top,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        log.info("word index for search: messages up to #%d of #%d indexed", top, indexed)

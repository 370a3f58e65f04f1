"""Small helpers shared by tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def integrity(path: Path) -> tuple[str, str]:
    """(``PRAGMA integrity_check``, FTS5 integrity check) on a fresh connection.

    The FTS check runs with rank 1, so it also compares the index with the messages: an entry
    left by a deleted message, or a message never indexed, fails it. Close the store first
    (closing indexes what waits).
    """
    conn = sqlite3.connect(path)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.execute("INSERT INTO fts_trigram (fts_trigram, rank) VALUES ('integrity-check', 1)")
        return check, "ok"
    finally:
        conn.close()


def dump(path: Path) -> list[tuple[object, ...]]:
    """Every row of the user tables, for before/after comparisons."""
    conn = sqlite3.connect(path)
    try:
        rows: list[tuple[object, ...]] = []
        for table in ("sessions", "messages", "compactions", "context_blocks", "usage"):
            rows += [(table, *r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
        return rows
    finally:
        conn.close()


def lock_is_free(path: Path) -> bool:
    """True when a fresh connection takes the write lock at once: no transaction is left open."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()

"""Exact search: every quoted phrase and every other term occurs, as a case-insensitive
substring. The trigram index narrows the candidates of terms of three or more characters; the
newest ``WINDOW`` matches are ranked by bm25 from their text, older ones follow newest first
(see ``search`` for the whole picture)."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from threadline.storage import connection
from threadline.storage.indexing import newest_pk
from threadline.storage.scope import FROM, HIT_COLUMNS, TEXT, Order, Scope, Summary, when
from threadline.storage.words import fts_match

TRIGRAM = 3
WINDOW = 200  # the newest matches ranked by bm25
COMMON = 1_000  # a term in this many messages or more weighs as common
K1, B = 1.2, 0.75  # bm25's usual constants, as FTS5 uses them


@connection.sql_function("tl_contains", 2)
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
                f" AND (instr(lower({TEXT}), ?) OR ({TEXT} GLOB '*[^' || char(1) || '-' "
                f"|| char(127) || ']*' AND tl_contains({TEXT}, ?)))"
            )
            params += [needle, needle]
        else:
            sql += f" AND tl_contains({TEXT}, ?)"
            params.append(needle)
    return sql, params


def exact(
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
            source = f"{FROM} WHERE 1"
        # The unindexed tail is not in the index: read it apart and merge.
        rows = conn.execute(
            f"SELECT {HIT_COLUMNS} {source}{filters} ORDER BY m.pk {direction} LIMIT ?",
            [*params, skip + want],
        ).fetchall()
        if long:
            rows += conn.execute(
                f"SELECT {HIT_COLUMNS} {FROM} WHERE m.pk > ?{filters}",
                [indexed, *all_args, *where.args],
            ).fetchall()
        rows += held
        rows.sort(key=lambda row: when(row[0], summaries), reverse=order == "newest")
        return rows[skip : skip + want]

    rows = held[skip : skip + want]
    want -= len(rows)
    skip = max(0, skip - len(held))
    if want <= 0:
        return rows
    tail = conn.execute(
        f"SELECT {HIT_COLUMNS} {FROM} WHERE m.pk > ?{filters} ORDER BY m.pk DESC",
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
            f"SELECT {HIT_COLUMNS} {FROM} "
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
        f"SELECT {HIT_COLUMNS} FROM fts_trigram f "
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

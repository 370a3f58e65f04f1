"""Reading history: the path from a message up to the root, compactions applied.

A message row knows its parent (``parent_pk``), its ``depth`` on its path (the root is 1) and
``path_tokens``, the token estimate of the whole path from the root down to it. Messages never
change once written, so those stay true, and the token estimate of any path is one lookup.
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

from threadline.storage import validate
from threadline.storage.errors import InvalidInput, MessageNotFound, SessionNotFound
from threadline.storage.models import History, HistoryDelta
from threadline.storage.rows import Compaction, compactions, message_pk, session_row
from threadline.storage.walking import Entry, Walk, applied, check_page, page
from threadline.text import estimate_tokens

_CHAIN = """
WITH RECURSIVE chain (n, pk, id, parent_pk, role, content, is_json, name, metadata, created_at,
                      tokens) AS (
    SELECT 0, pk, id, parent_pk, role, content, is_json, name, metadata, created_at, tokens
    FROM messages WHERE pk = ?
    UNION ALL
    SELECT n + 1, m.pk, m.id, m.parent_pk, m.role, m.content, m.is_json, m.name, m.metadata,
           m.created_at, m.tokens
    FROM chain JOIN messages m ON m.pk = chain.parent_pk
    WHERE n + 1 < ?
)
SELECT pk, id, parent_pk, (SELECT p.id FROM messages p WHERE p.pk = chain.parent_pk),
       role, content, is_json, name, metadata, created_at, tokens
FROM chain ORDER BY n
"""

# The ancestor of a message (the first parameter) at a depth (the other two).
_ANCESTOR = """
WITH RECURSIVE up (pk, parent_pk, depth) AS (
    SELECT pk, parent_pk, depth FROM messages WHERE pk = ?
    UNION ALL
    SELECT m.pk, m.parent_pk, m.depth FROM up JOIN messages m ON m.pk = up.parent_pk
    WHERE up.depth > ?
)
SELECT pk FROM up WHERE depth = ?
"""

_PATH_PKS = """
WITH RECURSIVE chain (pk) AS (
    VALUES (?)
    UNION ALL
    SELECT m.parent_pk FROM chain JOIN messages m ON m.pk = chain.pk WHERE m.parent_pk IS NOT NULL
)
SELECT pk FROM chain
"""


def walk(
    conn: sqlite3.Connection,
    start_pk: int | None,
    comps: list[Compaction],
    *,
    want: int | None = None,
    include_compacted: bool = False,
    inside: int | None = None,
    linear: str | None = None,
) -> list[Entry]:
    """The path from ``start_pk`` up towards the root, newest first, compactions applied.

    Walks only as far as ``want`` entries, so the last page of a long session costs a page,
    not the session; builds no models (``Entry.message`` does, for what is returned).
    ``linear`` names the session when the caller knows it has no branch (``is_linear``): a
    whole path is then read as the session's rows, without walking it parent by parent.
    """
    steps = Walk(comps, want=want, include_compacted=include_compacted, inside=inside)
    flat = None
    if linear is not None and want is None and start_pk is not None:
        flat = _linear_rows(conn, linear, start_pk)
    pk = start_pk
    while pk is not None and (budget := steps.budget()) > 0:
        if flat is not None:
            rows = flat[0][flat[1][pk] :]
        else:
            rows = conn.execute(_CHAIN, (pk, budget)).fetchall()
        pk = steps.take(rows)
    return steps.entries


# A session with no branch: its head's path holds every one of its messages (a path holds one
# message per depth, and depths count from 1).
IS_LINEAR = "message_count = (SELECT depth FROM messages WHERE pk = head_pk)"

_SESSION_ROWS = """SELECT pk, id, parent_pk, role, content, is_json, name, metadata,
       created_at, tokens
FROM messages WHERE session_id = ? AND pk <= ?"""


def _linear_rows(
    conn: sqlite3.Connection, session_id: str, start_pk: int
) -> tuple[list[tuple[Any, ...]], dict[int, int]] | None:
    """The path up from ``start_pk`` of a session with no branch, in ``_CHAIN``'s columns
    (newest first), and where each pk is in it; None if the rows do not make one chain (then
    the caller walks it)."""
    stored = conn.execute(_SESSION_ROWS, (session_id, start_pk)).fetchall()
    stored.sort(key=lambda row: row[0], reverse=True)
    if not stored or stored[0][0] != start_pk or stored[-1][2] is not None:
        return None
    rows: list[tuple[Any, ...]] = []
    for newer, older in itertools.pairwise(stored):
        if newer[2] != older[0]:
            return None
        rows.append((*newer[:3], older[1], *newer[3:]))
    rows.append((*stored[-1][:3], None, *stored[-1][3:]))
    return rows, {row[0]: i for i, row in enumerate(rows)}


def effective_tokens(conn: sqlite3.Connection, session_id: str, head_pk: int | None) -> int:
    """The token estimate of the path to ``head_pk`` as history reads it (summaries applied)."""
    if head_pk is None:
        return 0
    total: int = conn.execute(
        "SELECT path_tokens FROM messages WHERE pk = ?", (head_pk,)
    ).fetchone()[0]
    comps = compactions(conn, session_id)
    if not comps:
        return total
    for c in applied_compactions(conn, head_pk, comps):
        total += estimate_tokens(c.summary) - c.replaced_tokens
    return total


def applied_compactions(
    conn: sqlite3.Connection, leaf_pk: int, comps: list[Compaction]
) -> list[Compaction]:
    """The compactions history applies on the path to ``leaf_pk``, as ``walk`` meets them:
    from the leaf up, the newest of those ending on a message, skipping any that ends inside
    a range already applied."""
    return applied({row[0] for row in conn.execute(_PATH_PKS, (leaf_pk,))}, comps)


def history(
    conn: sqlite3.Connection,
    session_id: str,
    *,
    leaf_id: str | None = None,
    limit: int | None = None,
    before: str | None = None,
    include_compacted: bool = False,
    truncate_tool_output: int | None = None,
) -> History:
    """The path to the head (or ``leaf_id``) as ``Store.get_history`` documents it."""
    check_page(limit, truncate_tool_output)
    head_pk, linear = session_row(conn, session_id, f"head_pk, {IS_LINEAR}")
    leaf_pk = head_pk if leaf_id is None else message_pk(conn, session_id, leaf_id, "leaf_id")
    comps = compactions(conn, session_id)
    start = leaf_pk
    inside = None
    if before is not None:
        start = _before(conn, session_id, before, comps, leaf_pk)
        if include_compacted and start is not None and leaf_pk is not None and comps:
            inside = _range_around(conn, start, applied_compactions(conn, leaf_pk, comps))
    want = None if limit is None else limit + 1
    entries = walk(
        conn,
        start,
        comps,
        want=want,
        include_compacted=include_compacted,
        inside=inside,
        linear=session_id if linear else None,
    )
    leaf = None
    if leaf_pk is not None:
        leaf = conn.execute("SELECT id FROM messages WHERE pk = ?", (leaf_pk,)).fetchone()[0]
    return page(session_id, leaf, entries, limit, truncate_tool_output, before is not None)


# What history reads of a session depends on: its head and its compactions. Message and
# compaction rows never change once written, and their keys are never reused, so the same
# revision (head, newest compaction, number of compactions) means the same history. With it:
# whether the message a caller's revision names as head is still stored.
_STATE = f"""SELECT head_pk, {IS_LINEAR},
    (SELECT max(pk) FROM compactions c WHERE c.session_id = sessions.id),
    (SELECT count(*) FROM compactions c WHERE c.session_id = sessions.id),
    EXISTS (SELECT 1 FROM messages m WHERE m.pk = ?)
FROM sessions WHERE id = ?"""


def since(conn: sqlite3.Connection, session_id: str, known: str | None) -> HistoryDelta:
    """The history (as ``history`` reads it, whole) as it differs from the one read at
    revision ``known``: the messages that follow it, or all of them with ``reset``. A read
    that finds nothing new runs one small query."""
    validate.session_id(session_id)
    old, _, compacted = (known or "").partition(".")
    stop = int(old) if old.isdigit() and len(old) <= 18 else -1
    row = conn.execute(_STATE, (stop, session_id)).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    head_pk, linear, newest, count, stored = row
    current = f"{head_pk or 0}.{newest or 0}.{count}"
    added: list[Entry] | None = []
    comps: list[Compaction] = []
    if known != current:
        comps = compactions(conn, session_id) if count else []
        added = None
        # It only grew if its compactions are the same and its old head is on the new path.
        if head_pk is not None and compacted == current.partition(".")[2]:
            if stop == 0:  # it was empty: all of it follows
                added = walk(conn, head_pk, comps)
            elif stored:
                added = _down_to(conn, head_pk, comps, stop)
    reset = added is None
    if added is None:
        added = walk(conn, head_pk, comps, linear=session_id if linear else None)
    return HistoryDelta.of(
        {
            "session_id": session_id,
            "revision": current,
            "messages": [entry.message() for entry in reversed(added)],
            "reset": reset,
        }
    )


def _down_to(
    conn: sqlite3.Connection, head_pk: int, comps: list[Compaction], stop: int
) -> list[Entry] | None:
    """The entries from the head up to ``stop`` (newest first), or None when the path as
    read does not pass through it (another branch, or inside a range compacted since)."""
    steps = Walk(comps, stop=stop)
    pk: int | None = head_pk
    chunk = 4  # a turn or two since the last read, usually; then four times more each time
    while pk is not None:
        pk = steps.take(conn.execute(_CHAIN, (pk, chunk)).fetchall())
        chunk *= 4
    return steps.entries if steps.reached else None


def _range_around(conn: sqlite3.Connection, pk: int, applied: list[Compaction]) -> int | None:
    """The start of the applied compaction whose range holds ``pk``, if any."""
    (depth,) = conn.execute("SELECT depth FROM messages WHERE pk = ?", (pk,)).fetchone()
    for c in applied:
        if c.start_depth <= depth <= c.end_depth:
            return c.start_pk
    return None


def _before(
    conn: sqlite3.Connection,
    session_id: str,
    before: str,
    comps: list[Compaction],
    leaf_pk: int | None,
) -> int | None:
    """Where a page that ends before ``before`` starts; ``before`` must be on the path read
    (a cursor of another branch would read that branch under this leaf)."""
    validate.message_id(before, "before")
    off_path = InvalidInput(
        "before", f"{before!r} is not on the branch being read; use that branch's next_before"
    )
    number = validate.summary_pk(before)
    if number is not None:
        for c in comps:
            if c.pk == number:
                if leaf_pk is None or c not in applied_compactions(conn, leaf_pk, comps):
                    raise off_path
                return c.start_parent_pk
        raise MessageNotFound(session_id, before, "before")
    pk = message_pk(conn, session_id, before, "before")
    if leaf_pk is None or not _on_path(conn, session_id, pk, leaf_pk):
        raise off_path
    parent: int | None = conn.execute(
        "SELECT parent_pk FROM messages WHERE pk = ?", (pk,)
    ).fetchone()[0]
    return parent


def _on_path(conn: sqlite3.Connection, session_id: str, pk: int, leaf_pk: int) -> bool:
    """Whether message ``pk`` is ``leaf_pk`` or one of its ancestors: at once for a session
    of one branch read at its head (the common case), else by walking up to its depth."""
    depth, leaf_depth, head_pk, count = conn.execute(
        "SELECT (SELECT depth FROM messages WHERE pk = ?), (SELECT depth FROM messages "
        "WHERE pk = ?), head_pk, message_count FROM sessions WHERE id = ?",
        (pk, leaf_pk, session_id),
    ).fetchone()
    if depth > leaf_depth:
        return False
    if leaf_pk == head_pk and leaf_depth == count:
        return True  # every message of the session is on the head's path
    (found,) = conn.execute(_ANCESTOR, (leaf_pk, depth, depth)).fetchone()
    return bool(found == pk)

"""Reading history on PostgreSQL: the path from a message up to the root, compactions applied.

``storage/reading.py``'s rules over this backend's rows, with its ``Entry`` (a stored message
or a summary) and ``rows.Compaction``: a walk reads a path in chunks and steps over every
applied compaction to the message before its range, so a page of a long session costs a page.
"""

from __future__ import annotations

from typing import Any

from threadline.storage import validate
from threadline.storage.errors import InvalidInput, MessageNotFound, SessionNotFound
from threadline.storage.models import History, HistoryDelta
from threadline.storage.postgres.rows import Tx, message_id, message_pk, session_row
from threadline.storage.rows import Compaction
from threadline.storage.walking import Entry, Walk, applied, check_page, page
from threadline.text import estimate_tokens

# A path from a message (``$2``) up towards the root, at most ``$3`` messages, newest first, in
# the columns of ``Entry.row``: pk, id, parent_pk, parent id, role, content, is_json, name,
# metadata, created_at, tokens.
# The walk carries every column, so each step is one lookup by key and nothing is joined
# back over the user's messages afterwards.
CHAIN = """
WITH RECURSIVE chain (n, pk, id, parent_pk, role, content, is_json, name, metadata, created_at,
                      tokens) AS (
    SELECT 0::bigint, pk, id, parent_pk, role, content, is_json, name, metadata, created_at,
           tokens
    FROM messages WHERE user_id = $1 AND pk = $2
    UNION ALL
    SELECT c.n + 1, m.pk, m.id, m.parent_pk, m.role, m.content, m.is_json, m.name, m.metadata,
           m.created_at, m.tokens
    FROM chain c JOIN messages m ON m.user_id = $1 AND m.pk = c.parent_pk
    WHERE c.n + 1 < $3::bigint
)
SELECT pk, id, parent_pk,
       (SELECT p.id FROM messages p WHERE p.user_id = $1 AND p.pk = chain.parent_pk),
       role, content, is_json, name, metadata, created_at, tokens
FROM chain ORDER BY n
"""

_PATH_PKS = """
WITH RECURSIVE chain (pk, parent_pk) AS (
    SELECT pk, parent_pk FROM messages WHERE user_id = $1 AND pk = $2
    UNION ALL
    SELECT m.pk, m.parent_pk FROM chain JOIN messages m ON m.user_id = $1 AND m.pk = chain.parent_pk
)
SELECT pk FROM chain
"""


async def chain(tx: Tx, pk: int, want: int) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await tx.fetch(CHAIN, pk, want)]


async def compactions(tx: Tx, session_id: str) -> list[Compaction]:
    """The session's compactions, newest first."""
    rows = await tx.fetch(
        """SELECT c.pk, c.start_pk, c.end_pk, s.parent_pk,
                  (SELECT p.id FROM messages p WHERE p.user_id = $1 AND p.pk = s.parent_pk),
                  s.depth, e.depth, e.path_tokens - s.path_tokens + s.tokens,
                  c.summary, c.replaced, c.created_at
           FROM compactions c
           JOIN messages s ON s.user_id = $1 AND s.pk = c.start_pk
           JOIN messages e ON e.user_id = $1 AND e.pk = c.end_pk
           WHERE c.user_id = $1 AND c.session_id = $2 ORDER BY c.pk DESC""",
        session_id,
    )
    return [Compaction(*row) for row in rows]


async def walk(
    tx: Tx,
    start_pk: int | None,
    comps: list[Compaction],
    *,
    want: int | None = None,
    include_compacted: bool = False,
    inside: int | None = None,
) -> list[Entry]:
    """The path from ``start_pk`` up towards the root, newest first, compactions applied
    (``walking.Walk``: the rules of every backend)."""
    steps = Walk(comps, want=want, include_compacted=include_compacted, inside=inside)
    pk = start_pk
    while pk is not None and (budget := steps.budget()) > 0:
        pk = steps.take(await chain(tx, pk, budget))
    return steps.entries


async def applied_compactions(tx: Tx, leaf_pk: int, comps: list[Compaction]) -> list[Compaction]:
    """The compactions history applies on the path to ``leaf_pk``."""
    on_path = {row["pk"] for row in await tx.fetch(_PATH_PKS, leaf_pk)}
    return applied(on_path, comps)


async def effective_tokens(tx: Tx, session_id: str, head_pk: int | None) -> int:
    """The token estimate of the path to ``head_pk`` as history reads it (summaries applied)."""
    if head_pk is None:
        return 0
    total: int = await tx.fetchval(
        "SELECT path_tokens FROM messages WHERE user_id = $1 AND pk = $2", head_pk
    )
    comps = await compactions(tx, session_id)
    for c in await applied_compactions(tx, head_pk, comps) if comps else []:
        total += estimate_tokens(c.summary) - c.replaced_tokens
    return total


async def history(
    tx: Tx,
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
    head_pk = (await session_row(tx, session_id, "s.head_pk"))["head_pk"]
    leaf_pk = head_pk if leaf_id is None else await message_pk(tx, session_id, leaf_id, "leaf_id")
    comps = await compactions(tx, session_id)
    start = leaf_pk
    inside = None
    if before is not None:
        start = await _before(tx, session_id, before, comps, leaf_pk)
        if include_compacted and start is not None and leaf_pk is not None and comps:
            inside = await _range_around(tx, start, await applied_compactions(tx, leaf_pk, comps))
    entries = await walk(
        tx,
        start,
        comps,
        want=None if limit is None else limit + 1,
        include_compacted=include_compacted,
        inside=inside,
    )
    leaf = None if leaf_pk is None else await message_id(tx, leaf_pk)
    return page(session_id, leaf, entries, limit, truncate_tool_output, before is not None)


async def since(tx: Tx, session_id: str, known: str | None) -> HistoryDelta:
    """What changed in the whole history since the read that returned revision ``known``
    (``storage/reading.py``'s ``since``: the same revisions)."""
    validate.session_id(session_id)
    old, _, compacted = (known or "").partition(".")
    stop = int(old) if old.isdigit() and len(old) <= 18 else -1
    row = await tx.fetchrow(
        """SELECT s.head_pk,
                  (SELECT max(pk) FROM compactions c WHERE c.user_id = $1 AND c.session_id = s.id),
                  (SELECT count(*) FROM compactions c WHERE c.user_id = $1 AND c.session_id = s.id),
                  EXISTS (SELECT 1 FROM messages m WHERE m.user_id = $1 AND m.pk = $3)
           FROM sessions s WHERE s.user_id = $1 AND s.id = $2""",
        session_id,
        stop,
    )
    if row is None:
        raise SessionNotFound(session_id)
    head_pk, newest, count, stored = row
    current = f"{head_pk or 0}.{newest or 0}.{count}"
    added: list[Entry] | None = []
    comps: list[Compaction] = []
    if known != current:
        comps = await compactions(tx, session_id) if count else []
        added = None
        # It only grew if its compactions are the same and its old head is on the new path.
        if head_pk is not None and compacted == current.partition(".")[2]:
            if stop == 0:  # it was empty: all of it follows
                added = await walk(tx, head_pk, comps)
            elif stored:
                added = await _down_to(tx, head_pk, comps, stop)
    reset = added is None
    if added is None:
        added = await walk(tx, head_pk, comps)
    return HistoryDelta.of(
        {
            "session_id": session_id,
            "revision": current,
            "messages": [entry.message() for entry in reversed(added)],
            "reset": reset,
        }
    )


async def _down_to(tx: Tx, head_pk: int, comps: list[Compaction], stop: int) -> list[Entry] | None:
    """The entries from the head up to ``stop`` (newest first), or None when the path as read
    does not pass through it."""
    steps = Walk(comps, stop=stop)
    pk: int | None = head_pk
    chunk = 4
    while pk is not None:
        pk = steps.take(await chain(tx, pk, chunk))
        chunk *= 4
    return steps.entries if steps.reached else None


async def _range_around(tx: Tx, pk: int, comps: list[Compaction]) -> int | None:
    """The start of the applied compaction whose range holds ``pk``, if any."""
    depth = await tx.fetchval("SELECT depth FROM messages WHERE user_id = $1 AND pk = $2", pk)
    for c in comps:
        if c.start_depth <= depth <= c.end_depth:
            return c.start_pk
    return None


async def _before(
    tx: Tx, session_id: str, before: str, comps: list[Compaction], leaf_pk: int | None
) -> int | None:
    """Where a page that ends before ``before`` starts; ``before`` must be on the path read."""
    validate.message_id(before, "before")
    off_path = InvalidInput(
        "before", f"{before!r} is not on the branch being read; use that branch's next_before"
    )
    number = validate.summary_pk(before)
    if number is not None:
        for c in comps:
            if c.pk == number:
                if leaf_pk is None or c not in await applied_compactions(tx, leaf_pk, comps):
                    raise off_path
                return c.start_parent_pk
        raise MessageNotFound(session_id, before, "before")
    pk = await message_pk(tx, session_id, before, "before")
    if leaf_pk is None or not await on_path(tx, pk, leaf_pk):
        raise off_path
    parent: int | None = await tx.fetchval(
        "SELECT parent_pk FROM messages WHERE user_id = $1 AND pk = $2", pk
    )
    return parent


async def on_path(tx: Tx, pk: int, leaf_pk: int) -> bool:
    """Whether message ``pk`` is ``leaf_pk`` or one of its ancestors."""
    found = await tx.fetchval(
        """WITH RECURSIVE up (pk, parent_pk, depth) AS (
               SELECT pk, parent_pk, depth FROM messages WHERE user_id = $1 AND pk = $2
               UNION ALL
               SELECT m.pk, m.parent_pk, m.depth FROM up
               JOIN messages m ON m.user_id = $1 AND m.pk = up.parent_pk
               WHERE up.depth > (SELECT depth FROM messages WHERE user_id = $1 AND pk = $3)
           )
           SELECT EXISTS (SELECT 1 FROM up WHERE pk = $3)""",
        leaf_pk,
        pk,
    )
    return bool(found)

"""Messages as a tree: appending, reading a path with compactions applied, branches, the head.

A message row knows its parent (``parent_pk``), its ``depth`` on its path (the root is 1) and
``path_tokens``, the token estimate of the whole path from the root down to it. Messages never
change once written, so those stay true, and the token estimate of any path is one lookup.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, NamedTuple

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import (
    HeadMoved,
    InvalidInput,
    MessageConflict,
    MessageNotFound,
    SessionEnded,
    SessionNotFound,
)
from threadline.storage.models import (
    AppendResult,
    Branch,
    History,
    HistoryDelta,
    Message,
    MessageIn,
)
from threadline.text import ID_PATTERN, estimate_tokens, is_id, new_id, now, searchable_text

OMITTED: Any = object()  # parent_id not given: attach to the head

TOOL_RESULT_TYPES = frozenset({"tool_result", "tool-result", "function_call_output"})

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

INSERT_MESSAGE = """
INSERT INTO messages (session_id, id, parent_pk, depth, path_tokens, role, content, is_json, body,
                      name, metadata, tokens, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True, slots=True)
class Compaction:
    """A stored compaction, with what reading and estimating need of its endpoints."""

    pk: int
    start_pk: int
    end_pk: int
    start_parent_pk: int | None
    start_parent_id: str | None
    start_depth: int
    end_depth: int
    replaced_tokens: int
    summary: str
    replaced: int
    created_at: str

    @property
    def summary_id(self) -> str:
        return f"compaction:{self.pk}"

    def message(self) -> Message:
        return Message.model_construct(
            id=self.summary_id,
            role="user",
            content=self.summary,
            name=None,
            metadata=None,
            parent_id=self.start_parent_id,
            created_at=self.created_at,
            compacted=False,
            summary_of=self.replaced,
            truncated=False,
        )


# -- lookups --------------------------------------------------------------------------------


def session_row(conn: sqlite3.Connection, session_id: str, columns: str) -> tuple[Any, ...]:
    validate.session_id(session_id)
    row = conn.execute(f"SELECT {columns} FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    return tuple(row)


def message_pk(conn: sqlite3.Connection, session_id: str, message_id: str, field: str) -> int:
    validate.message_id(message_id, field)
    row = conn.execute(
        "SELECT pk FROM messages WHERE session_id = ? AND id = ?", (session_id, message_id)
    ).fetchone()
    if row is None:
        raise MessageNotFound(session_id, message_id, field)
    return int(row[0])


def compactions(conn: sqlite3.Connection, session_id: str) -> list[Compaction]:
    """The session's compactions, newest first."""
    rows = conn.execute(
        """SELECT c.pk, c.start_pk, c.end_pk, s.parent_pk,
                  (SELECT p.id FROM messages p WHERE p.pk = s.parent_pk),
                  s.depth, e.depth, e.path_tokens - s.path_tokens + s.tokens,
                  c.summary, c.replaced, c.created_at
           FROM compactions c
           JOIN messages s ON s.pk = c.start_pk
           JOIN messages e ON e.pk = c.end_pk
           WHERE c.session_id = ? ORDER BY c.pk DESC""",
        (session_id,),
    ).fetchall()
    return [Compaction(*row) for row in rows]


# -- reading a path -------------------------------------------------------------------------


class Entry(NamedTuple):
    """One step of a path as history reads it: a stored message (its row) or a summary."""

    row: tuple[Any, ...] | None  # pk, id, parent_pk, parent id, role, content, is_json, ...
    compaction: Compaction | None
    compacted: bool = False  # inside an applied compaction (with include_compacted)

    @property
    def id(self) -> str:
        return self.compaction.summary_id if self.compaction else str(self.row[1])  # type: ignore[index]

    @property
    def tokens(self) -> int:
        if self.compaction is not None:
            return estimate_tokens(self.compaction.summary)
        return int(self.row[10])  # type: ignore[index]

    def is_tool_result(self) -> bool:
        if self.row is None:
            return False
        role, content, is_json = self.row[4:7]
        return is_tool_result(role, json.loads(content) if is_json else content)

    def message(self) -> Message:
        if self.compaction is not None:
            return self.compaction.message()
        assert self.row is not None
        _pk, mid, _parent, parent_id, role, content, is_json, name, metadata, created, _ = self.row
        return Message.of(
            {
                "id": mid,
                "role": role,
                "content": json.loads(content) if is_json else content,
                "name": name,
                "metadata": json.loads(metadata) if metadata is not None else None,
                "parent_id": parent_id,
                "created_at": created,
                "compacted": self.compacted,
                "summary_of": None,
                "truncated": False,
            }
        )


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
    # Oldest first, so that of two compactions ending on one message the newest wins.
    by_end = {comp.end_pk: comp for comp in reversed(comps)}
    entries: list[Entry] = []
    flat = None
    if linear is not None and want is None and start_pk is not None:
        flat = _linear_rows(conn, linear, start_pk)
    # With include_compacted: the start of the compacted range the walk is in (a page that
    # begins inside a range is told so by the caller).
    pk = start_pk
    while pk is not None and (want is None or len(entries) < want):
        budget = 1 << 62 if want is None else want - len(entries)
        if flat is not None:
            rows = flat[0][flat[1][pk] :]
        else:
            rows = conn.execute(_CHAIN, (pk, budget)).fetchall()
        pk = None
        for row in rows:
            c = by_end.get(row[0]) if inside is None else None
            if c is not None and not include_compacted:
                entries.append(Entry(None, c))
                pk = c.start_parent_pk
                break
            if c is not None:
                inside = c.start_pk
            entries.append(Entry(row, None, inside is not None))
            if inside == row[0]:
                inside = None
            if want is not None and len(entries) >= want:
                break
        else:
            pk = rows[-1][2] if rows else None
    return entries


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
    on_path = {row[0] for row in conn.execute(_PATH_PKS, (leaf_pk,))}
    applied: list[Compaction] = []
    for c in sorted(comps, key=lambda c: (c.end_depth, c.pk), reverse=True):
        if c.end_pk in on_path and not any(
            a.start_depth <= c.end_depth <= a.end_depth for a in applied
        ):
            applied.append(c)
    return applied


def history(
    conn: sqlite3.Connection,
    session_id: str,
    *,
    leaf_id: str | None,
    limit: int | None,
    before: str | None,
    include_compacted: bool,
    truncate_tool_output: int | None,
) -> History:
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
    has_more = limit is not None and len(entries) > limit
    if has_more:
        del entries[limit:]
    messages = [entry.message() for entry in entries]  # newest first
    if truncate_tool_output is not None:
        messages = _truncate_old_tool_output(messages, truncate_tool_output, before is not None)
    messages.reverse()
    leaf = None
    if leaf_pk is not None:
        leaf = conn.execute("SELECT id FROM messages WHERE pk = ?", (leaf_pk,)).fetchone()[0]
    return History.model_construct(
        session_id=session_id,
        leaf_id=leaf,
        messages=messages,
        has_more=has_more,
        next_before=messages[0].id if has_more and messages else None,
    )


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
    by_end = {comp.end_pk: comp for comp in reversed(comps)}
    entries: list[Entry] = []
    pk: int | None = head_pk
    chunk = 4  # a turn or two since the last read, usually; then four times more each time
    while pk is not None:
        rows = conn.execute(_CHAIN, (pk, chunk)).fetchall()
        pk, chunk = None, chunk * 4
        for row in rows:
            if row[0] == stop:
                return entries
            c = by_end.get(row[0])
            if c is not None:
                entries.append(Entry(None, c))
                pk = c.start_parent_pk
                break
            entries.append(Entry(row, None))
        else:
            pk = rows[-1][2] if rows else None
    return None


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


def is_tool_result(role: str, content: Any) -> bool:
    if role == "tool":
        return True
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in TOOL_RESULT_TYPES for p in content
    )


def _truncate_old_tool_output(messages: list[Message], keep: int, all_old: bool) -> list[Message]:
    """Shorten tool output older than the latest user turn; the current turn stays whole."""
    out = []
    old = all_old
    for message in messages:  # newest first
        if old and is_tool_result(message.role, message.content):
            content, cut = _shorten(message.content, keep, whole=message.role == "tool")
            if cut:
                message = message.model_copy(update={"content": content, "truncated": True})
        if message.role == "user" and not is_tool_result(message.role, message.content):
            old = True
        out.append(message)
    return out


def _shorten(value: Any, keep: int, whole: bool) -> tuple[Any, bool]:
    if isinstance(value, str):
        if len(value) <= keep:
            return value, False
        return f"{value[:keep]}… [{len(value) - keep} more characters truncated]", True
    if isinstance(value, list):
        cut = False
        items = []
        for item in value:
            if whole or (isinstance(item, dict) and item.get("type") in TOOL_RESULT_TYPES):
                item, c = _shorten_part(item, keep)
                cut = cut or c
            items.append(item)
        return items, cut
    return value, False


def _shorten_part(part: Any, keep: int) -> tuple[Any, bool]:
    if isinstance(part, str):
        return _shorten(part, keep, whole=True)
    if isinstance(part, list):
        return _shorten(part, keep, whole=True)
    if isinstance(part, dict):
        cut = False
        out = {}
        for key, value in part.items():
            if key in ("text", "content", "output", "result"):
                value, c = _shorten_part(value, keep)
                cut = cut or c
            out[key] = value
        return out, cut
    return part, False


# -- writing --------------------------------------------------------------------------------


Encoded = list[tuple[MessageIn, tuple[Any, ...]]]


def encode(messages: list[MessageIn], config: Config) -> Encoded:
    """Each message with its stored columns (``encode_message``): done by the caller, before
    the write is queued, so the writer thread only runs SQL."""
    return [(m, encode_message(m, i, config)) for i, m in enumerate(messages)]


def encode_message(message: MessageIn, index: int, config: Config) -> tuple[Any, ...]:
    """(role, content, is_json, body, name, metadata, tokens) as stored, after the size rules:
    the columns of ``INSERT_MESSAGE`` between ``path_tokens`` and ``created_at``, in order."""
    field = f"messages[{index}]"
    if message.id is not None and not is_id(message.id):  # compaction:N ids are reserved
        raise InvalidInput(f"{field}.id", f"must match {ID_PATTERN}")
    limit = config.limits.max_message_chars
    if isinstance(message.content, str):
        content, is_json, body = message.content, 0, None
        validate.unicode(content, f"{field}.content")
    else:
        content, is_json = validate.dump_json(message.content, f"{field}.content"), 1
        body = searchable_text(message.content)
    if len(content) > limit:
        raise InvalidInput(
            f"{field}.content", f"is {len(content)} characters; the limit is {limit} per message"
        )
    if message.name is not None:
        validate.unicode(message.name, f"{field}.name")
    meta = validate.metadata(message.metadata, f"{field}.metadata", config.limits)
    tokens = estimate_tokens(content if body is None else body)
    return message.role, content, is_json, body, message.name, meta, tokens


def guard_head(conn: sqlite3.Connection, session_id: str, expected: Any) -> None:
    """Refuse (``HeadMoved``) unless the head is ``expected``: a message id, or None for a
    session without messages; ``OMITTED`` guards nothing."""
    if expected is OMITTED:
        return
    if expected is not None and not isinstance(expected, str):
        raise InvalidInput("expected_head", "must be a message id, or null for an empty session")
    (head,) = session_row(conn, session_id, "(SELECT id FROM messages WHERE pk = head_pk)")
    if head != expected:
        raise HeadMoved(session_id, expected, head)


def continued_in(conn: sqlite3.Connection, session_id: str) -> str | None:
    """The session an ended one was split into."""
    row = conn.execute(
        "SELECT id FROM sessions WHERE parent_session_id = ? AND lineage = 'split' "
        "ORDER BY created_at, id LIMIT 1",
        (session_id,),
    ).fetchone()
    return None if row is None else str(row[0])


def ended(conn: sqlite3.Connection, session_id: str, verb: str) -> SessionEnded:
    """The refusal of a write to an ended session, naming where it continues."""
    child = continued_in(conn, session_id)
    where = f"session {child!r}" if child else "the session it was split into"
    return SessionEnded(
        f"session {session_id!r} has ended (it was split{f' into {child!r}' if child else ''}); "
        f"{verb} {where} instead"
    )


def append(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    encoded: Encoded,
    parent_id: Any = OMITTED,
    expected_head: Any = OMITTED,
) -> AppendResult:
    """Append ``encoded`` messages (``encode``) to the head or under ``parent_id``."""
    guard_head(conn, session_id, expected_head)
    status, head_pk, estimate = session_row(conn, session_id, "status, head_pk, token_estimate")
    if status == "ended":
        raise ended(conn, session_id, "append to")
    if not encoded:
        raise InvalidInput("messages", "must hold at least one message")
    if parent_id is OMITTED:
        parent_pk = head_pk
    elif parent_id is None:
        parent_pk = None
    else:
        parent_pk = message_pk(conn, session_id, parent_id, "parent_id")
    depth, path_tokens = 0, 0
    if parent_pk is not None:
        depth, path_tokens = conn.execute(
            "SELECT depth, path_tokens FROM messages WHERE pk = ?", (parent_pk,)
        ).fetchone()
    linear = parent_pk == head_pk
    created_at = now()
    ids: list[str] = []
    inserted = added = 0
    for i, (message, row) in enumerate(encoded):
        role, content, is_json, _, name, meta, tokens = row
        mid = message.id
        if mid is not None:
            existing = conn.execute(
                "SELECT pk, depth, path_tokens, role, content, is_json, name, metadata "
                "FROM messages WHERE session_id = ? AND id = ?",
                (session_id, mid),
            ).fetchone()
            if existing is not None:
                if tuple(existing[3:]) != (role, content, is_json, name, meta):
                    raise MessageConflict(
                        f"messages[{i}].id: message {mid!r} already exists in session "
                        f"{session_id!r} with different content; use a new id"
                    )
                parent_pk, depth, path_tokens = existing[:3]
                linear = False
                ids.append(mid)
                continue
        else:
            mid = new_id()
        depth += 1
        path_tokens += tokens
        cursor = conn.execute(
            INSERT_MESSAGE, (session_id, mid, parent_pk, depth, path_tokens, *row, created_at)
        )
        parent_pk = cursor.lastrowid
        inserted += 1
        added += tokens
        ids.append(mid)
    if inserted == 0:  # a retry of messages already stored: nothing changes
        head = head_pk
    else:
        head = parent_pk
        estimate = estimate + added if linear else effective_tokens(conn, session_id, head)
        conn.execute(
            "UPDATE sessions SET head_pk = ?, message_count = message_count + ?, "
            "token_estimate = ?, updated_at = ? WHERE id = ?",
            (head, inserted, estimate, created_at, session_id),
        )
    head_id = None
    if head is not None:
        head_id = ids[-1] if inserted else message_id(conn, head)
    return AppendResult.of(
        {
            "session_id": session_id,
            "message_ids": ids,
            "head_id": head_id,
            "token_estimate": estimate,
            "needs_compaction": estimate > config.compaction.threshold_tokens,
        }
    )


def message_id(conn: sqlite3.Connection, pk: int) -> str:
    value: str = conn.execute("SELECT id FROM messages WHERE pk = ?", (pk,)).fetchone()[0]
    return value


def set_head(
    conn: sqlite3.Connection, session_id: str, message_id: str, expected_head: Any = OMITTED
) -> None:
    session_row(conn, session_id, "1")
    guard_head(conn, session_id, expected_head)
    pk = message_pk(conn, session_id, message_id, "message_id")
    conn.execute(
        "UPDATE sessions SET head_pk = ?, token_estimate = ?, updated_at = ? WHERE id = ?",
        (pk, effective_tokens(conn, session_id, pk), now(), session_id),
    )


def branches(conn: sqlite3.Connection, session_id: str) -> list[Branch]:
    (head_pk,) = session_row(conn, session_id, "head_pk")
    rows = conn.execute(
        """SELECT m.pk, m.id, m.depth, m.created_at, substr(coalesce(m.body, m.content), 1, 160)
           FROM messages m
           WHERE m.session_id = ? AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_pk = m.pk)
           ORDER BY m.pk""",
        (session_id,),
    ).fetchall()
    return [
        Branch.model_construct(
            leaf_id=mid,
            message_count=depth,
            created_at=created,
            preview=preview,
            is_head=pk == head_pk,
        )
        for pk, mid, depth, created, preview in rows
    ]


def branch_count(conn: sqlite3.Connection, session_id: str) -> int:
    count: int = conn.execute(
        """SELECT count(*) FROM messages m WHERE m.session_id = ?
           AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_pk = m.pk)""",
        (session_id,),
    ).fetchone()[0]
    return count


def clear(conn: sqlite3.Connection, session_id: str) -> int:
    """Delete every message of the session (their compactions go with them); the session,
    its blocks and its usage stay. Returns how many messages went."""
    session_row(conn, session_id, "1")
    deleted = conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,)).rowcount
    conn.execute(
        "UPDATE sessions SET head_pk = NULL, message_count = 0, token_estimate = 0, "
        "updated_at = ? WHERE id = ?",
        (now(), session_id),
    )
    return int(deleted)


def pop(conn: sqlite3.Connection, session_id: str) -> Message | None:
    """Take the head message off the session: it is deleted and the head moves to its parent
    (a head with children, after a rewind, stays on their branches and only the head moves).
    None for a session without messages."""
    (head_pk,) = session_row(conn, session_id, "head_pk")
    if head_pk is None:
        return None
    (entry,) = walk(conn, head_pk, [], want=1)
    message = entry.message()
    if conn.execute("SELECT 1 FROM messages WHERE parent_pk = ?", (head_pk,)).fetchone() is None:
        delete_subtree(conn, session_id, message.id)  # a leaf: the head moves up with it
        return message
    (parent_pk,) = conn.execute(
        "SELECT parent_pk FROM messages WHERE pk = ?", (head_pk,)
    ).fetchone()
    conn.execute(
        "UPDATE sessions SET head_pk = ?, token_estimate = ?, updated_at = ? WHERE id = ?",
        (parent_pk, effective_tokens(conn, session_id, parent_pk), now(), session_id),
    )
    return message


def delete_subtree(
    conn: sqlite3.Connection, session_id: str, message_id: str
) -> tuple[int, int | None]:
    """Delete a message and everything below it; returns (count, new head pk)."""
    (head_pk,) = session_row(conn, session_id, "head_pk")
    pk = message_pk(conn, session_id, message_id, "message_id")
    parent_pk = conn.execute("SELECT parent_pk FROM messages WHERE pk = ?", (pk,)).fetchone()[0]
    deleted = conn.execute(
        """DELETE FROM messages WHERE pk IN (
               WITH RECURSIVE sub (pk) AS (
                   VALUES (?) UNION ALL
                   SELECT m.pk FROM messages m JOIN sub ON m.parent_pk = sub.pk)
               SELECT pk FROM sub)""",
        (pk,),
    ).rowcount
    head_gone = conn.execute("SELECT 1 FROM messages WHERE pk = ?", (head_pk,)).fetchone() is None
    if head_pk is not None and head_gone:
        head_pk = parent_pk
    conn.execute(
        "UPDATE sessions SET head_pk = ?, message_count = message_count - ?, token_estimate = ?, "
        "updated_at = ? WHERE id = ?",
        (head_pk, deleted, effective_tokens(conn, session_id, head_pk), now(), session_id),
    )
    return deleted, head_pk

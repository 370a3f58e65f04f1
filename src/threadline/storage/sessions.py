"""Sessions: create, read, list, rename, delete, fork, and their usage totals."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from threadline.config import Config
from threadline.storage import context, validate
from threadline.storage.errors import InvalidInput, SessionExists
from threadline.storage.filters import JSON_TYPES, Filters, check_title, check_usage
from threadline.storage.models import SessionInfo, SessionList, SessionSummary, UsageTotals
from threadline.storage.reading import effective_tokens
from threadline.storage.rows import message_pk, session_row
from threadline.storage.tree import OMITTED, branch_count, continued_in
from threadline.text import new_id, now

_SUMMARY = """id, title, status, created_at, updated_at, message_count, token_estimate,
              parent_session_id"""


def insert_session(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    title: str | None,
    metadata: str | None,
    *,
    parent: str | None = None,
    lineage: str | None = None,
    forked_from: str | None = None,
    system_prompt: str = "",
) -> None:
    if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone():
        raise SessionExists(session_id)
    stamp = now()
    conn.execute(
        "INSERT INTO sessions (id, title, metadata, parent_session_id, lineage, "
        "forked_from_message_id, system_prompt, prompt_rendered_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            title,
            metadata,
            parent,
            lineage,
            forked_from,
            system_prompt,
            stamp,
            stamp,
            stamp,
        ),
    )


def create(
    conn: sqlite3.Connection,
    config: Config,
    title: str | None,
    session_id: str | None,
    metadata: dict[str, Any] | None,
) -> str:
    sid = new_id() if session_id is None else validate.new_session_id(session_id)
    insert_session(
        conn,
        config,
        sid,
        check_title(title, config),
        validate.metadata(metadata, "metadata", config.limits),
    )
    context.freeze(conn, config, sid)
    return sid


def info(conn: sqlite3.Connection, config: Config, session_id: str) -> SessionInfo:
    row = session_row(
        conn,
        session_id,
        f"""{_SUMMARY}, metadata, lineage, forked_from_message_id,
            (SELECT id FROM messages WHERE pk = head_pk),
            (SELECT depth FROM messages WHERE pk = head_pk),
            (SELECT count(*) FROM compactions WHERE session_id = sessions.id),
            input_tokens, output_tokens, cost, turns, last_model""",
    )
    (
        sid,
        title,
        status,
        created,
        updated,
        count,
        estimate,
        parent,
        metadata,
        lineage,
        forked_from,
        head_id,
        head_depth,
        comps,
        input_tokens,
        output_tokens,
        cost,
        turns,
        last_model,
    ) = row
    return SessionInfo.model_construct(
        session_id=sid,
        title=title,
        status=status,
        created_at=created,
        updated_at=updated,
        message_count=count,
        token_estimate=estimate,
        needs_compaction=estimate > config.compaction.threshold_tokens,
        parent_session_id=parent,
        metadata=json.loads(metadata) if metadata else None,
        lineage=lineage,
        forked_from_message_id=forked_from,
        continued_in=continued_in(conn, sid) if status == "ended" else None,
        head_id=head_id,
        # When every message is on the head's path the session is one branch: no need to
        # look for leaves (the common case, and every fresh fork).
        branch_count=1 if head_depth == count else branch_count(conn, sid),
        compactions=comps,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost,
        turns=turns,
        last_model=last_model,
    )


def as_sql(filters: Filters) -> tuple[list[str], list[Any]]:
    """The conditions as SQLite's SQL, with their parameters."""
    conditions: list[str] = []
    params: list[Any] = []
    for kind, subject, value in filters.checked():
        if kind == "status":
            conditions.append("status = ?")
            params.append(value)
        elif kind == "title":
            conditions.append("instr(lower(coalesce(title, '')), ?) > 0")
            params.append(value)
        elif kind == "metadata":
            path = f'$."{subject}"'
            conditions.append("json_type(metadata, ?) = ? AND json_extract(metadata, ?) = ?")
            params += [path, JSON_TYPES[type(value)](value), path, value]
        else:
            conditions.append(f"{subject} {kind} ?")
            params.append(value)
    return conditions, params


def listing(
    conn: sqlite3.Connection,
    config: Config,
    limit: int,
    cursor: str | None,
    filters: Filters,
) -> SessionList:
    validate.limit(limit, "limit", 1, 200)
    conditions, params = as_sql(filters)
    if cursor is not None:
        conditions.append("(updated_at, id) < (?, ?)")
        params += validate.decode_cursor(cursor, "cursor", (str, str))
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = conn.execute(
        f"SELECT {_SUMMARY} FROM sessions {where} ORDER BY updated_at DESC, id DESC LIMIT ?",
        [*params, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    sessions = [
        SessionSummary.model_construct(
            session_id=sid,
            title=title,
            status=st,
            created_at=created,
            updated_at=updated,
            message_count=count,
            token_estimate=estimate,
            needs_compaction=estimate > config.compaction.threshold_tokens,
            parent_session_id=parent,
        )
        for sid, title, st, created, updated, count, estimate, parent in rows
    ]
    next_cursor = None
    if more:
        last = sessions[-1]
        next_cursor = validate.encode_cursor([last.updated_at, last.session_id])
    return SessionList.model_construct(sessions=sessions, next_cursor=next_cursor)


def rename(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    title: str | None,
    metadata: dict[str, Any] | None,
) -> None:
    session_row(conn, session_id, "1")
    keep = title is OMITTED
    title = None if keep else check_title(title, config)
    encoded = validate.metadata(metadata, "metadata", config.limits)
    conn.execute(
        "UPDATE sessions SET title = CASE WHEN ? THEN title ELSE ? END, "
        "metadata = coalesce(?, metadata), updated_at = ? WHERE id = ?",
        (keep, title, encoded, now(), session_id),
    )


def delete(conn: sqlite3.Connection, session_id: str) -> int:
    (count,) = session_row(conn, session_id, "message_count")
    conn.execute("DELETE FROM context_blocks WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
    return int(count)


def prune(conn: sqlite3.Connection, filters: Filters, dry_run: bool) -> tuple[list[str], int]:
    """The whole sessions ``filters`` name, oldest activity first, and their messages;
    deleted unless ``dry_run``. Every session is named by a condition: none given, none go."""
    conditions, params = as_sql(filters)
    if not conditions:
        raise InvalidInput(
            "filters", "name the sessions to prune (ended or inactive before a time)"
        )
    rows = conn.execute(
        f"SELECT id, message_count FROM sessions WHERE {' AND '.join(conditions)} "
        "ORDER BY updated_at, id",
        params,
    ).fetchall()
    if not dry_run:
        for sid, _ in rows:
            delete(conn, sid)
    return [sid for sid, _ in rows], sum(count for _, count in rows)


def fork(
    conn: sqlite3.Connection,
    config: Config,
    session_id: str,
    message_id: str | None,
    title: str | None,
) -> str:
    src_title, metadata, head_pk, prompt = session_row(
        conn, session_id, "title, metadata, head_pk, system_prompt"
    )
    pk = head_pk if message_id is None else message_pk(conn, session_id, message_id, "message_id")
    if title is None and src_title is not None:
        title = f"{src_title} (fork)"[: config.limits.max_title_chars]
    child = new_id()
    from_id = None
    if pk is not None:
        from_id = conn.execute("SELECT id FROM messages WHERE pk = ?", (pk,)).fetchone()[0]
    insert_session(
        conn,
        config,
        child,
        check_title(title, config),
        metadata,
        parent=session_id,
        lineage="fork",
        forked_from=from_id,
        system_prompt=prompt,
    )
    context.copy_session_blocks(conn, session_id, child)
    if pk is None:
        return child
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    base = row[0] + 1
    # A path is a chain with depths 1..n, so the copy of the message at depth d gets
    # pk base + d - 1 and its parent pk base + d - 2: the whole copy is one statement. A child
    # is always stored after its parent, so along a path pk order is depth order: reading the
    # chain's rows by pk (``IN`` walks its list in order) needs no sort and appends in pk order.
    chain = """WITH RECURSIVE chain (pk) AS (
                   VALUES (:pk) UNION ALL
                   SELECT m.parent_pk FROM chain JOIN messages m ON m.pk = chain.pk
                   WHERE m.parent_pk IS NOT NULL)"""
    params = {"pk": pk, "base": base, "child": child, "src": session_id}
    # The copied rows passed the table's CHECK constraints when they were stored; checking
    # them again costs ~0.7 us a row. (A connection flag: the writer thread runs one job at a
    # time, and it is restored before anything else runs.)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    try:
        copied = conn.execute(
            f"""INSERT INTO messages (pk, session_id, id, parent_pk, depth, path_tokens, role,
                                     content, is_json, body, name, metadata, tokens, created_at)
                {chain}
                SELECT :base + m.depth - 1, :child, m.id,
                       CASE WHEN m.depth = 1 THEN NULL ELSE :base + m.depth - 2 END,
                       m.depth, m.path_tokens, m.role, m.content, m.is_json, m.body, m.name,
                       m.metadata, m.tokens, m.created_at
                FROM messages m WHERE m.pk IN (SELECT pk FROM chain) ORDER BY m.pk""",
            params,
        ).rowcount
    finally:
        conn.execute("PRAGMA ignore_check_constraints = OFF")
    conn.execute(
        f"""INSERT INTO compactions (session_id, start_pk, end_pk, summary, replaced, created_at)
            {chain}
            SELECT :child, :base + s.depth - 1, :base + e.depth - 1, c.summary, c.replaced,
                   c.created_at
            FROM compactions c JOIN messages s ON s.pk = c.start_pk
            JOIN messages e ON e.pk = c.end_pk
            WHERE c.session_id = :src AND c.end_pk IN (SELECT pk FROM chain)
            ORDER BY c.pk""",
        params,
    )
    new_head = base + copied - 1
    conn.execute(
        "UPDATE sessions SET head_pk = ?, message_count = ?, token_estimate = ? WHERE id = ?",
        (new_head, copied, effective_tokens(conn, child, new_head), child),
    )
    return child


def record_usage(
    conn: sqlite3.Connection,
    session_id: str,
    input_tokens: int,
    output_tokens: int,
    cost: float | None,
    model: str | None,
) -> UsageTotals:
    session_row(conn, session_id, "1")
    check_usage(input_tokens, output_tokens, cost, model)
    stamp = now()
    conn.execute(
        "INSERT INTO usage (session_id, input_tokens, output_tokens, cost, model, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (session_id, input_tokens, output_tokens, cost, model, stamp),
    )
    row = conn.execute(
        "UPDATE sessions SET input_tokens = input_tokens + ?, output_tokens = output_tokens + ?, "
        "cost = cost + ?, turns = turns + 1, last_model = coalesce(?, last_model), updated_at = ? "
        "WHERE id = ? RETURNING input_tokens, output_tokens, cost, turns",
        (input_tokens, output_tokens, cost or 0.0, model, stamp, session_id),
    ).fetchall()[0]
    return UsageTotals.model_construct(
        session_id=session_id,
        input_tokens=row[0],
        output_tokens=row[1],
        cost=row[2],
        turns=row[3],
    )

"""Sessions on PostgreSQL: create, read, list, rename, delete, and their usage totals, with
the rules of ``storage/sessions.py`` (titles, metadata, filters, cursors, usage values)."""

from __future__ import annotations

import json
from typing import Any

from threadline.config import Config
from threadline.storage import validate
from threadline.storage.errors import InvalidInput, SessionExists, SessionNotFound
from threadline.storage.filters import Filters, check_title, check_usage
from threadline.storage.models import SessionInfo, SessionList, SessionSummary, UsageTotals
from threadline.storage.postgres import context, reading
from threadline.storage.postgres.rows import Tx, message_pk, session_row
from threadline.storage.postgres.rows import message_id as message_id_of
from threadline.storage.tree import OMITTED
from threadline.text import new_id, now

_SUMMARY = """s.id, s.title, s.status, s.created_at, s.updated_at, s.message_count,
              s.token_estimate, s.parent_session_id"""

# The head's id and depth, and how many compactions: what ``info`` adds to the row.
_INFO = f"""{_SUMMARY}, s.metadata, s.lineage, s.forked_from_message_id,
    h.id AS head_id, h.depth AS head_depth,
    (SELECT count(*) FROM compactions c WHERE c.user_id = $1 AND c.session_id = s.id) AS comps,
    s.input_tokens, s.output_tokens, s.cost, s.turns, s.last_model"""


async def insert(
    tx: Tx,
    session_id: str,
    title: str | None,
    metadata: str | None,
    *,
    parent: str | None = None,
    lineage: str | None = None,
    forked_from: str | None = None,
    system_prompt: str = "",
) -> None:
    """A new session row; ``SessionExists`` if the user has one with this id."""
    stamp = now()
    inserted = await tx.fetchval(
        "INSERT INTO sessions (user_id, id, title, metadata, parent_session_id, lineage, "
        "forked_from_message_id, system_prompt, prompt_rendered_at, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) ON CONFLICT DO NOTHING RETURNING true",
        session_id,
        title,
        metadata,
        parent,
        lineage,
        forked_from,
        system_prompt,
        stamp,
    )
    if not inserted:
        raise SessionExists(session_id)


async def create(
    tx: Tx,
    config: Config,
    title: str | None,
    session_id: str | None,
    metadata: dict[str, Any] | None,
) -> str:
    sid = new_id() if session_id is None else validate.new_session_id(session_id)
    checked = check_title(title, config)
    await insert(tx, sid, checked, validate.metadata(metadata, "metadata", config.limits))
    await context.freeze(tx, config, sid)
    return sid


async def fork(
    tx: Tx, config: Config, session_id: str, message_id: str | None, title: str | None
) -> str:
    """A new session with a copy of the path up to ``message_id`` (default: the head) and the
    compactions on it; its blocks and frozen prompt as the source's."""
    source = await session_row(tx, session_id, "s.title, s.metadata, s.head_pk, s.system_prompt")
    pk = source["head_pk"]
    if message_id is not None:
        pk = await message_pk(tx, session_id, message_id, "message_id")
    if title is None and source["title"] is not None:
        title = f"{source['title']} (fork)"[: config.limits.max_title_chars]
    child = new_id()
    await insert(
        tx,
        child,
        check_title(title, config),
        source["metadata"],
        parent=session_id,
        lineage="fork",
        forked_from=None if pk is None else await message_id_of(tx, pk),
        system_prompt=source["system_prompt"],
    )
    await context.copy_session_blocks(tx, session_id, child)
    if pk is None:
        return child
    # The copy is one chain with depths 1..n: copied in one statement, then each copy linked
    # to the copy one depth up, by key.
    copies = await tx.fetch(
        """WITH RECURSIVE chain AS (
               SELECT pk, parent_pk, id, depth, path_tokens, role, content, is_json, body, name,
                      metadata, tokens, created_at
               FROM messages WHERE user_id = $1 AND pk = $2
               UNION ALL
               SELECT m.pk, m.parent_pk, m.id, m.depth, m.path_tokens, m.role, m.content,
                      m.is_json, m.body, m.name, m.metadata, m.tokens, m.created_at
               FROM chain JOIN messages m ON m.user_id = $1 AND m.pk = chain.parent_pk),
           copy AS (
               INSERT INTO messages (user_id, session_id, id, parent_pk, depth, path_tokens, role,
                                     content, is_json, body, name, metadata, tokens, created_at)
               SELECT $1, $3, id, NULL, depth, path_tokens, role, content, is_json, body, name,
                      metadata, tokens, created_at
               FROM chain ORDER BY depth
               RETURNING pk, depth)
           SELECT pk FROM copy ORDER BY depth""",
        pk,
        child,
    )
    pks = [r["pk"] for r in copies]
    await tx.execute(
        "UPDATE messages m SET parent_pk = link.parent FROM unnest($2::bigint[], $3::bigint[]) "
        "AS link (pk, parent) WHERE m.user_id = $1 AND m.pk = link.pk",
        pks[1:],
        pks[:-1],
    )
    # A compaction on the copied path is copied, its ends moved to the copies at their depths.
    if await tx.fetchval(
        "SELECT EXISTS (SELECT 1 FROM compactions WHERE user_id = $1 AND session_id = $2)",
        session_id,
    ):
        await _copy_compactions(tx, pk, child, session_id)
    head, copied = pks[-1], len(pks)
    await tx.execute(
        "UPDATE sessions SET head_pk = $3, message_count = $4, token_estimate = $5 "
        "WHERE user_id = $1 AND id = $2",
        child,
        head,
        copied,
        await reading.effective_tokens(tx, child, head),
    )
    return child


async def info(tx: Tx, config: Config, session_id: str) -> SessionInfo:
    validate.session_id(session_id)
    row = await tx.fetchrow(
        f"SELECT {_INFO} FROM sessions s LEFT JOIN messages h "
        "ON h.user_id = $1 AND h.pk = s.head_pk WHERE s.user_id = $1 AND s.id = $2",
        session_id,
    )
    if row is None:
        raise SessionNotFound(session_id)
    estimate = row["token_estimate"]
    count = row["message_count"]
    return SessionInfo.model_construct(
        session_id=row["id"],
        title=row["title"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=count,
        token_estimate=estimate,
        needs_compaction=estimate > config.compaction.threshold_tokens,
        parent_session_id=row["parent_session_id"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        lineage=row["lineage"],
        forked_from_message_id=row["forked_from_message_id"],
        continued_in=await continued_in(tx, session_id) if row["status"] == "ended" else None,
        head_id=row["head_id"],
        branch_count=1 if row["head_depth"] == count else await branch_count(tx, session_id),
        compactions=row["comps"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost=row["cost"],
        turns=row["turns"],
        last_model=row["last_model"],
    )


async def continued_in(tx: Tx, session_id: str) -> str | None:
    """The session an ended one was split into."""
    found: str | None = await tx.fetchval(
        "SELECT id FROM sessions WHERE user_id = $1 AND parent_session_id = $2 "
        "AND lineage = 'split' ORDER BY created_at, id LIMIT 1",
        session_id,
    )
    return found


async def branch_count(tx: Tx, session_id: str) -> int:
    count: int = await tx.fetchval(
        "SELECT count(*) FROM messages m WHERE m.user_id = $1 AND m.session_id = $2 "
        "AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.user_id = $1 AND c.parent_pk = m.pk)",
        session_id,
    )
    return count


def _where(filters: Filters, params: list[Any]) -> list[str]:
    """``filters`` as SQL over ``sessions s``; parameters are appended to ``params`` (which
    follow the user, ``$1``)."""

    def p(value: Any) -> str:
        params.append(value)
        return f"${len(params) + 1}"

    conditions = []
    for kind, subject, value in filters.checked():
        if kind == "status":
            conditions.append(f"s.status = {p(value)}")
        elif kind == "title":
            conditions.append(f"strpos(lower(coalesce(s.title, '')), {p(value)}) > 0")
        elif kind == "metadata":
            conditions.append(
                f"(s.metadata::jsonb -> {p(subject)}) = {p(json.dumps(value))}::jsonb"
            )
        else:
            conditions.append(f"s.{subject} {kind} {p(value)}")
    return conditions


async def listing(
    tx: Tx, config: Config, limit: int, cursor: str | None, filters: Filters
) -> SessionList:
    validate.limit(limit, "limit", 1, 200)
    params: list[Any] = []
    conditions = ["s.user_id = $1", *_where(filters, params)]
    if cursor is not None:
        after = validate.decode_cursor(cursor, "cursor", (str, str))
        params += after
        conditions.append(f"(s.updated_at, s.id) < (${len(params)}, ${len(params) + 1})")
    params.append(limit + 1)
    rows = await tx.fetch(
        f"SELECT {_SUMMARY} FROM sessions s WHERE {' AND '.join(conditions)} "
        f"ORDER BY s.updated_at DESC, s.id DESC LIMIT ${len(params) + 1}",
        *params,
    )
    more = len(rows) > limit
    sessions = [
        SessionSummary.model_construct(
            session_id=r["id"],
            title=r["title"],
            status=r["status"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            message_count=r["message_count"],
            token_estimate=r["token_estimate"],
            needs_compaction=r["token_estimate"] > config.compaction.threshold_tokens,
            parent_session_id=r["parent_session_id"],
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if more:
        last = sessions[-1]
        next_cursor = validate.encode_cursor([last.updated_at, last.session_id])
    return SessionList.model_construct(sessions=sessions, next_cursor=next_cursor)


async def rename(
    tx: Tx, config: Config, session_id: str, title: Any, metadata: dict[str, Any] | None
) -> None:
    await session_row(tx, session_id, "1")
    keep = title is OMITTED
    checked = None if keep else check_title(title, config)
    encoded = validate.metadata(metadata, "metadata", config.limits)
    await tx.execute(
        "UPDATE sessions SET title = CASE WHEN $3 THEN title ELSE $4 END, "
        "metadata = coalesce($5, metadata), updated_at = $6 WHERE user_id = $1 AND id = $2",
        session_id,
        keep,
        checked,
        encoded,
        now(),
    )


async def delete(tx: Tx, session_id: str) -> int:
    row = await session_row(tx, session_id, "s.message_count")
    await tx.execute(
        "DELETE FROM context_blocks WHERE user_id = $1 AND session_id = $2", session_id
    )
    await tx.execute("DELETE FROM sessions WHERE user_id = $1 AND id = $2", session_id)
    return int(row["message_count"])


async def _copy_compactions(tx: Tx, pk: int, child: str, session_id: str) -> None:
    """Copy the compactions on the path up from ``pk`` to the fork ``child``."""
    await tx.execute(
        """WITH RECURSIVE chain (pk, parent_pk) AS (
               SELECT pk, parent_pk FROM messages WHERE user_id = $1 AND pk = $2
               UNION ALL
               SELECT m.pk, m.parent_pk FROM chain
               JOIN messages m ON m.user_id = $1 AND m.pk = chain.parent_pk)
           INSERT INTO compactions (user_id, session_id, start_pk, end_pk, summary, replaced,
                                    created_at)
           SELECT $1, $3, ns.pk, ne.pk, c.summary, c.replaced, c.created_at
           FROM compactions c
           JOIN messages s ON s.user_id = $1 AND s.pk = c.start_pk
           JOIN messages e ON e.user_id = $1 AND e.pk = c.end_pk
           JOIN messages ns ON ns.user_id = $1 AND ns.session_id = $3 AND ns.depth = s.depth
           JOIN messages ne ON ne.user_id = $1 AND ne.session_id = $3 AND ne.depth = e.depth
           WHERE c.user_id = $1 AND c.session_id = $4 AND c.end_pk IN (SELECT pk FROM chain)
           ORDER BY c.pk""",
        pk,
        child,
        session_id,
    )


async def record_usage(
    tx: Tx,
    session_id: str,
    input_tokens: int,
    output_tokens: int,
    cost: float | None,
    model: str | None,
) -> UsageTotals:
    await session_row(tx, session_id, "1")
    check_usage(input_tokens, output_tokens, cost, model)
    stamp = now()
    await tx.execute(
        "INSERT INTO usage (user_id, session_id, input_tokens, output_tokens, cost, model, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        session_id,
        input_tokens,
        output_tokens,
        None if cost is None else float(cost),
        model,
        stamp,
    )
    row = await tx.fetchrow(
        "UPDATE sessions SET input_tokens = input_tokens + $3, output_tokens = output_tokens + $4, "
        "cost = cost + $5, turns = turns + 1, last_model = coalesce($6, last_model), "
        "updated_at = $7 WHERE user_id = $1 AND id = $2 "
        "RETURNING input_tokens, output_tokens, cost, turns",
        session_id,
        input_tokens,
        output_tokens,
        float(cost or 0.0),
        model,
        stamp,
    )
    assert row is not None
    return UsageTotals.model_construct(
        session_id=session_id,
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost=row["cost"],
        turns=row["turns"],
    )


async def prune(tx: Tx, filters: Filters, dry_run: bool) -> tuple[list[str], int]:
    """The whole sessions ``filters`` name, oldest activity first, and their messages;
    deleted unless ``dry_run``. Every session is named by a condition: none given, none go."""
    params: list[Any] = []
    conditions = _where(filters, params)
    if not conditions:
        raise InvalidInput(
            "filters", "name the sessions to prune (ended or inactive before a time)"
        )
    rows = await tx.fetch(
        f"SELECT s.id, s.message_count FROM sessions s WHERE s.user_id = $1 AND "
        f"{' AND '.join(conditions)} ORDER BY s.updated_at, s.id",
        *params,
    )
    if not dry_run:
        for r in rows:
            await delete(tx, r["id"])
    return [r["id"] for r in rows], sum(r["message_count"] for r in rows)


async def size(tx: Tx) -> int:
    """The bytes of the user's rows (what a prune gives back once the database vacuums)."""
    total: int = await tx.fetchval(
        " + ".join(
            f"(SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t WHERE t.user_id = $1)"
            for table in ("sessions", "messages", "compactions", "context_blocks", "usage")
        ).join(("SELECT (", ")::bigint"))
    )
    return total

"""Export and import on SQLite: a store's facts read out as records, and written back.

The records, and the rules an import must keep, are ``records``; the export file that carries
them is ``archive``. This module is the SQL of both directions.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from threadline.storage import reading, rows, tree, validate
from threadline.storage.errors import InvalidInput, SessionExists
from threadline.storage.records import (
    KEPT_SUMMARY_IDS,
    RESTORE_LIMITS,
    BlockRecord,
    CompactionRecord,
    Header,
    ImportedSession,
    MessageRecord,
    SessionRecord,
    Sink,
    UsageRecord,
    check,
    check_blocks,
    encode,
)
from threadline.text import now


def export(conn: sqlite3.Connection, sink: Sink, session_ids: list[str] | None) -> Header:
    """Feed ``sink`` the sessions named (default: all, oldest first), all from this one
    snapshot, so an export taken while a server writes is still consistent."""
    if session_ids is None:
        session_ids = [
            r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY created_at, id")
        ]
    ids = list(dict.fromkeys(session_ids))
    for sid in ids:
        rows.session_row(conn, sid, "1")  # each must exist before anything is written
    (messages,) = conn.execute(
        "SELECT count(*) FROM messages WHERE session_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    ).fetchone()
    header = Header(exported_at=now(), sessions=len(ids), messages=messages)
    sink.begin(header, dump_blocks(conn))
    for sid in ids:
        sink.session(dump_session(conn, sid))
    sink.end()
    return header


def dump_session(conn: sqlite3.Connection, session_id: str) -> SessionRecord:
    columns = {
        "session_id": "id",
        "title": "title",
        "status": "status",
        "metadata": "metadata",
        "parent_session_id": "parent_session_id",
        "lineage": "lineage",
        "forked_from_message_id": "forked_from_message_id",
        "head_id": "(SELECT id FROM messages WHERE pk = head_pk)",
        "system_prompt": "system_prompt",
        "prompt_rendered_at": "prompt_rendered_at",
        "input_tokens": "input_tokens",
        "output_tokens": "output_tokens",
        "cost": "cost",
        "turns": "turns",
        "last_model": "last_model",
        "created_at": "created_at",
        "updated_at": "updated_at",
    }
    row = rows.session_row(conn, session_id, ", ".join(columns.values()))
    fields: dict[str, Any] = dict(zip(columns, row, strict=True))
    fields["metadata"] = _json(fields["metadata"])
    messages = [
        MessageRecord.model_construct(
            id=mid,
            parent_id=parent,
            role=role,
            content=json.loads(content) if is_json else content,
            name=name,
            metadata=_json(meta),
            created_at=created,
        )
        for mid, parent, role, content, is_json, name, meta, created in conn.execute(
            "SELECT m.id, p.id, m.role, m.content, m.is_json, m.name, m.metadata, m.created_at "
            "FROM messages m LEFT JOIN messages p ON p.pk = m.parent_pk "
            "WHERE m.session_id = ? ORDER BY m.pk",
            (session_id,),
        )
    ]
    compactions = [
        CompactionRecord.model_construct(
            summary_id=f"compaction:{pk}",
            first_id=first,
            last_id=last,
            summary=summary,
            replaced=replaced,
            created_at=created,
        )
        for pk, first, last, summary, replaced, created in conn.execute(
            "SELECT c.pk, s.id, e.id, c.summary, c.replaced, c.created_at FROM compactions c "
            "JOIN messages s ON s.pk = c.start_pk JOIN messages e ON e.pk = c.end_pk "
            "WHERE c.session_id = ? ORDER BY c.pk",
            (session_id,),
        )
    ]
    usage = [
        UsageRecord.model_construct(
            input_tokens=i, output_tokens=o, cost=cost, model=model, created_at=created
        )
        for i, o, cost, model, created in conn.execute(
            "SELECT input_tokens, output_tokens, cost, model, created_at FROM usage "
            "WHERE session_id = ? ORDER BY pk",
            (session_id,),
        )
    ]
    return SessionRecord.model_construct(
        **fields,
        messages=messages,
        compactions=compactions,
        usage=usage,
        blocks=dump_blocks(conn, session_id),
    )


def dump_blocks(conn: sqlite3.Connection, owner: str = "") -> list[BlockRecord]:
    """The blocks stored for a session, or (``owner=""``) the user-scoped ones."""
    return [
        BlockRecord.model_construct(label=label, content=content, updated_at=updated)
        for label, content, updated in conn.execute(
            "SELECT label, content, updated_at FROM context_blocks WHERE session_id = ? "
            "ORDER BY label",
            (owner,),
        )
    ]


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- import ---------------------------------------------------------------------------------


def load_session(conn: sqlite3.Connection, record: SessionRecord) -> ImportedSession:
    """Insert one exported session as it was; refuse (changing nothing) if its id is taken."""
    check(record)
    sid = record.session_id
    if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone():
        raise SessionExists(sid)
    conn.execute(
        "INSERT INTO sessions (id, title, status, metadata, parent_session_id, lineage, "
        "forked_from_message_id, system_prompt, prompt_rendered_at, input_tokens, "
        "output_tokens, cost, turns, last_model, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            sid,
            record.title,
            record.status,
            validate.metadata(record.metadata, "metadata", RESTORE_LIMITS),
            record.parent_session_id,
            record.lineage,
            record.forked_from_message_id,
            record.system_prompt,
            record.prompt_rendered_at,
            record.input_tokens,
            record.output_tokens,
            record.cost,
            record.turns,
            record.last_model,
            record.created_at,
            record.updated_at,
        ),
    )
    placed: dict[str, tuple[int, int, int]] = {}  # id -> (pk, depth, path_tokens)
    for i, m in enumerate(record.messages):
        parent_pk, depth, path_tokens = None, 0, 0
        if m.parent_id is not None:
            parent_pk, depth, path_tokens = placed[m.parent_id]
        row = encode(m, i)
        tokens = row[-1]
        pk = conn.execute(
            tree.INSERT_MESSAGE,
            (sid, m.id, parent_pk, depth + 1, path_tokens + tokens, *row, m.created_at),
        ).lastrowid
        assert pk is not None
        placed[m.id] = (pk, depth + 1, path_tokens + tokens)
    renumbered: dict[str, str] = {}
    for c in record.compactions:
        ends = [placed[c.first_id][0], placed[c.last_id][0]]
        wanted = int(c.summary_id.split(":")[1])
        taken = (
            wanted > KEPT_SUMMARY_IDS
            or conn.execute("SELECT 1 FROM compactions WHERE pk = ?", (wanted,)).fetchone()
        )
        pk = conn.execute(
            "INSERT INTO compactions (pk, session_id, start_pk, end_pk, summary, replaced, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (None if taken else wanted, sid, *ends, c.summary, c.replaced, c.created_at),
        ).lastrowid
        if taken:
            renumbered[c.summary_id] = f"compaction:{pk}"
    conn.executemany(
        "INSERT INTO usage (session_id, input_tokens, output_tokens, cost, model, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (sid, u.input_tokens, u.output_tokens, u.cost, u.model, u.created_at)
            for u in record.usage
        ],
    )
    _insert_blocks(conn, sid, record.blocks)
    head_pk = None if record.head_id is None else placed[record.head_id][0]
    conn.execute(
        "UPDATE sessions SET head_pk = ?, message_count = ?, token_estimate = ? WHERE id = ?",
        (head_pk, len(placed), reading.effective_tokens(conn, sid, head_pk), sid),
    )
    return ImportedSession(session_id=sid, messages=len(placed), renumbered=renumbered)


def block_conflicts(conn: sqlite3.Connection, blocks: list[BlockRecord]) -> list[str]:
    """Labels of user-scoped blocks this store holds with other content than ``blocks``."""
    stored = dict(conn.execute("SELECT label, content FROM context_blocks WHERE session_id = ''"))
    return [b.label for b in blocks if stored.get(b.label, b.content) != b.content]


def load_user_blocks(conn: sqlite3.Connection, blocks: list[BlockRecord]) -> int:
    """Store user-scoped blocks the store lacks; refuse if any differs from what it holds."""
    check_blocks(blocks)
    conflicts = block_conflicts(conn, blocks)
    if conflicts:
        raise InvalidInput(
            "blocks",
            f"user blocks {', '.join(conflicts)} hold other content in this store; "
            "nothing was imported",
        )
    stored = {r[0] for r in conn.execute("SELECT label FROM context_blocks WHERE session_id = ''")}
    missing = [b for b in blocks if b.label not in stored]
    _insert_blocks(conn, "", missing)
    return len(missing)


def _insert_blocks(conn: sqlite3.Connection, owner: str, blocks: list[BlockRecord]) -> None:
    conn.executemany(
        "INSERT INTO context_blocks (label, session_id, content, updated_at) VALUES (?, ?, ?, ?)",
        [(b.label, owner, b.content, b.updated_at) for b in blocks],
    )

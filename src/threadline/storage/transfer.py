"""Lossless export and import of sessions: the facts of a store, without its caches.

A session exports as its own columns (title, status, lineage, frozen prompt, usage totals,
timestamps), every message of its tree in insertion order (each naming its parent by id), its
compactions (by the ids of their first and last message and their summary id), its usage
records and its session-scoped context blocks. User-scoped blocks export once per store.
What the store derives (search text, token estimates, depths, counts) is recomputed on import,
by the same code that computes it on append, so an import reads exactly like the original.

The records are pydantic models: an import file is validated like any other input, and its
errors name the record and the field.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from threadline.config import Config, Limits
from threadline.storage import reading, rows, tree, validate
from threadline.storage.errors import InvalidInput, SessionExists
from threadline.storage.models import Content, MessageIn, Role
from threadline.text import ID_PATTERN, now

FORMAT: Literal["threadline-export"] = "threadline-export"
VERSION: Literal[1] = 1
SUMMARY_ID = r"^compaction:[1-9][0-9]{0,18}$"

# A restore must not fail because the importing store's size limits are smaller than the
# exporting one's: limits are policy for new writes, not a property of stored data.
_RESTORE_LIMITS = Limits(
    max_message_chars=2**62,
    max_batch_messages=2**62,
    max_metadata_bytes=2**62,
    max_title_chars=2**62,
)
_RESTORE = Config(limits=_RESTORE_LIMITS)


# Integers are stored as SQLite's 64-bit ones; an imported summary keeps its id only up to
# ``KEPT_SUMMARY_IDS`` (and only if free), so a file cannot push the store's numbering to its
# end (every later compaction would fail) or past what JSON readers keep exact.
MAX_INTEGER = 2**63 - 1
KEPT_SUMMARY_IDS = 2**53 - 1
Count = Annotated[int, Field(ge=0, le=MAX_INTEGER)]
Cost = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageRecord(_Record):
    id: str = Field(pattern=ID_PATTERN)
    parent_id: str | None
    role: Role
    content: Content
    name: str | None = None
    metadata: dict[str, JsonValue] | None = None
    created_at: str


class CompactionRecord(_Record):
    summary_id: str = Field(pattern=SUMMARY_ID)
    first_id: str
    last_id: str
    summary: str
    replaced: int = Field(ge=1, le=MAX_INTEGER)
    created_at: str


class UsageRecord(_Record):
    input_tokens: Count
    output_tokens: Count
    cost: Cost | None = None
    model: str | None = None
    created_at: str


class BlockRecord(_Record):
    label: str = Field(min_length=1)
    content: str
    updated_at: str


class SessionRecord(_Record):
    session_id: str = Field(pattern=ID_PATTERN)
    title: str | None
    status: Literal["active", "ended"]
    metadata: dict[str, JsonValue] | None
    parent_session_id: str | None
    lineage: Literal["fork", "split"] | None
    forked_from_message_id: str | None
    head_id: str | None
    system_prompt: str
    prompt_rendered_at: str
    input_tokens: Count
    output_tokens: Count
    cost: Cost
    turns: Count
    last_model: str | None
    created_at: str
    updated_at: str
    messages: list[MessageRecord] = []
    compactions: list[CompactionRecord] = []
    usage: list[UsageRecord] = []
    blocks: list[BlockRecord] = []


class Header(_Record):
    """The first record of every export."""

    format: Literal["threadline-export"] = FORMAT
    version: Literal[1] = VERSION
    exported_at: str
    sessions: int = Field(ge=0, le=MAX_INTEGER, description="How many sessions follow.")
    messages: int = Field(ge=0, le=MAX_INTEGER, description="How many messages they hold.")


class ImportedSession(_Record):
    session_id: str
    messages: int
    renumbered: dict[str, str] = Field(
        description="Compaction summary ids already taken in this store, and their new ids."
    )


# -- export ---------------------------------------------------------------------------------


class Sink(Protocol):
    """Where an export goes: a header and the user blocks, each session, then the end."""

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None: ...

    def session(self, record: SessionRecord) -> None: ...

    def end(self) -> None: ...


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


def check(record: SessionRecord) -> None:
    """The references inside a session record hold: every parent comes before its children,
    ids are unique, and the head, compactions and blocks name what exists."""
    sid = validate.new_session_id(record.session_id)
    _text(record, "")
    validate.metadata(record.metadata, "metadata", _RESTORE_LIMITS)
    parents: dict[str, str | None] = {}
    for i, m in enumerate(record.messages):
        if m.id in parents:
            raise InvalidInput(f"messages[{i}].id", f"{m.id!r} appears twice in session {sid!r}")
        if m.parent_id is not None and m.parent_id not in parents:
            raise InvalidInput(
                f"messages[{i}].parent_id", f"{m.parent_id!r} is not an earlier message of {sid!r}"
            )
        parents[m.id] = m.parent_id
        encode(m, i)
    seen = parents.keys()
    for i, c in enumerate(record.compactions):
        if int(c.summary_id.partition(":")[2]) > MAX_INTEGER:
            raise InvalidInput(
                f"compactions[{i}].summary_id", f"must be compaction:N, N at most {MAX_INTEGER}"
            )
        for field in ("first_id", "last_id"):
            if getattr(c, field) not in seen:
                raise InvalidInput(
                    f"compactions[{i}].{field}", f"{getattr(c, field)!r} is no message of {sid!r}"
                )
        at: str | None = c.last_id
        while at is not None and at != c.first_id:
            at = parents[at]
        if at is None:
            raise InvalidInput(f"compactions[{i}]", "first_id is not on the path to last_id")
    if record.head_id is not None and record.head_id not in seen:
        raise InvalidInput("head_id", f"{record.head_id!r} is no message of {sid!r}")
    check_blocks(record.blocks)


def encode(m: MessageRecord, index: int) -> tuple[Any, ...]:
    """The stored form of a message, as ``append_messages`` computes it (size limits aside)."""
    try:
        message = MessageIn(
            id=m.id, role=m.role, content=m.content, name=m.name, metadata=m.metadata
        )
    except ValidationError as exc:
        raise InvalidInput(f"messages[{index}]", exc.errors()[0]["msg"]) from None
    return tree.encode_message(message, index, _RESTORE)


def _text(value: Any, where: str) -> None:
    """Every string of a record is text SQLite can store: no lone surrogate (``\\ud800``),
    which JSON can carry and UTF-8 cannot."""
    if isinstance(value, str):
        validate.unicode(value, where or "record")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _text(getattr(value, name), f"{where}.{name}" if where else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            _text(key, where)
            _text(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _text(item, f"{where}[{i}]")


def check_blocks(blocks: list[BlockRecord]) -> None:
    labels: set[str] = set()
    _text(blocks, "blocks")
    for i, b in enumerate(blocks):
        if b.label in labels:
            raise InvalidInput(f"blocks[{i}].label", f"{b.label!r} appears twice")
        if "\x00" in b.content:
            raise InvalidInput(f"blocks[{i}].content", "must not contain NUL characters")
        labels.add(b.label)


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
            validate.metadata(record.metadata, "metadata", _RESTORE_LIMITS),
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

"""The export records and their rules: what a lossless export holds, on every backend.

A session exports as its own columns (title, status, lineage, frozen prompt, usage totals,
timestamps), every message of its tree in insertion order (each naming its parent by id), its
compactions (by the ids of their first and last message and their summary id), its usage
records and its session-scoped context blocks. User-scoped blocks export once per store.
What a store derives (search text, token estimates, depths, counts) is recomputed on import,
by the same code that computes it on append, so an import reads exactly like the original.

The records are pydantic models: an import file is validated like any other input, and its
errors name the record and the field. ``check`` holds the rules a record must keep beyond its
fields' (parents before children, references that resolve), before anything is written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from threadline.config import Config, Limits
from threadline.storage import validate
from threadline.storage.errors import InvalidInput
from threadline.storage.models import Content, MessageIn, Role
from threadline.text import ID_PATTERN

FORMAT: Literal["threadline-export"] = "threadline-export"
VERSION: Literal[1] = 1
SUMMARY_ID = r"^compaction:[1-9][0-9]{0,18}$"

# A restore must not fail because the importing store's size limits are smaller than the
# exporting one's: limits are policy for new writes, not a property of stored data.
RESTORE_LIMITS = Limits(
    max_message_chars=2**62,
    max_batch_messages=2**62,
    max_metadata_bytes=2**62,
    max_title_chars=2**62,
)
_RESTORE = Config(limits=RESTORE_LIMITS)


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


class Sink(Protocol):
    """Where an export goes: a header and the user blocks, each session, then the end."""

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None: ...

    def session(self, record: SessionRecord) -> None: ...

    def end(self) -> None: ...


def check(record: SessionRecord) -> None:
    """The references inside a session record hold: every parent comes before its children,
    ids are unique, and the head, compactions and blocks name what exists."""
    sid = validate.new_session_id(record.session_id)
    _text(record, "")
    validate.metadata(record.metadata, "metadata", RESTORE_LIMITS)
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
    return validate.encode_message(message, index, _RESTORE)


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

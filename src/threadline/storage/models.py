"""What goes into the store and what comes out of it."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from threadline.text import ID_PATTERN

Role = Literal["system", "user", "assistant", "tool"]
Content = str | list[JsonValue]


class MessageIn(BaseModel):
    """A message to append. ``content`` is a string or a list of JSON parts, kept as sent."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Your id for this message (makes the append idempotent); generated if omitted.",
    )
    role: Role
    content: Content
    name: str | None = Field(default=None, min_length=1, max_length=128)
    metadata: dict[str, JsonValue] | None = None


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def of(cls, values: dict[str, Any]) -> Self:
        """The model of ``values`` (every field, read back from the store, so already valid):
        ``model_construct`` without its per-field default handling, a few times faster, for
        what is built once per message read."""
        made = cls.__new__(cls)
        object.__setattr__(made, "__dict__", values)
        object.__setattr__(made, "__pydantic_fields_set__", set(values))
        object.__setattr__(made, "__pydantic_extra__", None)
        object.__setattr__(made, "__pydantic_private__", None)
        return made


class Message(_Out):
    id: str
    role: Role
    content: Content
    name: str | None = None
    metadata: dict[str, Any] | None = None
    parent_id: str | None
    created_at: str
    compacted: bool = Field(
        default=False, description="Inside a compacted range (only with include_compacted)."
    )
    summary_of: int | None = Field(
        default=None, description="On a compaction summary: how many messages it stands for."
    )
    truncated: bool = Field(default=False, description="Tool output shortened for reading.")


class SessionSummary(_Out):
    session_id: str
    title: str | None
    status: Literal["active", "ended"]
    created_at: str
    updated_at: str
    message_count: int
    token_estimate: int
    needs_compaction: bool
    parent_session_id: str | None = None


class SessionInfo(SessionSummary):
    metadata: dict[str, Any] | None = None
    lineage: Literal["fork", "split"] | None = None
    forked_from_message_id: str | None = None
    continued_in: str | None = Field(
        default=None, description="For an ended session: the session it was split into."
    )
    head_id: str | None
    branch_count: int
    compactions: int
    input_tokens: int
    output_tokens: int
    cost: float
    turns: int
    last_model: str | None = None


class SessionList(_Out):
    sessions: list[SessionSummary]
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null at the end."
    )


class AppendResult(_Out):
    session_id: str
    message_ids: list[str]
    head_id: str | None
    token_estimate: int
    needs_compaction: bool


class History(_Out):
    session_id: str
    leaf_id: str | None
    messages: list[Message]
    has_more: bool
    next_before: str | None = Field(
        description="Pass as before to read the page of older messages; null when none are left."
    )


class HistoryDelta(_Out):
    session_id: str
    revision: str = Field(description="Pass it back to read only what changes after this read.")
    messages: list[Message] = Field(description="Oldest first.")
    reset: bool = Field(
        description="The messages are the whole history (replace what you hold), not what "
        "follows it."
    )


class Branch(_Out):
    leaf_id: str
    message_count: int
    created_at: str
    preview: str
    is_head: bool


class Deleted(_Out):
    session_id: str
    messages_deleted: int
    head_id: str | None = None


class BlockUsage(_Out):
    label: str
    scope: Literal["user", "session"]
    tokens: int
    max_tokens: int
    percent: int
    usage: str = Field(description="For example 'memory: 640/1100 tokens, 58%'.")
    replaced: str | None = Field(
        default=None,
        description="After a replace: the text the block held before (to restore it).",
    )


class ContextBlock(_Out):
    label: str
    description: str
    scope: Literal["user", "session"]
    readonly: bool
    max_tokens: int
    tokens: int
    content: str


class ContextView(_Out):
    session_id: str
    system_prompt: str
    rendered_at: str
    stale: bool = Field(
        description="Blocks changed since the prompt was frozen; refresh to update."
    )
    blocks: list[ContextBlock]


class Neighbour(_Out):
    """A message next to a search hit on its path, shortened."""

    message_id: str
    role: Role
    created_at: str
    text: str


class SearchHit(_Out):
    session_id: str
    session_title: str | None
    message_id: str
    role: Role
    snippet: str
    created_at: str
    before: list[Neighbour] = Field(
        default=[], description="With context: the messages before the hit, oldest first."
    )
    after: list[Neighbour] = Field(
        default=[], description="With context: the messages after the hit, oldest first."
    )
    summary_of: int | None = Field(
        default=None,
        description="On a compaction summary (message_id 'compaction:N'): how many messages "
        "it stands for.",
    )


class SearchResults(_Out):
    hits: list[SearchHit]
    next_cursor: str | None


class CompactionPlan(_Out):
    """The exact range a compaction would replace, so a caller can summarise just that."""

    session_id: str
    first_id: str
    last_id: str
    message_count: int
    tokens: int
    previous_summary: str | None = Field(
        description="The earlier summary this compaction extends, to be updated, if any."
    )
    messages: list[Message]


class CompactionResult(_Out):
    session_id: str
    summary_id: str
    replaced: int
    first_id: str
    last_id: str
    token_estimate: int
    new_session_id: str | None = Field(default=None, description="The child session, on split.")


class UsageTotals(_Out):
    session_id: str
    input_tokens: int
    output_tokens: int
    cost: float
    turns: int


class Pruned(_Out):
    sessions: list[str] = Field(
        description="The sessions deleted (or, in a dry run, that would be)."
    )
    messages: int
    dry_run: bool
    bytes_before: int = Field(
        description="The store's size before: its file and WAL on SQLite, the user's rows on "
        "PostgreSQL."
    )
    bytes_after: int = Field(description="The same, after (a dry run: the same as before).")

"""Configuration: read once at the edge into one frozen object.

Every setting has a default, so ``Config()`` is a working configuration. The server loads a
TOML file and environment overrides into it (see ``configs/threadline.toml``); tests build
``Config`` objects directly.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from threadline.text import estimate_tokens

LABEL_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"

DEFAULT_SOUL = (
    "You are a helpful, honest assistant. You keep track of long-running work across "
    "conversations and say so when you are unsure."
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BlockSpec(_Frozen):
    """One context block: a named, size-limited piece of the agent's working memory."""

    label: str = Field(pattern=LABEL_PATTERN)
    description: str = ""
    max_tokens: int = Field(default=1000, ge=1, le=100_000)
    readonly: bool = False
    default: str = ""
    scope: Literal["user", "session"] = "session"


DEFAULT_BLOCKS = (
    BlockSpec(
        label="soul",
        description="Who you are and how you work. Read-only.",
        max_tokens=500,
        readonly=True,
        default=DEFAULT_SOUL,
        scope="user",
    ),
    BlockSpec(
        label="memory",
        description=(
            "Lasting facts about the user and their preferences, shared by every session. "
            "Add a fact here when you learn something worth remembering next time."
        ),
        max_tokens=1100,
        scope="user",
    ),
    BlockSpec(
        label="scratchpad",
        description="Notes for this thread only: the plan, open questions, progress.",
        max_tokens=800,
        scope="session",
    ),
)


class Limits(_Frozen):
    """Size limits; anything over them is refused with the limit named."""

    max_message_chars: int = Field(default=1_048_576, ge=1)
    max_batch_messages: int = Field(default=1000, ge=1)
    max_metadata_bytes: int = Field(default=16_384, ge=2)
    max_title_chars: int = Field(default=200, ge=1)
    max_query_chars: int = Field(default=1000, ge=1)
    max_query_terms: int = Field(default=32, ge=1)


class Compaction(_Frozen):
    """When a session needs compaction, and what a compaction protects."""

    threshold_tokens: int = Field(default=80_000, ge=1)
    keep_first: int = Field(default=2, ge=0)
    keep_last: int = Field(default=6, ge=0)
    keep_last_tokens: int = Field(default=8_000, ge=0)


_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = r"^\s*(\d{1,6})\s*([mhdw])\s*$"


def duration(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``2w``, ``90m`` as a timedelta; None when ``text`` is no such duration."""
    match = re.fullmatch(_DURATION, text)
    return None if match is None else timedelta(seconds=int(match[1]) * _UNITS[match[2]])


class Retention(_Frozen):
    """Pruning the server does by itself, the way ``threadline prune`` does (whole sessions,
    then VACUUM): off unless a rule is set. Durations read ``30d``, ``12h``, ``2w``, ``90m``."""

    ended_for: str | None = Field(
        default=None, description="Delete ended (split) sessions last active longer ago than this."
    )
    inactive_for: str | None = Field(
        default=None,
        description="Delete sessions not active for this long (``status`` narrows which).",
    )
    status: Literal["active", "ended"] | None = None
    every_hours: float = Field(
        default=24.0, gt=0, le=8760, description="The first pass runs at start, then this often."
    )

    @field_validator("ended_for", "inactive_for")
    @classmethod
    def _a_duration(cls, value: str | None) -> str | None:
        if value is not None and duration(value) is None:
            raise ValueError("give a number and m, h, d or w (30d, 12h, 2w, 90m)")
        return value

    @model_validator(mode="after")
    def _status_fits(self) -> Retention:
        if self.status is not None and self.inactive_for is None:
            raise ValueError("status narrows inactive_for; set inactive_for too")
        return self

    @property
    def active(self) -> bool:
        return self.ended_for is not None or self.inactive_for is not None


class Http(_Frozen):
    """Remote serving (``threadline serve --transport streamable-http|sse``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    public_url: str | None = Field(
        default=None, pattern=r"^https?://", description="How clients reach the server."
    )
    stateless: bool = False
    tokens_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_key_file: Path | None = None
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    store_capacity: int = Field(default=64, ge=1)
    store_idle_seconds: float = Field(default=300.0, gt=0)
    max_sessions_per_user: int = Field(
        default=32, ge=1, description="Open protocol sessions (2025-11-25 clients) per user."
    )
    session_idle_seconds: float = Field(
        default=600.0, gt=0, description="A protocol session with no request for this long ends."
    )
    request_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A client has this long to send a whole request, head and body; then the "
        "connection is closed.",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections at most (kept below the open-file limit); more are closed "
        "at once.",
    )
    max_connections_per_client: int = Field(
        default=100, ge=1, description="Open connections at most from one client address."
    )


class Config(_Frozen):
    """Everything threadline can be told, with defaults that work."""

    data_dir: Path | None = Field(
        default=None, description="Where stores live; default: the platform's user data directory."
    )
    database: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://",
        description="A PostgreSQL database (postgresql://...) holding every user's store, "
        "instead of a SQLite file per user in data_dir.",
    )
    blocks: tuple[BlockSpec, ...] = DEFAULT_BLOCKS
    limits: Limits = Limits()
    compaction: Compaction = Compaction()
    http: Http = Http()
    retention: Retention = Retention()
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout: float = Field(default=10.0, gt=0, le=600)
    readers: int = Field(default=2, ge=1, le=64)
    index_batch: int = Field(
        default=512,
        ge=1,
        description="While messages keep coming, a write that adds messages (not a fork) also "
        "indexes a chunk for search once this many wait.",
    )
    index_chunk: int = Field(
        default=64, ge=1, description="Messages indexed in one go (bounds the pause it causes)."
    )
    index_delay: float = Field(
        default=0.05, gt=0, le=60, description="Search indexing runs when writes pause this long."
    )

    @field_validator("blocks")
    @classmethod
    def _unique_labels(cls, blocks: tuple[BlockSpec, ...]) -> tuple[BlockSpec, ...]:
        seen: set[str] = set()
        for block in blocks:
            if block.label in seen:
                raise ValueError(f"block label {block.label!r} is declared twice")
            seen.add(block.label)
        return blocks

    @model_validator(mode="after")
    def _defaults_fit(self) -> Config:
        for block in self.blocks:
            used = estimate_tokens(block.default)
            if used > block.max_tokens:
                raise ValueError(
                    f"block {block.label!r}: default content is {used} tokens, "
                    f"over its max_tokens of {block.max_tokens}"
                )
        return self

    def block(self, label: str) -> BlockSpec | None:
        return next((b for b in self.blocks if b.label == label), None)


class ConfigError(ValueError):
    """The configuration file or environment is not valid; the message names the key."""


def load_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read the TOML file (if any), apply environment overrides, and validate once.

    Environment: ``THREADLINE_DATA_DIR`` overrides ``data_dir``, ``THREADLINE_DATABASE``
    ``database``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    if environ.get("THREADLINE_DATA_DIR"):
        raw["data_dir"] = environ["THREADLINE_DATA_DIR"]
    if environ.get("THREADLINE_DATABASE"):
        raw["database"] = environ["THREADLINE_DATABASE"]
    if "blocks" in raw and isinstance(raw["blocks"], list):
        raw["blocks"] = tuple(raw["blocks"])
    try:
        return Config.model_validate(raw)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            first = errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "(top level)"
            said = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"config {key}: {said}") from None
        raise ConfigError(f"config: {exc}") from None

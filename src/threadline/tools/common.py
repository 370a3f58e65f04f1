"""What every tool module shares: where the store comes from, error translation, notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Annotated, Any, Protocol

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from threadline.config import Config
from threadline.storage import InvalidInput, NotFound, SessionNotFound, Store, ThreadlineError
from threadline.text import ID_PATTERN

MODERN = "2026-07-28"


class Runtime(Protocol):
    """Lends the store of the user behind the current request (never from an argument)."""

    config: Config

    def store(self) -> AbstractAsyncContextManager[Store]:
        """The current user's store, held open until the block ends."""
        ...


SessionId = Annotated[
    str,
    Field(
        description="A session id (from create_session or list_sessions).",
        pattern=ID_PATTERN,
    ),
]
MessageId = Annotated[
    str, Field(description="A message id from get_history.", min_length=1, max_length=64)
]
ExpectedHead = Annotated[
    str | None,
    Field(
        description='Refuse the write (a conflict) unless the head is still this id ("": none).',
        max_length=64,
    ),
]


def guarded(head: str | None) -> dict[str, Any]:
    """An ``ExpectedHead`` argument as the store's keyword: none when omitted; ``""`` (a
    session without messages) is None to the store."""
    return {} if head is None else {"expected_head": head or None}


def hints(
    *, read_only: bool = False, destructive: bool = False, idempotent: bool = False
) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


@contextmanager
def tool_errors() -> Iterator[None]:
    """Domain errors become a ToolError the model can act on; anything else stays hidden."""
    try:
        yield
    except SessionNotFound as exc:
        raise ToolError(f"{exc}; call list_sessions to see your sessions") from None
    except ThreadlineError as exc:
        raise ToolError(str(exc)) from None


@contextmanager
def resource_errors() -> Iterator[None]:
    """A resource read's errors as protocol errors, by kind: what does not exist (or could
    not: a malformed id) is "not found" (-32602); anything else (a database that cannot
    read, a refusal) is a failed read (-32603) saying why."""
    try:
        yield
    except (NotFound, InvalidInput) as exc:
        raise ResourceNotFoundError(str(exc)) from None
    except ThreadlineError as exc:
        raise ResourceError(str(exc)) from None


@asynccontextmanager
async def using(
    runtime: Runtime, errors: Callable[[], AbstractContextManager[None]] = tool_errors
) -> AsyncIterator[Store]:
    """The current user's store for one call, with domain errors translated for the client."""
    with errors():
        async with runtime.store() as store:
            yield store


def session_uri(session_id: str, part: str = "") -> str:
    return f"threadline://sessions/{session_id}{part}"


INDEX_URI = "threadline://sessions"


async def notify(
    ctx: Context[Any, Any] | None,
    session_ids: tuple[str, ...] = (),
    parts: tuple[str, ...] = ("", "/history", "/history.json"),
    list_changed: bool = False,
) -> None:
    """Tell the user's subscribers which resources a write changed: the server's bus takes
    each event to listeners of both protocol eras (``server/subscriptions.py``); a
    2025-11-25 caller also hears of a changed list on its own connection."""
    if ctx is None:
        return
    uris = [INDEX_URI] + [session_uri(s, p) for s in session_ids for p in parts]
    for uri in uris:
        await ctx.notify_resource_updated(uri)
    if list_changed:
        await ctx.notify_resources_changed()
        if ctx.protocol_version != MODERN:
            await ctx.session.send_resource_list_changed()

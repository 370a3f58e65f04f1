"""What every tool module shares: where the store comes from, error translation, notifications."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Annotated, Any, Protocol

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from threadline.config import Config
from threadline.storage import SessionNotFound, Store, ThreadlineError

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
        description="The session (thread) id, as returned by create_session or list_sessions.",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
    ),
]
MessageId = Annotated[
    str, Field(description="A message id from get_history.", min_length=1, max_length=64)
]


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
    try:
        yield
    except ThreadlineError as exc:
        raise ResourceNotFoundError(str(exc)) from None


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


class Subscriptions:
    """Legacy (2025-11-25) ``resources/subscribe`` state, per client connection.

    The SDK makes a new ``ServerSession`` per request and exposes no public handle on the
    connection behind it, so subscriptions are keyed by its private ``_connection``; entries
    go away with the connection.
    """

    def __init__(self) -> None:
        self._by_connection: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    @staticmethod
    def _key(session: Any) -> Any:
        return getattr(session, "_connection", session)

    def add(self, session: Any, uri: str) -> None:
        self._by_connection.setdefault(self._key(session), set()).add(uri)

    def remove(self, session: Any, uri: str) -> None:
        self._by_connection.get(self._key(session), set()).discard(uri)

    def wants(self, session: Any, uri: str) -> bool:
        return uri in self._by_connection.get(self._key(session), ())


SUBSCRIPTIONS = Subscriptions()


async def notify(
    ctx: Context[Any, Any] | None,
    session_ids: tuple[str, ...] = (),
    parts: tuple[str, ...] = ("", "/history", "/history.json"),
    list_changed: bool = False,
) -> None:
    """Tell subscribers which resources a write changed, on both protocol eras."""
    if ctx is None:
        return
    uris = [INDEX_URI] + [session_uri(s, p) for s in session_ids for p in parts]
    for uri in uris:
        await ctx.notify_resource_updated(uri)
    if list_changed:
        await ctx.notify_resources_changed()
    if ctx.protocol_version == MODERN:
        return
    session = ctx.session
    for uri in uris:
        if SUBSCRIPTIONS.wants(session, uri):
            await session.send_resource_updated(uri)
    if list_changed:
        await session.send_resource_list_changed()

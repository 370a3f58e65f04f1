"""What every tool module shares: where the store comes from, error translation, notifications."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Annotated, Any, Protocol

import anyio.lowlevel
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from threadline.config import Config
from threadline.storage import InvalidInput, NotFound, SessionNotFound, Store, ThreadlineError
from threadline.text import ID_PATTERN

log = logging.getLogger(__name__)

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


def identity(token: AccessToken) -> tuple[str, str]:
    """(issuer, subject) of a verified token: the user, as threadline keys it."""
    claims = token.claims or {}
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not token.subject:
        raise ValueError("a verified token without issuer or subject")
    return issuer, token.subject


def current_user() -> tuple[str, str] | None:
    """The user behind the current request; None where there is no auth (stdio, local)."""
    token = get_access_token()
    return None if token is None else identity(token)


class UserScopedBus:
    """The 2026-07-28 ``subscriptions/listen`` bus, delivering each event only to listeners of
    the user whose request published it: another user's writes are never announced, so their
    session ids cannot be probed through notifications."""

    def __init__(self) -> None:
        self._listeners: dict[object, tuple[tuple[str, str] | None, Callable[[Any], None]]] = {}

    async def publish(self, event: Any) -> None:
        user = current_user()
        listeners = [fn for owner, fn in list(self._listeners.values()) if owner == user]
        if not listeners:  # the usual case: nobody listens, and a write pays nothing
            return
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # one broken stream must not starve the others
                log.exception("subscription listener raised; continuing")
        await anyio.lowlevel.checkpoint()  # let the streams drain between events

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        key = object()
        self._listeners[key] = (current_user(), listener)
        return lambda: self._listeners.pop(key, None) and None


class Subscriptions:
    """Legacy (2025-11-25) ``resources/subscribe`` state: per client connection, its user and
    the URIs it watches.

    The SDK makes a new ``ServerSession`` per request and exposes no public handle on the
    connection behind it, so subscriptions are keyed by its private ``_connection``; entries
    go away with the connection.
    """

    def __init__(self) -> None:
        self._by_connection: weakref.WeakKeyDictionary[
            Any, tuple[tuple[str, str] | None, set[str]]
        ] = weakref.WeakKeyDictionary()

    @staticmethod
    def _key(session: Any) -> Any:
        return getattr(session, "_connection", session)

    def add(self, session: Any, uri: str, at_most: int) -> bool:
        """Watch ``uri``, unless the connection already watches ``at_most`` others."""
        _, uris = self._by_connection.setdefault(self._key(session), (current_user(), set()))
        if uri not in uris and len(uris) >= at_most:
            return False
        uris.add(uri)
        return True

    def remove(self, session: Any, uri: str) -> None:
        entry = self._by_connection.get(self._key(session))
        if entry is not None:
            entry[1].discard(uri)

    def watchers(self, uri: str) -> list[Any]:
        """The connections of the current user that watch ``uri``."""
        user = current_user()
        return [
            connection
            for connection, (owner, uris) in list(self._by_connection.items())
            if owner == user and uri in uris
        ]


SUBSCRIPTIONS = Subscriptions()


async def notify(
    ctx: Context[Any, Any] | None,
    session_ids: tuple[str, ...] = (),
    parts: tuple[str, ...] = ("", "/history", "/history.json"),
    list_changed: bool = False,
) -> None:
    """Tell the user's subscribers which resources a write changed, on both protocol eras."""
    if ctx is None:
        return
    uris = [INDEX_URI] + [session_uri(s, p) for s in session_ids for p in parts]
    for uri in uris:
        await ctx.notify_resource_updated(uri)
        for connection in SUBSCRIPTIONS.watchers(uri):
            try:
                await connection.send_resource_updated(uri)
            except Exception as exc:  # a connection going away must not fail the write
                log.debug("could not notify a subscriber of %s: %r", uri, exc)
    if list_changed:
        await ctx.notify_resources_changed()
        if ctx.protocol_version != MODERN:
            await ctx.session.send_resource_list_changed()

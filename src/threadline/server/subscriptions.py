"""Resource notifications, on both protocol eras, only ever to the user who made the change.

2026-07-28 clients listen with ``subscriptions/listen``: the SDK hands every event a tool
publishes (``ctx.notify_resource_updated``) to the server's bus, ``UserScopedBus``. 2025-11-25
clients subscribe to URIs with ``resources/subscribe`` (``register_legacy``); the same bus
sends them ``resources/updated`` for what they watch. Either way an event reaches only the
connections of the user whose request published it: another user's writes are never
announced, so their session ids cannot be probed through notifications.

Replicas on one database pass events to each other (``Relay``: ``UserStores`` over the
database's announcements): an event published on one replica reaches the listeners of the
same user on every replica. Users are named there by their key (``paths.user_key``), never by
their identity.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import anyio.lowlevel
from mcp import MCPError
from mcp.server import MCPServer, NotificationOptions, ServerRequestContext
from mcp.server.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams
from mcp_types import INVALID_PARAMS, INVALID_REQUEST

from threadline.paths import LOCAL_USER, user_key
from threadline.server.auth import current_user
from threadline.storage import SessionNotFound, StoreError
from threadline.text import ID_CHARS
from threadline.tools import Runtime
from threadline.tools.common import INDEX_URI

log = logging.getLogger(__name__)

# What a 2025-11-25 client may subscribe to: the index, or one of its own sessions' resources.
_SUBSCRIBABLE = re.compile(rf"threadline://sessions/({ID_CHARS})(/history(\.json)?|/context)?")
MAX_SUBSCRIPTIONS = 100  # per connection

User = tuple[str, str] | None


class LegacySubscriptions:
    """``resources/subscribe`` state: per client connection, its user and the URIs it watches.

    The SDK makes a new ``ServerSession`` per request and exposes no public handle on the
    connection behind it, so subscriptions are keyed by its private ``_connection``; entries
    go away with the connection.
    """

    def __init__(self) -> None:
        self._by_connection: weakref.WeakKeyDictionary[Any, tuple[User, set[str]]] = (
            weakref.WeakKeyDictionary()
        )

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

    def watchers(self, uri: str, user: str) -> list[Any]:
        """The connections of ``user`` (a key) that watch ``uri``."""
        return [
            connection
            for connection, (owner, uris) in list(self._by_connection.items())
            if key_of(owner) == user and uri in uris
        ]


class Relay(Protocol):
    """What carries events to the other replicas, and theirs to this one's bus."""

    async def send(self, user: str, event: ServerEvent) -> None: ...

    def attach(self, bus: UserScopedBus) -> None: ...


def key_of(user: User) -> str:
    """A user as replicas name each other's: the key of their store."""
    return LOCAL_USER if user is None else user_key(user)


def encode_event(origin: str, user: str, event: ServerEvent) -> str:
    """An event as one replica tells the others (``decode_event`` reads it)."""
    uri = event.uri if isinstance(event, ResourceUpdated) else None
    return json.dumps({"origin": origin, "user": user, "kind": type(event).__name__, "uri": uri})


def decode_event(message: str) -> tuple[str, str, ServerEvent] | None:
    """(origin, user, event) of an ``encode_event`` message; None for anything else."""
    try:
        found = json.loads(message)
        kind = _EVENTS[found["kind"]]
        event = ResourceUpdated(uri=found["uri"]) if kind is ResourceUpdated else kind()
        return str(found["origin"]), str(found["user"]), event
    except (ValueError, KeyError, TypeError):
        return None


_EVENTS: dict[str, Any] = {
    kind.__name__: kind
    for kind in (ResourceUpdated, ResourcesListChanged, ToolsListChanged, PromptsListChanged)
}


class UserScopedBus:
    """The SDK's subscription bus, delivering each event only to the listeners of the user
    whose request published it, and resource updates to that user's legacy subscribers too;
    with a ``relay``, to that user's listeners on the other replicas as well."""

    def __init__(self) -> None:
        self._listeners: dict[object, tuple[str, Callable[[ServerEvent], None]]] = {}
        self.legacy = LegacySubscriptions()
        self.relay: Relay | None = None

    async def publish(self, event: ServerEvent) -> None:
        user = key_of(current_user())
        await self.deliver(user, event)
        if self.relay is not None:
            try:  # the write is done; a notification that cannot travel must not fail it
                await self.relay.send(user, event)
            except StoreError as exc:
                log.warning("a resource event was not passed to the other replicas: %s", exc)

    async def deliver(self, user: str, event: ServerEvent) -> None:
        """Hand ``event`` to the listeners of ``user`` (a key) on this replica."""
        listeners = [fn for owner, fn in list(self._listeners.values()) if owner == user]
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # one broken stream must not starve the others
                log.exception("subscription listener raised; continuing")
        if isinstance(event, ResourceUpdated):
            for connection in self.legacy.watchers(event.uri, user):
                try:
                    await connection.send_resource_updated(event.uri)
                except Exception as exc:  # a connection going away must not fail the write
                    log.debug("could not notify a subscriber of %s: %r", event.uri, exc)
        if listeners:  # the usual case is nobody listening, and then a write pays nothing
            await anyio.lowlevel.checkpoint()  # let the streams drain between events

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        key = object()
        self._listeners[key] = (key_of(current_user()), listener)
        return lambda: self._listeners.pop(key, None) and None


def register_legacy(mcp: MCPServer[Any], runtime: Runtime, bus: UserScopedBus) -> None:
    """2025-11-25 clients subscribe with resources/subscribe and expect listChanged flags.

    Only threadline's URIs of the user's own sessions are taken, at most
    ``MAX_SUBSCRIPTIONS`` per connection: the connection keeps every URI it is given."""
    low = mcp._lowlevel_server

    async def subscribe(
        ctx: ServerRequestContext[Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        uri = str(params.uri)
        if uri != INDEX_URI:
            match = _SUBSCRIBABLE.fullmatch(uri) if len(uri) <= 200 else None
            if match is None:
                raise MCPError(
                    INVALID_PARAMS,
                    "uri: only threadline://sessions and threadline://sessions/ID (with "
                    "/history, /history.json or /context) can be subscribed to",
                )
            try:
                async with runtime.store() as store:
                    await store.get_session(match[1])
            except SessionNotFound:
                raise MCPError(INVALID_PARAMS, f"uri: no such resource: {uri}") from None
        if not bus.legacy.add(ctx.session, uri, MAX_SUBSCRIPTIONS):
            raise MCPError(
                INVALID_REQUEST,
                f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection; unsubscribe first",
            )
        return EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        bus.legacy.remove(ctx.session, str(params.uri))
        return EmptyResult()

    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    low.create_initialization_options = functools.partial(  # type: ignore[method-assign]
        low.create_initialization_options,
        NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True),
    )

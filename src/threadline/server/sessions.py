"""A cap on each user's open protocol sessions (the 2025-11-25 protocol's ``Mcp-Session-Id``).

The SDK's session manager caps open sessions for all users together (10,000, each kept until
it idles out), so one user could fill the table and lock every other user out. In front of it,
``SessionCap`` counts each user's sessions: a request that would open one more than
``per_user`` gets a 429 with a sentence saying why and what to do, before the SDK sees it;
other users are not affected. It mirrors what the manager does without reaching into it: a
session counts from the response that hands out its id until the client ends it (``DELETE``),
the server forgets it (a 404 for its id), or it has had no request in flight for
``idle_seconds`` (the manager's own idle timeout, which threadline sets to the same value).

Requests of the 2026-07-28 protocol (sessionless) and stateless servers pass through
untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.server.auth import current_user

log = logging.getLogger(__name__)

User = tuple[str, str] | None


@dataclass
class _Session:
    user: User
    in_flight: int = 0
    last: float = field(default_factory=anyio.current_time)


class SessionCap:
    """ASGI wrapper of the SDK's session manager app: at most ``per_user`` open sessions."""

    def __init__(self, app: ASGIApp, per_user: int, idle_seconds: float) -> None:
        self.app = app
        self.per_user = per_user
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, _Session] = {}
        self._opening: dict[User, int] = {}

    def open_sessions(self, user: User) -> int:
        """The user's open sessions, and the opening requests in flight."""
        now = anyio.current_time()
        for sid, session in list(self._sessions.items()):
            idle = session.in_flight == 0 and now - session.last >= self.idle_seconds
            if idle:
                del self._sessions[sid]
        mine = sum(1 for s in self._sessions.values() if s.user == user)
        return mine + self._opening.get(user, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        sid = headers.get("mcp-session-id")
        if sid is not None:
            await self._within(sid, scope, receive, send)
            return
        version = headers.get("mcp-protocol-version")
        opens = scope["method"] == "POST" and (
            version is None or version in HANDSHAKE_PROTOCOL_VERSIONS
        )
        if not opens:
            await self.app(scope, receive, send)
            return
        user = current_user()  # set by the SDK's auth middleware, around this app
        if self.open_sessions(user) >= self.per_user:
            log.warning("refused a new protocol session: the user has %d open", self.per_user)
            await _refusal(self.per_user, self.idle_seconds)(scope, receive, send)
            return
        self._opening[user] = self._opening.get(user, 0) + 1
        opened: list[str] = []

        def settled() -> None:
            """The opening request no longer counts as one (it became a session, or not)."""
            if opened or self._opening.get(user) is None:
                return
            self._opening[user] -= 1
            if not self._opening[user]:
                del self._opening[user]

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                given = Headers(raw=message.get("headers", [])).get("mcp-session-id")
                if given is not None:
                    settled()
                    opened.append(given)
                    self._sessions[given] = _Session(user, in_flight=1)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            settled()
            for given in opened:
                self._finished(given)

    async def _within(self, sid: str, scope: Scope, receive: Receive, send: Send) -> None:
        """A request in a session: it keeps the session alive while in flight."""
        session = self._sessions.get(sid)
        if session is None:
            await self.app(scope, receive, send)
            return
        session.in_flight += 1
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._finished(sid)
            gone = status == [404] or (scope["method"] == "DELETE" and status and status[0] < 400)
            if gone:
                self._sessions.pop(sid, None)

    def _finished(self, sid: str) -> None:
        session = self._sessions.get(sid)
        if session is not None:
            session.in_flight -= 1
            session.last = anyio.current_time()


def _refusal(per_user: int, idle_seconds: float) -> Response:
    message = (
        f"too many open MCP sessions: you have {per_user}, the limit per user "
        f"(http.max_sessions_per_user); end one (DELETE with its Mcp-Session-Id) or wait until "
        f"one has been idle for {idle_seconds:g} s"
    )
    error = ErrorData(code=INVALID_REQUEST, message=message)
    body = JSONRPCError(jsonrpc="2.0", id=None, error=error)
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=429,
        media_type="application/json",
        headers={"Retry-After": str(max(1, round(idle_seconds)))},
    )

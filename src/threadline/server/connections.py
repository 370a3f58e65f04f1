"""Slow and greedy HTTP clients: a deadline for each request and a bound on connections.

uvicorn times out idle keep-alive connections but not a request that is still arriving: a
client that never finishes its headers, or its body, held its connection (and a file
descriptor) forever, and a few hundred such clients starved real users. ``protocol(limits)``
is uvicorn's h11 protocol with three bounds, checked at the socket, before any application
code runs:

- a client has ``request_seconds`` to send a whole request, head and body, from its first
  byte (or from the connection's opening); then the connection is closed (an application
  reading the body sees the client disconnect);
- at most ``max_connections`` connections are open (never more than half the process's
  open-file limit, which the stores need too), and at most ``per_client`` from one address;
  a connection past either bound is closed as soon as it is accepted, before it is read;
- what is refused or timed out is logged at most once per ``LOG_EVERY`` seconds, with a count.

A long response (an SSE stream) is not a slow request: the deadline covers what the client
sends, not what the server sends. A reverse proxy in front should still bound request and
idle times and connections per client, as it sees the real client addresses.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LOG_EVERY = 10.0


@dataclass
class Limits:
    """The bounds, and the counts one server's connections share."""

    request_seconds: float
    max_connections: int
    per_client: int
    by_client: Counter[str] = field(default_factory=Counter)
    _said: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            self.max_connections = max(1, min(self.max_connections, soft // 2))

    def note(self, what: str) -> None:
        """Log ``what`` happened, at most once per ``LOG_EVERY`` seconds."""
        now = time.monotonic()
        since, count = self._said.get(what, (0.0, 0))
        if now - since >= LOG_EVERY:
            log.warning("%s (%d time(s) in the last %.0f s)", what, count + 1, LOG_EVERY)
            self._said[what] = (now, 0)
        else:
            self._said[what] = (since, count + 1)


class _Bounded(H11Protocol):
    limits: Limits  # set on the class ``protocol`` makes

    _deadline: asyncio.TimerHandle | None = None
    _client: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        client = self.client[0] if self.client else ""
        if len(self.connections) > limits.max_connections:
            limits.note(f"connection closed: {limits.max_connections} connections are open")
            transport.close()
            return
        if limits.by_client[client] >= limits.per_client:
            limits.note(f"connection closed: {limits.per_client} open from one client")
            transport.close()
            return
        self._client = client
        limits.by_client[client] += 1
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._client is not None:
            self.limits.by_client[self._client] -= 1
            if self.limits.by_client[self._client] <= 0:
                del self.limits.by_client[self._client]
            self._client = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _owed(self) -> bool:
        """Whether the client still owes part of a request (its head or its body)."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return True
        return state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _watch(self) -> None:
        if self.transport.is_closing():
            return
        if not self._owed():
            self._disarm()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.request_seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._owed() and not self.transport.is_closing():
            self.limits.note(
                f"connection closed: no whole request within {self.limits.request_seconds:g} s"
            )
            self.transport.close()


def protocol(limits: Limits) -> type[H11Protocol]:
    """uvicorn's h11 protocol, bounded by ``limits`` (pass it as ``uvicorn.Config(http=...)``)."""
    return type("BoundedH11Protocol", (_Bounded,), {"limits": limits})

"""Streamable HTTP and SSE: many users, bearer tokens or JWTs, one store per user.

The server keeps no conversation state (everything is in the users' SQLite files), so with
``stateless=True`` any replica behind a load balancer can serve any request.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from threadline.config import Config, Http
from threadline.paths import redacted
from threadline.server.app import build_server
from threadline.server.connections import Limits, protocol
from threadline.server.sessions import SessionCap
from threadline.server.stores import UserStores

log = logging.getLogger(__name__)

Transport = Literal["streamable-http", "sse"]
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HttpOptions:
    """How to serve beside the settings (``config.http``: host, port, limits): the transport,
    the endpoint's path, and who verifies tokens (None: no auth)."""

    transport: Transport = "streamable-http"
    path: str = "/mcp"
    verifier: TokenVerifier | None = None
    issuer_url: str | None = None


def public_url(http: Http) -> str:
    """Where clients reach the server (advertised in 401 challenges and metadata)."""
    if http.public_url:
        return http.public_url.rstrip("/")
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"http://{host}:{http.port}"


def security(http: Http) -> TransportSecuritySettings:
    """Host and Origin checks for every bind (the SDK turns them on only for loopback)."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    for host in http.allow_hosts:
        hosts += [host, f"{host}:*"]
    origins += list(http.allow_origins)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def build_http_app(options: HttpOptions, config: Config, data_dir: Path) -> Starlette:
    """The whole HTTP application; its lifespan opens nothing and closes every user store."""
    http = config.http
    stores = UserStores(
        data_dir,
        config,
        authenticated=options.verifier is not None,
        capacity=http.store_capacity,
        idle_seconds=http.store_idle_seconds,
    )
    auth = None
    if options.verifier is not None:
        # Protected-resource metadata names the authorization server that issues tokens: a
        # JWT issuer does; static tokens have none, so nothing is advertised for them (a
        # client would look for an OAuth server that does not exist).
        auth = AuthSettings(
            issuer_url=AnyHttpUrl(options.issuer_url or public_url(http)),
            resource_server_url=(
                AnyHttpUrl(public_url(http) + options.path) if options.issuer_url else None
            ),
            validate_token_resource=False,
        )
    relay = stores if config.database is not None else None
    mcp = build_server(stores, token_verifier=options.verifier, auth=auth, relay=relay)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})  # unauthenticated: says nothing else

    mcp.custom_route("/healthz", methods=["GET"])(healthz)

    if options.transport == "sse":
        app = mcp.sse_app(
            sse_path="/sse",
            message_path="/messages/",
            max_request_body_size=http.max_body_bytes,
            transport_security=security(http),
            host=http.host,
        )
    else:
        app = mcp.streamable_http_app(
            streamable_http_path=options.path,
            stateless_http=http.stateless,
            max_request_body_size=http.max_body_bytes,
            session_idle_timeout=http.session_idle_seconds,
            transport_security=security(http),
            host=http.host,
        )
        if not http.stateless:
            for route in app.routes:
                if isinstance(route, Route) and route.path == options.path:
                    route.app = SessionCap(
                        route.app, http.max_sessions_per_user, http.session_idle_seconds
                    )
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[None]:
        async with stores.running(), inner(application):
            yield

    app.router.lifespan_context = lifespan
    app.state.stores = stores
    return app


def server_config(app: Starlette, config: Config, **extra: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``: its h11 protocol bounded for slow and greedy clients
    (``connections``); ``extra`` overrides (tests serve on port 0)."""
    http = config.http
    limits = Limits(http.request_seconds, http.max_connections, http.max_connections_per_client)
    settings: dict[str, Any] = {"host": http.host, "port": http.port, **extra}
    return uvicorn.Config(app, log_level="warning", http=protocol(limits), **settings)


async def serve_http(options: HttpOptions, config: Config, data_dir: Path) -> None:
    app = build_http_app(options, config, data_dir)
    where = public_url(config.http) + ("/sse" if options.transport == "sse" else options.path)
    data = redacted(config.database) if config.database else data_dir
    log.warning("threadline serving %s at %s (data: %s)", options.transport, where, data)
    await uvicorn.Server(server_config(app, config)).serve()

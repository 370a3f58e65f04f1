"""The remote side: real uvicorn on a loopback port, real MCP clients, raw HTTP for status codes.

Every test builds a fresh app (``build_http_app``) over its own ``tmp_path`` and serves it on a
free 127.0.0.1 port; users are static tokens from a tokens file or signed JWTs.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp import Client, MCPError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.applications import Starlette

from tests.helpers import HEX_DB, INITIALIZE, LEGACY, MCP_HEADERS, MODERN, call, dump, eventually
from threadline import Config
from threadline.config import Http
from threadline.paths import STATIC_ISSUER, user_file
from threadline.server.auth import JWTVerifier, StaticTokenVerifier, TokenFile
from threadline.server.http import HttpOptions, Transport, build_http_app, server_config
from threadline.server.stores import UserStores

# -- serving ----------------------------------------------------------------------------------


@dataclass
class Served:
    base: str
    port: int
    app: Starlette
    data_dir: Path

    @property
    def mcp(self) -> str:
        return self.base + "/mcp"

    @property
    def stores(self) -> UserStores:
        stores: UserStores = self.app.state.stores
        return stores


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Starts uvicorn on a free loopback port (in this fixture's task group); stops at teardown."""
    servers: list[uvicorn.Server] = []
    async with anyio.create_task_group() as tasks:

        async def start(setup: Setup | HttpOptions, config: Config | None = None) -> Served:
            if isinstance(setup, HttpOptions):
                setup = Setup(setup)
            config = config or Config()
            if setup.http:  # this test's HTTP settings, over the config's
                settings = {**config.http.model_dump(), **setup.http}
                config = config.model_copy(update={"http": Http.model_validate(settings)})
            app = build_http_app(setup.options, config, tmp_path)
            server = uvicorn.Server(
                server_config(app, config, port=0, lifespan="on", timeout_graceful_shutdown=3)
            )
            servers.append(server)
            tasks.start_soon(server.serve)
            assert await eventually(lambda: server.started, 10), "uvicorn did not start"
            port = server.servers[0].sockets[0].getsockname()[1]
            return Served(f"http://127.0.0.1:{port}", port, app, tmp_path)

        try:
            yield start
        finally:
            for server in servers:
                server.should_exit = True


@pytest.fixture
def tokens(tmp_path: Path) -> TokenFile:
    return TokenFile(tmp_path / "tokens.json")


@dataclass(frozen=True)
class Setup:
    """A server to start: how it serves, and its settings (``config.http`` fields)."""

    options: HttpOptions
    http: dict[str, Any] = dataclasses.field(default_factory=dict)


def static(tokens: TokenFile, transport: Transport = "streamable-http", **http: Any) -> Setup:
    return Setup(HttpOptions(transport=transport, verifier=StaticTokenVerifier(tokens)), http)


def static_file(data_dir: Path, user: str) -> Path:
    return user_file(data_dir, (STATIC_ISSUER, user))


def user_files(data_dir: Path) -> list[str]:
    """Every file under the users directory (stores, WAL and shared-memory files alike)."""
    users = data_dir / "users"
    return sorted(str(p.relative_to(users)) for p in users.rglob("*")) if users.exists() else []


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


@asynccontextmanager
async def connect(
    served: Served,
    token: str | None,
    mode: str = "auto",
    transport: str = "streamable-http",
) -> AsyncIterator[Client]:
    """A real MCP client over HTTP with a bearer token."""
    if transport == "sse":
        async with Client(sse_client(served.base + "/sse", headers=bearer(token)), mode=mode) as c:
            yield c
        return
    http = httpx2.AsyncClient(headers=bearer(token), timeout=httpx2.Timeout(10, read=60))
    async with http, Client(streamable_http_client(served.mcp, http_client=http), mode=mode) as c:
        yield c


async def post_initialize(
    http: httpx2.AsyncClient,
    url: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> httpx2.Response:
    return await http.post(
        url,
        content=json.dumps(INITIALIZE).encode() if body is None else body,
        headers={**MCP_HEADERS, **bearer(token), **(headers or {})},
    )


def assert_unauthorized(response: httpx2.Response, what: str) -> None:
    assert response.status_code == 401, (what, response.status_code, response.text)
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer "), (what, challenge)
    assert 'error="invalid_token"' in challenge, (what, challenge)


# -- 1. authentication failures ---------------------------------------------------------------


async def test_requests_without_a_valid_static_token_get_401_and_create_no_store(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    _, alice = tokens.add("alice")
    served = await serve(static(tokens))
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            cases: list[tuple[str, str, dict[str, str]]] = [
                ("no token", served.mcp, {}),
                ("wrong token", served.mcp, bearer("tl_" + secrets.token_urlsafe(32))),
                ("token with one character changed", served.mcp, bearer(one_char_changed(alice))),
                ("bearer without a token", served.mcp, {"Authorization": "Bearer"}),
                ("basic scheme", served.mcp, {"Authorization": f"Basic {alice}"}),
                ("token as ?access_token=", f"{served.mcp}?access_token={alice}", {}),
                ("token as ?token=", f"{served.mcp}?token={alice}", {}),
                ("token in a cookie", served.mcp, {"Cookie": f"access_token={alice}"}),
                ("token in X-Access-Token", served.mcp, {"X-Access-Token": alice}),
            ]
            for what, url, headers in cases:
                assert_unauthorized(await post_initialize(http, url, headers=headers), what)
                response = await http.get(url, headers={"Accept": "text/event-stream", **headers})
                assert_unauthorized(response, f"GET, {what}")
            assert user_files(tmp_path) == []
            # The same token in the header is accepted: the failures above were the token's place.
            assert (await post_initialize(http, served.mcp, alice)).status_code == 200
            assert user_files(tmp_path) == []  # initialize alone touches no store


async def test_a_real_client_with_a_wrong_token_is_refused_and_creates_no_store(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    tokens.add("alice")
    served = await serve(static(tokens))
    with anyio.fail_after(20):
        for mode in ("auto", "legacy"):
            with pytest.raises(BaseExceptionGroup) as caught:
                async with connect(served, "tl_wrong", mode=mode) as client:
                    await client.call_tool("create_session", {"title": "should not exist"})
            assert caught.group_contains(MCPError, depth=None), mode
    assert user_files(tmp_path) == []


async def test_a_static_token_reaches_its_users_own_file(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    _, alice = tokens.add("alice")
    served = await serve(static(tokens))
    with anyio.fail_after(20):
        async with connect(served, alice) as client:
            info = await call(client, "create_session", title="mine")
    expected = static_file(tmp_path, "alice")
    assert expected.parent == tmp_path / "users" and HEX_DB.match(expected.name)
    assert expected.name in user_files(tmp_path)
    assert {f for f in user_files(tmp_path) if f.endswith(".db")} == {expected.name}
    rows = dump(expected)
    assert ("sessions", info["session_id"]) in [row[:2] for row in rows]
    assert stat.S_IMODE((tmp_path / "users").stat().st_mode) == 0o700
    for name in user_files(tmp_path):  # the store and its -wal and -shm files
        assert stat.S_IMODE((tmp_path / "users" / name).stat().st_mode) == 0o600, name


async def test_a_token_revoked_while_the_server_runs_stops_working_at_once(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    _, carol = tokens.add("carol")
    _, dave = tokens.add("dave")
    served = await serve(static(tokens))
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            assert (await post_initialize(http, served.mcp, carol)).status_code == 200
            async with connect(served, dave, mode="legacy") as client:
                await call(client, "create_session", title="dave's")
                before = user_files(tmp_path)
                # Revoked through another TokenFile, as `threadline token revoke` would do it.
                assert [e.user for e in TokenFile(tokens.path).revoke("carol")] == ["carol"]
                assert [e.user for e in TokenFile(tokens.path).revoke("dave")] == ["dave"]
                assert_unauthorized(await post_initialize(http, served.mcp, carol), "carol")
                assert_unauthorized(await post_initialize(http, served.mcp, dave), "dave")
                # The open protocol session of dave is refused too.
                with pytest.raises(MCPError):
                    await client.call_tool("create_session", {"title": "after revoke"})
            assert user_files(tmp_path) == before
            assert [f for f in before if f.endswith(".db")] == [static_file(tmp_path, "dave").name]


# -- JWT ----------------------------------------------------------------------------------------

ISSUER, AUDIENCE = "https://idp.example", "threadline"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The signing key, and another key nobody trusts."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@dataclass
class JWTSetup:
    key_file: Path
    sign: Callable[..., str]  # sign(claims, key=None, algorithm=None)
    algorithm: str
    wrong_key: Any
    public_pem: bytes


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def jwt_setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    rsa_keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> JWTSetup:
    algorithm: str = request.param
    key_file = tmp_path / "jwt.key"
    if algorithm == "HS256":
        secret = secrets.token_hex(32).encode()
        key_file.write_bytes(secret + b"\n")
        key: Any = secret
        wrong: Any = secrets.token_hex(32).encode()
        public = b""
    else:
        private, other = (
            rsa_keys
            if algorithm == "RS256"
            else (ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_file.write_bytes(public)
        key, wrong = private, other

    def sign(claims: dict[str, Any], key_: Any = None, algorithm_: str | None = None) -> str:
        return jwt.encode(claims, key if key_ is None else key_, algorithm=algorithm_ or algorithm)

    return JWTSetup(key_file, sign, algorithm, wrong, public)


def claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice@example",
        "iat": now,
        "exp": now + 600,
    }
    base.update(override)
    return {k: v for k, v in base.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT made by hand (PyJWT refuses to HMAC with a PEM key)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def one_char_changed(token: str) -> str:
    """The token with its last character replaced by a different one (never by itself)."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def tampered(token: str, **changes: Any) -> str:
    """The same signature over a payload that says something else."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


def jwt_options(setup: JWTSetup) -> HttpOptions:
    return HttpOptions(verifier=JWTVerifier(ISSUER, AUDIENCE, setup.key_file), issuer_url=ISSUER)


async def test_invalid_jwts_get_401_and_create_no_store(
    serve: Serve, jwt_setup: JWTSetup, tmp_path: Path
) -> None:
    sign = jwt_setup.sign
    now = int(time.time())
    bad = {
        "expired": sign(claims(iat=now - 7200, exp=now - 60)),
        "wrong audience": sign(claims(aud="someone-else")),
        "audience list without ours": sign(claims(aud=["a", "b"])),
        "no audience": sign(claims(aud=None)),
        "wrong issuer": sign(claims(iss="https://evil.example")),
        "issuer differing in case": sign(claims(iss=ISSUER.upper())),
        "no issuer": sign(claims(iss=None)),
        "missing sub": sign(claims(sub=None)),
        "empty sub": sign(claims(sub="")),
        "numeric sub": sign(claims(sub=12345)),
        "no expiry": sign(claims(exp=None)),
        "not valid yet": sign(claims(nbf=now + 3600)),
        "bad signature (another key)": sign(claims(), jwt_setup.wrong_key),
        "payload edited after signing": tampered(sign(claims()), sub="bob@example"),
        "alg=none": jwt.encode(claims(), None, algorithm="none"),
        "alg=none, signature kept": one_char_changed(tampered(sign(claims()))),
        "garbage": "not.a.jwt",
    }
    if jwt_setup.algorithm != "HS256":
        # Algorithm confusion: HS256 "signed" with the public key as the shared secret.
        bad["HS256 with the public key as secret"] = hand_signed(
            {"alg": "HS256", "typ": "JWT"}, claims(), jwt_setup.public_pem
        )
        # An algorithm of another key type, with a garbage signature (was a 500).
        other = {"RS256": "ES256", "ES256": "RS256"}[jwt_setup.algorithm]
        header = _b64(json.dumps({"alg": other, "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims()).encode())
        bad[f"{other} for a {jwt_setup.algorithm} key"] = f"{header}.{payload}.{_b64(b'x' * 64)}"
    else:
        bad["HS256 secret used for another algorithm"] = sign(claims(), None, "HS512")
    served = await serve(jwt_options(jwt_setup))
    with anyio.fail_after(30):
        async with httpx2.AsyncClient() as http:
            for what, token in bad.items():
                assert_unauthorized(await post_initialize(http, served.mcp, token), what)
            good = sign(claims())
            assert_unauthorized(
                await post_initialize(http, f"{served.mcp}?access_token={good}"), "query"
            )
            assert user_files(tmp_path) == []
            assert (await post_initialize(http, served.mcp, good)).status_code == 200
    assert user_files(tmp_path) == []


async def test_a_valid_jwt_reaches_the_file_of_its_issuer_and_subject(
    serve: Serve, jwt_setup: JWTSetup, tmp_path: Path
) -> None:
    served = await serve(jwt_options(jwt_setup))
    with anyio.fail_after(20):
        async with connect(served, jwt_setup.sign(claims())) as client:
            sid = (await call(client, "create_session", title="jwt"))["session_id"]
        # A later token of the same user (another iat/exp/jti) reaches the same store.
        later = jwt_setup.sign(claims(iat=int(time.time()) - 5, jti="x", extra="ignored"))
        async with connect(served, later, mode="legacy") as client:
            listed = await call(client, "list_sessions")
    assert [s["session_id"] for s in listed["sessions"]] == [sid]
    expected = user_file(tmp_path, (ISSUER, "alice@example"))
    assert {f for f in user_files(tmp_path) if f.endswith(".db")} == {expected.name}
    assert expected != user_file(tmp_path, (STATIC_ISSUER, "alice@example"))
    assert ("sessions", sid) in [row[:2] for row in dump(expected)]


# -- 2. cross-user isolation --------------------------------------------------------------------

A_MESSAGE = "alice-message-1"


def probes(sid: str, mid: str) -> list[tuple[str, dict[str, Any]]]:
    """Every call that names a session, with the session (and a message) of the victim."""
    note = [{"role": "user", "content": "bob was here"}]
    return [
        ("get_session", {"session_id": sid}),
        ("rename_session", {"session_id": sid, "title": "pwned"}),
        ("rename_session", {"session_id": sid, "title": "pwned", "metadata": {"owner": "bob"}}),
        ("delete_session", {"session_id": sid}),
        ("fork_session", {"session_id": sid}),
        ("fork_session", {"session_id": sid, "message_id": mid, "title": "stolen"}),
        ("record_usage", {"session_id": sid, "input_tokens": 1, "output_tokens": 2, "cost": 1.0}),
        ("append_messages", {"session_id": sid, "messages": note}),
        ("append_messages", {"session_id": sid, "messages": note, "parent_id": mid}),
        ("append_messages", {"session_id": sid, "messages": note, "new_root": True}),
        ("append_messages", {"session_id": sid, "messages": [{**note[0], "id": mid}]}),
        ("get_history", {"session_id": sid}),
        ("get_history", {"session_id": sid, "leaf_id": mid, "include_branches": True}),
        ("get_history", {"session_id": sid, "before": mid, "include_compacted": True}),
        ("set_head", {"session_id": sid, "message_id": mid}),
        ("delete_messages", {"session_id": sid, "message_id": mid}),
        ("compact_session", {"session_id": sid, "summary": "bob's summary", "keep_last": 1}),
        ("compact_session", {"session_id": sid, "summary": "bob's summary", "split": True}),
        ("compact_session", {"session_id": sid}),
        ("update_context", {"session_id": sid, "label": "scratchpad", "content": "bob"}),
        (
            "update_context",
            {"session_id": sid, "label": "memory", "content": "bob", "mode": "append"},
        ),
        ("get_context", {"session_id": sid}),
        ("get_context", {"session_id": sid, "refresh": True}),
        ("session_search", {"query": "zanzibar", "session_id": sid}),
        ("session_search", {"query": "alice", "session_id": sid, "role": "user"}),
    ]


RESOURCE_PARTS = ("", "/history", "/history.json", "/context")


def normalised(value: Any, sid: str, mid: str) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return text.replace(sid, "<session>").replace(mid, "<message>")


async def outcome(action: Callable[[], Awaitable[Any]]) -> tuple[str, Any]:
    """What a call answered, as comparable data: the result, or the protocol error."""
    try:
        result = await action()
    except MCPError as exc:
        return "error", (exc.error.code, exc.error.message, exc.error.data)
    if hasattr(result, "is_error"):
        texts = [getattr(c, "text", repr(c)) for c in result.content]
        return "tool", (result.is_error, texts, result.structured_content)
    return "ok", result.model_dump(mode="json", exclude={"meta"})


async def seed_alice(client: Client) -> tuple[list[str], dict[str, Any]]:
    """Alice's sessions (messages and branches, context, usage, a fork, a compaction)."""
    s1 = await call(
        client,
        "create_session",
        title="alice secret plans",
        metadata={"owner": "alice"},
        messages=[{"id": A_MESSAGE, "role": "user", "content": "alice: meet in zanzibar"}],
    )
    sid = s1["session_id"]
    await call(client, "append_messages", session_id=sid, messages=[
        {"id": "alice-message-2", "role": "assistant", "content": "zanzibar noted"},
    ])  # fmt: skip
    await call(client, "append_messages", session_id=sid, parent_id=A_MESSAGE, messages=[
        {"id": "alice-message-3", "role": "assistant", "content": "alternative zanzibar reply"},
    ])  # fmt: skip
    await call(client, "update_context", session_id=sid, label="scratchpad", content="alice notes")
    await call(client, "update_context", session_id=sid, label="memory",
               content="alice likes tea", mode="append")  # fmt: skip
    await call(client, "record_usage", session_id=sid, input_tokens=100, output_tokens=50,
               cost=0.5, model="m")  # fmt: skip
    await call(client, "get_context", session_id=sid, refresh=True)
    fork = await call(client, "fork_session", session_id=sid, title="alice fork")
    long = await call(client, "create_session", title="alice long", messages=[
        {"role": "user", "content": f"alice zanzibar day {i}"} for i in range(12)
    ])  # fmt: skip
    await call(client, "compact_session", session_id=long["session_id"], summary="alice gist",
               keep_last=2)  # fmt: skip
    ids = [sid, fork["session_id"], long["session_id"]]
    views = {s: await call(client, "get_history", session_id=s, include_branches=True) for s in ids}
    return ids, views


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_another_users_session_ids_are_exactly_as_unknown_as_random_ones(
    serve: Serve, tokens: TokenFile, tmp_path: Path, mode: str
) -> None:
    _, alice = tokens.add("alice")
    _, bob = tokens.add("bob")
    served = await serve(static(tokens))
    alice_file = static_file(tmp_path, "alice")
    with anyio.fail_after(40):
        async with connect(served, alice, mode=mode) as a:
            alice_ids, alice_views = await seed_alice(a)
        before = dump(alice_file)
        async with connect(served, bob, mode=mode) as b:
            compared = 0
            for sid in alice_ids:
                for tool, args in probes(sid, A_MESSAGE):
                    other_sid, other_mid = secrets.token_urlsafe(12), "m-" + secrets.token_hex(8)
                    other = json.loads(
                        json.dumps(args).replace(sid, other_sid).replace(A_MESSAGE, other_mid)
                    )
                    kind_r, random_ = await outcome(lambda t=tool, o=other: b.call_tool(t, o))
                    kind_a, real = await outcome(lambda t=tool, a=args: b.call_tool(t, a))
                    assert kind_r == kind_a == "tool", (tool, args, real)
                    assert real[0] is True, (tool, args, real)  # an error, as for an unknown id
                    assert normalised(real, sid, A_MESSAGE) == normalised(
                        random_, other_sid, other_mid
                    ), (tool, args)
                    compared += 1
                for part in RESOURCE_PARTS:
                    other_sid = secrets.token_urlsafe(12)
                    uri = f"threadline://sessions/{sid}{part}"
                    random_ = await outcome(
                        lambda p=part, o=other_sid: b.read_resource(f"threadline://sessions/{o}{p}")
                    )
                    real = await outcome(lambda u=uri: b.read_resource(u))
                    assert real[0] == "error", (uri, real)
                    assert normalised(real, sid, A_MESSAGE) == normalised(
                        random_, other_sid, A_MESSAGE
                    ), uri
                    compared += 1
                other_sid = secrets.token_urlsafe(12)
                random_ = await outcome(
                    lambda o=other_sid: b.get_prompt("resume_session", {"session_id": o})
                )
                real = await outcome(
                    lambda s=sid: b.get_prompt("resume_session", {"session_id": s})
                )
                assert real[0] == "error", real
                assert normalised(real, sid, A_MESSAGE) == normalised(random_, other_sid, A_MESSAGE)
                compared += 1
            assert compared == len(alice_ids) * (len(probes("s", "m")) + len(RESOURCE_PARTS) + 1)

            # Nothing of alice's is visible to bob by listing or searching.
            assert (await call(b, "list_sessions"))["sessions"] == []
            for query in ("zanzibar", "alice", "tea", "gist", "secret plans"):
                assert (await call(b, "session_search", query=query))["hits"] == [], query
            index = await b.read_resource("threadline://sessions")
            assert json.loads(index.contents[0].text)["sessions"] == []  # type: ignore[union-attr]

            # Bob may use alice's id for his own session: it is his, and hers is untouched.
            mine = await call(b, "create_session", session_id=alice_ids[0], title="bob's own")
            assert mine["session_id"] == alice_ids[0] and mine["message_count"] == 0
            listed = await call(b, "list_sessions")
            assert [(s["session_id"], s["title"]) for s in listed["sessions"]] == [
                (alice_ids[0], "bob's own")
            ]
    assert dump(alice_file) == before
    with anyio.fail_after(20):
        async with connect(served, alice, mode=mode) as a:
            for sid in alice_ids:
                again = await call(a, "get_history", session_id=sid, include_branches=True)
                assert again == alice_views[sid]
            titles = {s["title"] for s in (await call(a, "list_sessions"))["sessions"]}
            assert titles == {"alice secret plans", "alice fork", "alice long"}
    assert dump(alice_file) == before
    stores = {f for f in user_files(tmp_path) if f.endswith(".db")}
    assert stores == {alice_file.name, static_file(tmp_path, "bob").name}


async def test_another_users_protocol_session_id_is_not_found(
    serve: Serve, tokens: TokenFile
) -> None:
    _, alice = tokens.add("alice")
    _, bob = tokens.add("bob")
    served = await serve(static(tokens))
    call_body = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "list_sessions", "arguments": {}},
    }
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            response = await post_initialize(http, served.mcp, alice)
            assert response.status_code == 200
            session = response.headers["mcp-session-id"]
            headers = {**MCP_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
            hijack = await http.post(served.mcp, json=call_body, headers={**headers, **bearer(bob)})
            assert hijack.status_code == 404, hijack.text
            delete = await http.delete(served.mcp, headers={**headers, **bearer(bob)})
            assert delete.status_code == 404, delete.text
            await http.post(
                served.mcp,
                json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers={**headers, **bearer(alice)},
            )
            own = await http.post(served.mcp, json=call_body, headers={**headers, **bearer(alice)})
            assert own.status_code == 200, own.text


async def test_another_users_sse_session_is_not_found(serve: Serve, tokens: TokenFile) -> None:
    _, alice = tokens.add("alice")
    _, bob = tokens.add("bob")
    served = await serve(static(tokens, transport="sse"))
    with anyio.fail_after(20):
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=60)) as http:
            stream_headers = {"Accept": "text/event-stream", **bearer(alice)}
            async with http.stream("GET", served.base + "/sse", headers=stream_headers) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()  # not `async for ... break`: that closes the stream
                line = ""
                while not line.startswith("data: /messages/"):
                    line = await anext(lines)
                endpoint = served.base + line.removeprefix("data: ")
                unknown = re.sub(r"session_id=\w+", "session_id=" + secrets.token_hex(16), endpoint)
                answers = []
                for url, token in ((endpoint, bob), (unknown, bob), (unknown, alice)):
                    answer = await http.post(url, json=INITIALIZE, headers=bearer(token))
                    answers.append((answer.status_code, answer.text))
                assert answers == [(404, "Could not find session")] * 3
                own = await http.post(endpoint, json=INITIALIZE, headers=bearer(alice))
                assert own.status_code == 202


async def test_another_users_writes_are_not_announced_to_a_listener(
    serve: Serve, tokens: TokenFile
) -> None:
    _, alice = tokens.add("alice")
    _, bob = tokens.add("bob")
    served = await serve(static(tokens))
    with anyio.fail_after(20):
        async with connect(served, alice) as a, connect(served, bob) as b:
            alice_sid = (await call(a, "create_session", title="a"))["session_id"]
            bob_sid = (await call(b, "create_session", title="b"))["session_id"]
            random_sid = secrets.token_urlsafe(12)
            watched = [
                f"threadline://sessions/{sid}{part}"
                for sid in (alice_sid, random_sid)
                for part in RESOURCE_PARTS
            ]
            mine = f"threadline://sessions/{bob_sid}/history"
            async with b.listen(
                resource_subscriptions=[*watched, mine], resources_list_changed=True
            ) as events:
                note = [{"role": "user", "content": "alice writes"}]
                await call(a, "create_session", title="alice's second")
                await call(a, "append_messages", session_id=alice_sid, messages=note)
                await call(a, "update_context", session_id=alice_sid, label="scratchpad",
                           content="alice")  # fmt: skip
                await call(a, "rename_session", session_id=alice_sid, title="renamed")
                # Then bob writes: his own event arrives after anything alice's writes caused.
                await call(b, "append_messages", session_id=bob_sid, messages=note)
                seen: list[str] = []
                async for event in events:
                    seen.append(getattr(event, "uri", repr(event)))
                    if seen[-1] == mine:
                        break
            assert seen == [mine]


# -- 3. both protocol eras, stateless, SSE ------------------------------------------------------

ERAS = [
    pytest.param("streamable-http", False, "auto", MODERN, id="streamable-stateful-modern"),
    pytest.param("streamable-http", False, "legacy", LEGACY, id="streamable-stateful-legacy"),
    pytest.param("streamable-http", True, "auto", MODERN, id="streamable-stateless-modern"),
    pytest.param("streamable-http", True, "legacy", LEGACY, id="streamable-stateless-legacy"),
    pytest.param("sse", False, "legacy", LEGACY, id="sse-legacy"),
    pytest.param("sse", False, "auto", MODERN, id="sse-auto"),
]


@pytest.mark.parametrize(("transport", "stateless", "mode", "version"), ERAS)
async def test_a_round_trip_works_over_every_transport_and_era_with_auth(
    serve: Serve,
    tokens: TokenFile,
    tmp_path: Path,
    transport: str,
    stateless: bool,
    mode: str,
    version: str,
) -> None:
    _, alice = tokens.add("alice")
    served = await serve(static(tokens, transport=transport, stateless=stateless))
    turns = [
        {"id": "q1", "role": "user", "content": "Plan a trip to Kyoto"},
        {"id": "r1", "role": "assistant", "content": [{"type": "text", "text": "Temples 🎋"}]},
    ]
    with anyio.fail_after(30):
        async with connect(served, alice, mode=mode, transport=transport) as client:
            assert client.protocol_version == version
            sid = (await call(client, "create_session", title="Kyoto"))["session_id"]
            appended = await call(client, "append_messages", session_id=sid, messages=turns)
            assert appended["message_ids"] == ["q1", "r1"]
            history = await call(client, "get_history", session_id=sid)
            assert [(m["id"], m["role"], m["content"]) for m in history["messages"]] == [
                (t["id"], t["role"], t["content"]) for t in turns
            ]
            markdown = await client.read_resource(f"threadline://sessions/{sid}/history")
            assert "Plan a trip to Kyoto" in markdown.contents[0].text  # type: ignore[union-attr]
        # A second connection (any replica, any era) sees the same thread.
        async with connect(served, alice, mode=mode, transport=transport) as client:
            info = await call(client, "get_session", session_id=sid)
            assert (info["title"], info["message_count"]) == ("Kyoto", 2)
        async with httpx2.AsyncClient() as http:
            endpoint = served.base + ("/sse" if transport == "sse" else "/mcp")
            response = await http.get(endpoint, headers={"Accept": "text/event-stream"})
            assert_unauthorized(response, f"{transport} without a token")
            if transport == "sse":
                posted = await http.post(
                    served.base + "/messages/?session_id=" + secrets.token_hex(16),
                    json=INITIALIZE,
                )
                assert_unauthorized(posted, "sse message without a token")
    assert {f for f in user_files(tmp_path) if f.endswith(".db")} == {
        static_file(tmp_path, "alice").name
    }


# -- 4. Host and Origin -------------------------------------------------------------------------

PUBLIC = {
    "host": "0.0.0.0",
    "allow_hosts": ("threadline.example",),
    "allow_origins": ("https://chat.example",),
}


def host_origin_cases(port: int, public: bool) -> list[tuple[str, dict[str, str], int]]:
    """(what, headers, expected status with a valid token)."""
    ok, misdirected, forbidden = 200, 421, 403
    return [
        ("loopback host with port", {"Host": f"127.0.0.1:{port}"}, ok),
        ("localhost", {"Host": f"localhost:{port}"}, ok),
        ("ipv6 loopback", {"Host": f"[::1]:{port}"}, ok),
        ("loopback origin", {"Origin": f"http://127.0.0.1:{port}"}, ok),
        ("localhost origin", {"Origin": f"http://localhost:{port}"}, ok),
        ("evil host", {"Host": "evil.example"}, misdirected),
        ("evil host with port", {"Host": f"evil.example:{port}"}, misdirected),
        ("rebinding name", {"Host": f"127.0.0.1.nip.io:{port}"}, misdirected),
        ("rebinding name, no port", {"Host": "127.0.0.1.nip.io"}, misdirected),
        ("suffix of an allowed name", {"Host": "threadline.example.evil.example"}, misdirected),
        ("prefix of an allowed name", {"Host": "evilthreadline.example"}, misdirected),
        ("evil origin", {"Origin": "http://evil.example"}, forbidden),
        ("null origin", {"Origin": "null"}, forbidden),
        ("https loopback lookalike", {"Origin": "http://127.0.0.1.nip.io"}, forbidden),
        ("allowed origin over http", {"Origin": "http://chat.example"}, forbidden),
        ("public name", {"Host": "threadline.example"}, ok if public else misdirected),
        (
            "public name with port",
            {"Host": "threadline.example:443"},
            ok if public else misdirected,
        ),
        ("allowed origin", {"Origin": "https://chat.example"}, ok if public else forbidden),
        (
            "public name and allowed origin",
            {"Host": "threadline.example", "Origin": "https://chat.example"},
            ok if public else misdirected,
        ),
        (
            "public name and evil origin",
            {"Host": "threadline.example", "Origin": "http://evil.example"},
            forbidden if public else misdirected,
        ),
    ]


@pytest.mark.parametrize("public", [False, True], ids=["loopback-bind", "0.0.0.0-allow-list"])
async def test_host_and_origin_are_checked_on_every_bind(
    serve: Serve, tokens: TokenFile, tmp_path: Path, public: bool
) -> None:
    _, alice = tokens.add("alice")
    served = await serve(static(tokens, **(PUBLIC if public else {})))
    with anyio.fail_after(30):
        async with httpx2.AsyncClient() as http:
            for what, headers, expected in host_origin_cases(served.port, public):
                response = await post_initialize(http, served.mcp, alice, headers)
                assert response.status_code == expected, (what, response.text)
                if expected == 200:
                    assert response.headers.get("mcp-session-id"), what
            wrong_type = await post_initialize(
                http, served.mcp, alice, {"Content-Type": "text/plain"}
            )
            assert wrong_type.status_code == 400
    assert user_files(tmp_path) == []


@pytest.mark.parametrize("public", [False, True], ids=["loopback-bind", "0.0.0.0-allow-list"])
async def test_host_and_origin_are_checked_for_sse_too(
    serve: Serve, tokens: TokenFile, public: bool
) -> None:
    _, alice = tokens.add("alice")
    served = await serve(static(tokens, transport="sse", **(PUBLIC if public else {})))
    sse_headers = {"Accept": "text/event-stream", **bearer(alice)}
    with anyio.fail_after(30):
        async with httpx2.AsyncClient() as http:
            for what, headers, expected in host_origin_cases(served.port, public):
                if expected == 200:
                    continue  # an accepted GET /sse streams; the round trip test covers it
                response = await http.get(served.base + "/sse", headers={**sse_headers, **headers})
                assert response.status_code == expected, (what, response.text)
                posted = await http.post(
                    served.base + "/messages/?session_id=" + secrets.token_hex(16),
                    json=INITIALIZE,
                    headers={**bearer(alice), **headers},
                )
                assert posted.status_code == expected, (what, posted.text)


# -- 5. request body limit ----------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid initialize request of exactly ``size`` bytes (trailing JSON whitespace)."""
    body = json.dumps(INITIALIZE).encode()
    return body + b" " * (size - len(body))


async def test_a_body_over_the_limit_gets_413(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    _, alice = tokens.add("alice")
    limit = 64 * 1024
    served = await serve(static(tokens, max_body_bytes=limit))
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            at_limit = await post_initialize(http, served.mcp, alice, body=padded(limit))
            assert at_limit.status_code == 200
            over = await post_initialize(http, served.mcp, alice, body=padded(limit + 1))
            assert over.status_code == 413, over.text

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
                body = padded(limit + 1)
                for i in range(0, len(body), 8192):
                    yield body[i : i + 8192]

            streamed = await http.post(
                served.mcp, content=chunks(), headers={**MCP_HEADERS, **bearer(alice)}
            )
            assert streamed.status_code == 413, streamed.text
    assert user_files(tmp_path) == []


async def test_the_default_body_limit_is_4_mib(serve: Serve, tokens: TokenFile) -> None:
    _, alice = tokens.add("alice")
    served = await serve(static(tokens))
    assert Http().max_body_bytes == 4 * 1024 * 1024
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            over = await post_initialize(http, served.mcp, alice, body=padded(4 * 1024 * 1024 + 1))
            assert over.status_code == 413, over.text


async def test_the_sse_message_endpoint_has_the_body_limit_too(
    serve: Serve, tokens: TokenFile
) -> None:
    _, alice = tokens.add("alice")
    limit = 64 * 1024
    served = await serve(static(tokens, transport="sse", max_body_bytes=limit))
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            over = await http.post(
                served.base + "/messages/?session_id=" + secrets.token_hex(16),
                content=padded(limit + 1),
                headers={**MCP_HEADERS, **bearer(alice)},
            )
            assert over.status_code == 413, over.text


# -- 6. /healthz --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_healthz_answers_without_a_token_and_says_nothing_else(
    serve: Serve, tokens: TokenFile, tmp_path: Path, transport: str
) -> None:
    tokens.add("alice")
    served = await serve(static(tokens, transport=transport))
    with anyio.fail_after(20):
        async with httpx2.AsyncClient() as http:
            for headers in ({}, bearer("tl_wrong"), bearer(None)):
                response = await http.get(served.base + "/healthz", headers=headers)
                assert response.status_code == 200
                assert response.json() == {"status": "ok"}
                assert response.content == b'{"status":"ok"}'
                assert set(response.headers) <= {"date", "server", "content-length", "content-type"}
                assert "www-authenticate" not in response.headers
    assert user_files(tmp_path) == []


# -- 7. the store cache -------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def own_threads() -> list[str]:
    """Threads other than anyio's pooled workers (shared by every store, idle ones linger)."""
    return sorted(t.name for t in threading.enumerate() if t.name != "AnyIO worker thread")


async def test_the_store_cache_stays_bounded_and_closes_idle_stores(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    users = {f"user{i}": tokens.add(f"user{i}")[1] for i in range(8)}
    served = await serve(static(tokens, store_capacity=3, store_idle_seconds=0.3))
    stores = served.stores
    with anyio.fail_after(40):
        baseline_fds, baseline_threads = open_fds(), own_threads()
        sessions: dict[str, str] = {}
        peak = 0
        for user, token in users.items():
            async with connect(served, token) as client:
                info = await call(client, "create_session", title=f"{user}'s thread")
                peak = max(peak, stores.open_count)
                assert stores.open_count <= 3, user
                sessions[user] = info["session_id"]
                note = {"role": "user", "content": f"{user} wrote this"}
                await call(
                    client, "append_messages", session_id=info["session_id"], messages=[note]
                )
                peak = max(peak, stores.open_count)
                assert stores.open_count <= 3, user
        assert peak >= 1
        await anyio.sleep(1.0)
        assert stores.open_count == 0
        assert await eventually(lambda: open_fds() <= baseline_fds + 2, 3), (
            open_fds(),
            baseline_fds,
        )
        # No thread per store: only anyio's shared worker pool (idle workers linger 10 s).
        assert own_threads() == baseline_threads

        for user, token in users.items():
            async with connect(served, token, mode="legacy") as client:
                listed = await call(client, "list_sessions")
                assert [s["session_id"] for s in listed["sessions"]] == [sessions[user]]
                history = await call(client, "get_history", session_id=sessions[user])
                assert [m["content"] for m in history["messages"]] == [f"{user} wrote this"]
                assert stores.open_count <= 3
    assert len({f for f in user_files(tmp_path) if f.endswith(".db")}) == 8


async def test_concurrent_users_beyond_the_cache_capacity_get_no_errors(
    serve: Serve, tokens: TokenFile
) -> None:
    users = {f"user{i}": tokens.add(f"user{i}")[1] for i in range(8)}
    served = await serve(static(tokens, store_capacity=2, store_idle_seconds=0.05))
    errors: list[str] = []
    sessions: dict[str, str] = {}
    with anyio.fail_after(60):
        for user, token in users.items():
            async with connect(served, token) as client:
                sessions[user] = (await call(client, "create_session", title=user))["session_id"]

        async def work(user: str, worker: int) -> None:
            async with connect(served, users[user]) as client:
                for turn in range(5):
                    message = {"id": f"{user}-{worker}-{turn}", "role": "user",
                               "content": f"{user} turn {worker}.{turn}"}  # fmt: skip
                    for tool, args in (
                        ("append_messages", {"session_id": sessions[user], "messages": [message]}),
                        ("get_history", {"session_id": sessions[user], "limit": 5}),
                        ("list_sessions", {}),
                    ):
                        result = await client.call_tool(tool, args)
                        if result.is_error:
                            errors.append(f"{user} {tool}: {result.content[0].text}")  # type: ignore[union-attr]

        async with anyio.create_task_group() as tasks:
            for user in users:
                for worker in range(3):
                    tasks.start_soon(work, user, worker)
        assert served.stores.open_count <= 2
        for user, token in users.items():
            async with connect(served, token) as client:
                history = await call(client, "get_history", session_id=sessions[user], limit=500)
                assert sorted(m["id"] for m in history["messages"]) == sorted(
                    f"{user}-{w}-{t}" for w in range(3) for t in range(5)
                )
    assert errors == []


async def test_stores_released_together_are_evicted_without_error(tmp_path: Path) -> None:
    """Three calls of three users end at once with one slot: two evictions overlap."""
    stores = UserStores(tmp_path, Config(), authenticated=True, capacity=1, idle_seconds=300)
    release = anyio.Event()
    held: list[str] = []
    errors: list[str] = []

    async def hold(user: str) -> None:
        token = AccessToken(token="t", client_id=user, scopes=[], subject=user,
                            claims={"iss": STATIC_ISSUER, "sub": user})  # fmt: skip
        auth_context_var.set(AuthenticatedUser(token))
        try:
            async with stores.store() as store:
                await store.list_sessions()
                held.append(user)
                await release.wait()
        except Exception as exc:
            errors.append(repr(exc))

    with anyio.fail_after(20):
        async with stores.running():
            async with anyio.create_task_group() as tasks:
                for user in ("u1", "u2", "u3"):
                    tasks.start_soon(hold, user)
                assert await eventually(lambda: len(held) == 3, 10)
                assert stores.open_count == 3  # a store in use is never closed
                release.set()
            assert errors == []
            assert stores.open_count == 1


async def test_the_auth_challenge_points_at_the_public_url(
    serve: Serve, jwt_setup: JWTSetup
) -> None:
    setup = Setup(
        jwt_options(jwt_setup), {"host": "0.0.0.0", "public_url": "https://threadline.example/"}
    )
    served = await serve(setup)
    async with httpx2.AsyncClient() as http:
        response = await post_initialize(http, served.mcp)
        metadata = await http.get(f"{served.base}/.well-known/oauth-protected-resource/mcp")
    assert_unauthorized(response, "no token")
    challenge = response.headers["www-authenticate"]
    assert "https://threadline.example/.well-known/oauth-protected-resource/mcp" in challenge
    assert "0.0.0.0" not in challenge
    assert [s.rstrip("/") for s in metadata.json()["authorization_servers"]] == [ISSUER]


async def test_static_tokens_advertise_no_authorization_server(
    serve: Serve, tokens: TokenFile
) -> None:
    """Static tokens come from `threadline token add`, not from an OAuth server: a 401 must
    not send a client looking for one (its metadata would answer 404)."""
    tokens.add("alice")
    served = await serve(static(tokens, public_url="https://threadline.example/"))
    async with httpx2.AsyncClient() as http:
        response = await post_initialize(http, served.mcp)
        metadata = await http.get(f"{served.base}/.well-known/oauth-protected-resource/mcp")
    assert_unauthorized(response, "no token")
    assert "resource_metadata" not in response.headers["www-authenticate"]
    assert metadata.status_code == 404


# -- hardening (issue 13) ---------------------------------------------------------------------


async def test_one_user_at_the_session_cap_is_refused_while_others_are_served(
    serve: Serve, tokens: TokenFile
) -> None:
    _, alice = tokens.add("alice")
    _, bob = tokens.add("bob")
    served = await serve(static(tokens), Config(http=Http(max_sessions_per_user=3)))
    with anyio.fail_after(30):
        async with httpx2.AsyncClient(timeout=10) as http:
            opened = []
            for _ in range(3):
                response = await post_initialize(http, served.mcp, alice)
                assert response.status_code == 200, (len(opened), response.text)
                opened.append(response.headers["mcp-session-id"])

            refused = await post_initialize(http, served.mcp, alice)
            assert refused.status_code == 429
            message = refused.json()["error"]["message"]
            assert message.startswith("too many open MCP sessions: you have 3, the limit per user")
            assert "DELETE" in message and refused.headers["retry-after"] == "600"
            assert (await post_initialize(http, served.mcp, bob)).status_code == 200
            async with connect(served, alice) as client:  # 2026-07-28 opens no session
                assert (await call(client, "list_sessions"))["sessions"] == []

            session = {"Mcp-Session-Id": opened[0], "MCP-Protocol-Version": LEGACY}
            ended = await http.delete(served.mcp, headers={**bearer(alice), **session})
            assert ended.status_code < 400
            assert (await post_initialize(http, served.mcp, alice)).status_code == 200
            assert (await post_initialize(http, served.mcp, alice)).status_code == 429


async def test_a_session_that_idles_out_frees_its_place(serve: Serve, tokens: TokenFile) -> None:
    _, alice = tokens.add("alice")
    config = Config(http=Http(max_sessions_per_user=1, session_idle_seconds=0.5))
    served = await serve(static(tokens), config)
    with anyio.fail_after(30):
        async with httpx2.AsyncClient(timeout=10) as http:
            first = await post_initialize(http, served.mcp, alice)
            assert first.status_code == 200
            assert (await post_initialize(http, served.mcp, alice)).status_code == 429
            await anyio.sleep(0.8)
            assert (await post_initialize(http, served.mcp, alice)).status_code == 200
            gone = await http.post(
                served.mcp,
                content=b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}',
                headers={
                    **MCP_HEADERS, **bearer(alice),
                    "Mcp-Session-Id": first.headers["mcp-session-id"],
                    "MCP-Protocol-Version": LEGACY,
                },
            )  # fmt: skip
            assert gone.status_code == 404  # the SDK ended it too


async def _slow(port: int, what: bytes) -> anyio.abc.SocketStream:
    """A connection from another loopback address that sends ``what`` and nothing more."""
    stream = await anyio.connect_tcp("127.0.0.1", port, local_host="127.0.0.2")
    await stream.send(what)
    return stream


async def _closed_by_server(stream: anyio.abc.SocketStream) -> bool:
    try:
        await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return True
    return False


async def test_slow_clients_are_cut_off_and_real_users_are_still_served(
    serve: Serve, tokens: TokenFile
) -> None:
    _, alice = tokens.add("alice")
    limits = Http(request_seconds=1.0, max_connections_per_client=20)
    served = await serve(static(tokens), Config(http=limits))
    head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # headers that never finish
    body = (  # a signed-in request whose body never finishes
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\n"
        b"Authorization: Bearer " + alice.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"js'
    )
    with anyio.fail_after(30):
        slow = [await _slow(served.port, head if i % 2 else body) for i in range(20)]
        past_the_bound = [await _slow(served.port, head) for _ in range(5)]
        try:
            for stream in past_the_bound:  # closed at once, before the deadline
                with anyio.fail_after(0.9):
                    assert await _closed_by_server(stream)
            started = anyio.current_time()
            async with connect(served, alice) as client:  # a real user, meanwhile
                assert (await call(client, "list_sessions"))["sessions"] == []
            for stream in slow:
                assert await _closed_by_server(stream)
            assert anyio.current_time() - started < 5
        finally:
            for stream in [*slow, *past_the_bound]:
                await stream.aclose()


async def test_a_store_that_cannot_be_made_names_no_server_path(
    serve: Serve, tokens: TokenFile, tmp_path: Path
) -> None:
    _, alice = tokens.add("alice")
    (tmp_path / "users").write_text("not a directory")  # alice's store cannot be created
    served = await serve(static(tokens))
    with anyio.fail_after(20):
        async with connect(served, alice) as client:
            result = await client.call_tool("list_sessions", {})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "cannot create the data directory" in text, text
    assert str(tmp_path) not in text and "/users" not in text and "\n" not in text, text

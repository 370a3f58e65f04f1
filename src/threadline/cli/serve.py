"""``threadline serve``, ``threadline token`` and ``threadline demo``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

import anyio
from pydantic import ValidationError

from threadline.cli.common import Commands, Env, UsageError, add_common
from threadline.config import Config, Http
from threadline.storage import Store
from threadline.storage.schema import make_directory

log = logging.getLogger("threadline")


def add_parsers(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the MCP server (stdio for desktop hosts; streamable-http or sse for remote)",
        description="Run the threadline MCP server. Over stdio nothing but the protocol is "
        "written to stdout; logs go to stderr. Over HTTP, every request needs a bearer token "
        "(--tokens-file or --jwt-*), except on a loopback address or with --no-auth.",
    )
    add_common(serve)
    serve.set_defaults(run=_serve)
    serve.add_argument(
        "--transport",
        choices=["stdio", "streamable-http", "sse"],
        default="stdio",
        help="how clients connect (default: stdio)",
    )
    http = serve.add_argument_group("HTTP (streamable-http, sse)")
    http.add_argument("--host", help="address to bind (default: config http.host, 127.0.0.1)")
    http.add_argument("--port", type=int, help="port (default: config http.port, 8765)")
    http.add_argument(
        "--stateless",
        action="store_true",
        default=None,
        help="no protocol sessions on the server, for replicas behind a load balancer "
        "(2025-11-25 clients then get no server-to-client requests, such as sampling)",
    )
    http.add_argument(
        "--public-url",
        help="the URL clients use, e.g. https://threadline.example behind a proxy "
        "(advertised in auth challenges; default: http://HOST:PORT)",
    )
    http.add_argument("--tokens-file", type=Path, help="static bearer tokens (threadline token)")
    http.add_argument("--jwt-issuer", help="accept JWTs from this issuer (iss)")
    http.add_argument("--jwt-audience", help="...for this audience (aud)")
    http.add_argument(
        "--jwt-key-file", type=Path, help="...signed with this PEM public key or HS256 secret"
    )
    http.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without authentication on a non-loopback address (everyone is one user)",
    )
    http.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="accept this Host header (the public name); repeatable",
    )
    http.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="accept this Origin (e.g. https://chat.example); repeatable",
    )


def add_token_parsers(commands: Commands) -> None:
    token = commands.add_parser("token", help="manage static bearer tokens for HTTP")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    add = token_commands.add_parser("add", help="create a token for USER and print it once")
    add.add_argument("user", help="the user the token signs in as")
    listing = token_commands.add_parser("list", help="list tokens (user, id, created)")
    revoke = token_commands.add_parser("revoke", help="revoke a token by id, or all of a user's")
    revoke.add_argument("user_or_id", help="a user name, or a token id from `token list`")
    for sub in (add, listing, revoke):
        add_common(sub)
        sub.set_defaults(run=_token)
        sub.add_argument(
            "--tokens-file",
            type=Path,
            help="default: config http.tokens_file, else DATA_DIR/tokens.json",
        )


def add_demo_parser(commands: Commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="create two threads in a store and show they stay apart",
        description="Writes a temporary store and removes it; with --data-dir DIR, the store "
        "is DIR/demo.db and stays (sessions list and doctor read DIR/local.db, not it).",
    )
    add_common(demo)
    demo.set_defaults(run=_demo_command)


def _serve(args: argparse.Namespace, env: Env) -> None:
    if args.transport == "stdio":
        _serve_stdio(env.config, env.data_dir)
    else:
        _serve_http(args, env.config, env.data_dir)


def _serve_stdio(config: Config, data_dir: Path) -> None:
    from threadline.server import LocalRuntime, build_server

    runtime = LocalRuntime(data_dir, config)
    log.info("serving %s over stdio", runtime.where)
    if sys.stdin.isatty():
        _on_a_terminal()
    # While serving, the SDK points fd 1 at stderr and keeps the wire private; a stray print()
    # in a tool is flushed there line by line. Whatever is still buffered at the end must not
    # reach the wire when the interpreter exits, so fd 1 stays on stderr afterwards.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        build_server(runtime, lifespan=runtime).run("stdio")
    finally:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout.flush()


def _on_a_terminal() -> None:
    """Started by hand: say what this is, and let Ctrl-C stop it. (The SDK reads stdin in a
    worker thread, which a KeyboardInterrupt cannot stop, so the process would wait for an
    end of input that a terminal never sends.) Exiting at once loses nothing: every write
    that was acknowledged is committed, and one in flight rolls back."""
    print(
        "threadline serve: an MCP server on stdio, waiting for a host (Claude Desktop, an IDE, "
        "an agent) to start it and talk to it; typing here does nothing useful. Ctrl-C stops "
        "it. To add it to a host: threadline config claude-desktop|claude-code|cursor|vscode",
        file=sys.stderr,
        flush=True,
    )

    def stop(signum: int, frame: object) -> None:
        print("threadline serve: stopped", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, stop)


def _serve_http(args: argparse.Namespace, config: Config, data_dir: Path) -> None:
    from threadline.server.auth import JWTVerifier, StaticTokenVerifier, TokenFile
    from threadline.server.http import HttpOptions, is_loopback, serve_http

    http = config.http
    host = args.host or http.host
    tokens_file = args.tokens_file or http.tokens_file
    jwt = (
        args.jwt_issuer or http.jwt_issuer,
        args.jwt_audience or http.jwt_audience,
        args.jwt_key_file or http.jwt_key_file,
    )
    verifier: StaticTokenVerifier | JWTVerifier | None = None
    issuer_url = None
    if any(jwt):
        if not all(jwt):
            raise UsageError("JWT auth needs --jwt-issuer, --jwt-audience and --jwt-key-file")
        if tokens_file:
            raise UsageError("choose one kind of auth: --tokens-file or --jwt-*")
        issuer, audience, key_file = jwt
        verifier = JWTVerifier(str(issuer), str(audience), Path(key_file))  # type: ignore[arg-type]
        issuer_url = str(issuer) if str(issuer).startswith("http") else None
    elif tokens_file:
        tokens = TokenFile(tokens_file)
        if not tokens.entries():
            raise UsageError(f"{tokens_file} holds no tokens; add one with `threadline token add`")
        verifier = StaticTokenVerifier(tokens)
    if verifier is None and not is_loopback(host):
        if not args.no_auth:
            raise UsageError(
                f"refusing to serve {host} without authentication: give --tokens-file or "
                "--jwt-*, or --no-auth if something in front of threadline authenticates"
            )
        log.warning("serving %s WITHOUT authentication (--no-auth): every client is one user", host)
    given = {
        "host": host,
        "port": args.port,
        "stateless": args.stateless,
        "public_url": args.public_url,
        "allow_hosts": (*http.allow_hosts, *args.allow_host),
        "allow_origins": (*http.allow_origins, *args.allow_origin),
    }
    settings = {**http.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    try:
        config = config.model_copy(update={"http": Http.model_validate(settings)})
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        raise UsageError(f"{option}: {first['msg'].lower()}") from None
    options = HttpOptions(transport=args.transport, verifier=verifier, issuer_url=issuer_url)
    anyio.run(serve_http, options, config, data_dir)


def _token(args: argparse.Namespace, env: Env) -> None:
    from threadline.server.auth import TokenFile

    tokens = TokenFile(tokens_path(args.tokens_file, env))
    if args.token_command == "add":
        entry, token = tokens.add(args.user)
        print(token)
        print(
            f"token {entry.id} for {entry.user!r} added to {tokens.path}; it is shown only once",
            file=sys.stderr,
        )
    elif args.token_command == "list":
        for entry in tokens.entries():
            print(f"{entry.id}\t{entry.user}\t{entry.created_at}")
    else:
        gone = tokens.revoke(args.user_or_id)
        if not gone:
            raise UsageError(f"no token of user or with id {args.user_or_id!r} in {tokens.path}")
        for entry in gone:
            print(f"revoked {entry.id} ({entry.user})", file=sys.stderr)


async def _demo(data_dir: Path) -> None:
    async with Store.open(data_dir / "demo.db") as store:
        trip = await store.create_session(title="Trip to Kyoto")
        code = await store.create_session(title="Refactor the parser")
        async with anyio.create_task_group() as tg:
            for sid, text in ((trip.session_id, "temples"), (code.session_id, "tokens")):
                for i in range(3):
                    tg.start_soon(
                        store.append_messages, sid, [{"role": "user", "content": f"{text} {i}"}]
                    )
        await store.update_context(trip.session_id, "memory", "Prefers trains.", mode="append")
        for info in (trip, code):
            history = await store.get_history(info.session_id)
            print(f"{info.title} ({info.session_id}):")
            for message in history.messages:
                print(f"  {message.role}: {message.content}")
        hits = await store.session_search("temples")
        print(f"search 'temples': {len(hits.hits)} hits, all in {hits.hits[0].session_title!r}")
        print(f"store: {store.path}")


def tokens_path(given: Path | None, env: Env) -> Path:
    return given or env.config.http.tokens_file or env.data_dir / "tokens.json"


def _demo_command(args: argparse.Namespace, env: Env) -> None:
    if args.data_dir is None:  # not asked for a place: leave the real data directory alone
        with tempfile.TemporaryDirectory(prefix="threadline-demo-") as scratch:
            anyio.run(_demo, Path(scratch))
        print("(a temporary store, now removed; --data-dir DIR keeps it as DIR/demo.db)")
        return
    make_directory(env.data_dir)
    anyio.run(_demo, env.data_dir)

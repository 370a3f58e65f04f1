"""The ``threadline`` command. Logs and messages go to stderr; stdout carries only results."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio

from threadline.config import Config, ConfigError, load_config
from threadline.storage import Store, ThreadlineError

log = logging.getLogger("threadline")


def default_data_dir() -> Path:
    """The platform's per-user data directory for threadline."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "threadline"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threadline",
        description="Persistent, parallel, isolated conversation threads over SQLite.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the MCP server (stdio: for Claude Desktop, Claude Code, Cursor, VS Code)",
        description="Run the threadline MCP server. Over stdio nothing but the protocol is "
        "written to stdout; logs go to stderr.",
    )
    _common(serve)
    serve.add_argument(
        "--transport", choices=["stdio"], default="stdio", help="how clients connect (stdio)"
    )
    demo = commands.add_parser(
        "demo", help="create two threads in a store and show they stay apart"
    )
    _common(demo)
    return parser


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--data-dir",
        type=Path,
        help="where stores live (env THREADLINE_DATA_DIR; default: config data_dir, else "
        f"{default_data_dir()})",
    )
    command.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ["THREADLINE_CONFIG"])
        if os.environ.get("THREADLINE_CONFIG")
        else None,
        help="a threadline.toml (env THREADLINE_CONFIG)",
    )
    command.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def _serve(config: Config, data_dir: Path) -> None:
    from threadline.server import LocalRuntime, build_server

    runtime = LocalRuntime(data_dir, config)
    log.info("serving %s over stdio", runtime.path)
    # While serving, the SDK points fd 1 at stderr and keeps the wire private; a stray print()
    # in a tool is flushed there line by line. Whatever is still buffered at the end must not
    # reach the wire when the interpreter exits, so fd 1 stays on stderr afterwards.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        build_server(runtime, lifespan=runtime).run("stdio")
    finally:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout.flush()


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=max(logging.DEBUG, logging.WARNING - 10 * args.verbose),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        data_dir = args.data_dir or config.data_dir or default_data_dir()
        if args.command == "serve":
            _serve(config, data_dir)
        elif args.command == "demo":
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            anyio.run(_demo, data_dir)
    except (ThreadlineError, ConfigError) as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

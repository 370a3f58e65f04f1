"""The ``threadline`` command. Logs and messages go to stderr; stdout carries only results."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio

from threadline.storage import Store, ThreadlineError


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
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="create two threads in a store and show they stay apart"
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("THREADLINE_DATA_DIR") or default_data_dir()),
        help="where the store lives (env THREADLINE_DATA_DIR; default: %(default)s)",
    )
    return parser


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
        level=logging.WARNING - 10 * args.verbose,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo":
            args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            anyio.run(_demo, args.data_dir)
    except ThreadlineError as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 1
    return 0

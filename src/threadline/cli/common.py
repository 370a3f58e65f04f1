"""What every command shares: options, finding the store, tables, JSON and the progress bar.

Results go to stdout; prompts, progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from pydantic import BaseModel

from threadline.config import Config, load_config
from threadline.paths import (
    LOCAL_STORE,
    LOCAL_USER,
    STATIC_ISSUER,
    default_data_dir,
    user_file,
    user_key,
)
from threadline.storage import Store
from threadline.storage.schema import make_directory
from threadline.storage.store import URL_SCHEMES

Commands = Any  # what add_subparsers() returns (argparse._SubParsersAction, private)


class UsageError(Exception):
    """The command line asks for something that cannot be done; the message says why."""


def add_common(
    command: argparse.ArgumentParser, *, store: bool = False, json: bool = False
) -> None:
    """--data-dir, --config and -v on every command; --user and --json where they apply."""
    command.add_argument(
        "--data-dir",
        type=Path,
        help="where stores live (env THREADLINE_DATA_DIR; default: config data_dir, else "
        f"{default_data_dir()})",
    )
    command.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL database (postgresql://...) holding every user's sessions, instead "
        "of the files in --data-dir (env THREADLINE_DATABASE; default: config database)",
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
    if store:
        command.add_argument(
            "--user",
            help="the store of this HTTP user (a `threadline token` user name, or with "
            "--issuer a JWT subject); default: the local store that stdio serves",
        )
        command.add_argument(
            "--issuer",
            default=STATIC_ISSUER,
            help="the JWT issuer (iss) of --user (default: static-token users)",
        )
    if json:
        command.add_argument("--json", action="store_true", help="machine-readable JSON output")


@dataclass(frozen=True)
class Env:
    """The resolved settings of one command."""

    config: Config
    data_dir: Path

    @classmethod
    def load(cls, args: argparse.Namespace) -> Env:
        config = load_config(args.config)
        database = getattr(args, "database", None)
        if database is not None:
            if not database.startswith(URL_SCHEMES):
                raise UsageError("--database: must be a postgresql:// URL")
            config = config.model_copy(update={"database": database})
        return cls(config, args.data_dir or config.data_dir or default_data_dir())

    def store_path(self, args: argparse.Namespace) -> Path:
        if getattr(args, "user", None) is None:
            return self.data_dir / LOCAL_STORE
        return user_file(self.data_dir, (args.issuer, args.user))

    def who(self, args: argparse.Namespace) -> str:
        if getattr(args, "user", None) is None:
            return "the local user"
        if args.issuer == STATIC_ISSUER:
            return f"user {args.user!r}"
        return f"user {args.user!r} of {args.issuer}"

    @asynccontextmanager
    async def store(
        self, args: argparse.Namespace, *, create: bool = False
    ) -> AsyncIterator[Store]:
        """Open the store the options name. Reading never creates one."""
        if self.config.database is not None:
            user = getattr(args, "user", None)
            key = LOCAL_USER if user is None else user_key((args.issuer, user))
            async with Store.open(self.config.database, self.config, user=key) as store:
                yield store
            return
        path = self.store_path(args)
        if not create and not path.exists():
            raise UsageError(
                f"no store for {self.who(args)} at {path} (nothing saved yet; check --data-dir "
                "and --user, or run `threadline doctor`)"
            )
        if create:
            make_directory(path.parent)
        async with Store.open(path, self.config) as store:
            yield store


def print_json(value: Any, out: TextIO | None = None) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    json.dump(value, out or sys.stdout, ensure_ascii=False, indent=2)
    (out or sys.stdout).write("\n")


# Control characters a terminal acts on (escape sequences, carriage returns, C1 controls);
# tab and newline are layout. Text from the store is shown with these escaped on a terminal,
# so what a tool wrote cannot retitle the window, write the clipboard or hide text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with terminal control characters written as ``\\uXXXX``."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


class VisibleOutput:
    """A terminal's stdout that shows control characters escaped (JSON stays valid: a JSON
    string may hold ``\\uXXXX``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(visible(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    squeeze: int = 0,
    right: Sequence[int] = (),
) -> str:
    """Columns padded to their widest cell (``right`` ones right-aligned); column ``squeeze`` is
    cut to fit the terminal."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    room = shutil.get_terminal_size((100, 24)).columns - (sum(widths) + 2 * (len(widths) - 1))
    if room < 0:
        widths[squeeze] = max(len(headers[squeeze]), widths[squeeze] + room)

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            if len(cell) > width:
                cell = cell[: width - 1] + "…"
            out.append(cell.rjust(width) if i in right else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def when(stamp: str) -> str:
    """An ISO UTC time as ``YYYY-MM-DD HH:MM``."""
    return stamp[:16].replace("T", " ")


def count(n: int, noun: str | None = None) -> str:
    """``1,234``, or with a noun ``1 message`` / ``1,234 messages``."""
    if noun is None:
        return f"{n:,}"
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal, at most 10 times a second."""

    def __init__(self, what: str, total: int, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream or sys.stderr
        self.shown = self.stream.isatty()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.shown and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        share = self.done / self.total if self.total else 1.0
        width = 30
        filled = int(share * width)
        bar = "█" * filled + "░" * (width - filled)
        self.stream.write(
            f"\r{self.what} {bar} {share:4.0%}  {count(self.done)}/{count(self.total)} messages"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def confirm(question: str) -> bool:
    """Ask on the terminal; without one there is nobody to ask, so the answer is no."""
    if not sys.stdin.isatty():
        return False
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def on_store(command: Any) -> Any:
    """A command ``run(args, env)`` that runs ``async command(args, store)`` on its store."""

    def run(args: argparse.Namespace, env: Env) -> Any:
        async def main() -> Any:
            async with env.store(args) as store:
                return await command(args, store)

        return anyio.run(main)

    return run

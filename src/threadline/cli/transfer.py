"""``threadline export`` and ``threadline import``: lossless backups and moves, and Markdown.

The formats, the checks and the import itself are the store's (``threadline.storage.archive``);
this module parses the arguments, draws the progress and says what happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import anyio

from threadline.cli.common import Commands, Env, Progress, UsageError, add_common, count
from threadline.cli.render import session_markdown
from threadline.paths import redacted
from threadline.storage import (
    BlockRecord,
    ExportUnreadable,
    Header,
    ImportRefused,
    ImportStopped,
    SessionRecord,
    Sink,
    ThreadlineError,
    archive,
)
from threadline.storage.schema import why


def add_parsers(commands: Commands) -> None:
    export = commands.add_parser(
        "export",
        help="write sessions to a file: lossless JSONL/JSON, or readable Markdown",
        description="Export sessions (default: all) with every branch, compaction, context "
        "block and usage record. jsonl and json restore exactly with `threadline import`; "
        "markdown is for reading.",
    )
    add_common(export, store=True)
    export.add_argument("session_ids", nargs="*", metavar="session_id", help="default: all")
    export.add_argument("--format", choices=["jsonl", "json", "markdown"], default="jsonl")
    export.add_argument("-o", "--output", type=Path, help="the file to write (default: stdout)")
    export.set_defaults(run=_export)

    load = commands.add_parser(
        "import",
        help="restore a jsonl/json export exactly (ids, tree, lineage, compactions)",
        description="Import an export into the store. Nothing is merged: if a session id is "
        "already taken, or a user block holds other content, nothing is imported unless "
        "--skip-existing says to leave those alone.",
    )
    add_common(load, store=True, json=True)
    load.add_argument("file", help="an export file, or - for stdin")
    load.add_argument(
        "--skip-existing",
        action="store_true",
        help="import only sessions whose id is free; keep this store's user blocks",
    )
    load.set_defaults(run=_import)


# -- export ---------------------------------------------------------------------------------


def _export(args: argparse.Namespace, env: Env) -> None:
    with _output(args.output) as out:
        anyio.run(_export_to, args, env, out)
    if args.output is not None:
        print(f"wrote {args.output}", file=sys.stderr)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    """stdout, or a file that appears complete or not at all."""
    if path is None:
        yield sys.stdout
        return
    path = path.expanduser()
    opened = False
    try:
        with archive.atomic_output(path) as out:
            opened = True
            yield out
    except OSError as exc:
        if not opened:  # no directory, no permission
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        # a full disk, a file size limit: one line, not a trace
        raise ThreadlineError(f"cannot write {path}: {why(exc)}; nothing was written") from None


async def _export_to(args: argparse.Namespace, env: Env, out: IO[str]) -> None:
    sink = _Markdown(out) if args.format == "markdown" else archive.WRITERS[args.format](out)
    async with env.store(args) as store:
        await store.export(_Drawn(sink), args.session_ids or None)


class _Drawn:
    """A sink that draws a progress bar as it passes the records on."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.progress = Progress("exporting", 0)

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None:
        self.progress.total = header.messages
        self.sink.begin(header, blocks)

    def session(self, record: SessionRecord) -> None:
        self.sink.session(record)
        self.progress.advance(len(record.messages))

    def end(self) -> None:
        self.sink.end()
        self.progress.close()


class _Markdown:
    """A sink writing the export for reading: every session with all its branches."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None:
        self.out.write(
            f"<!-- threadline export {header.exported_at}: {count(header.sessions, 'session')}, "
            f"{count(header.messages, 'message')} -->\n"
        )
        for b in blocks:
            self.out.write(f"\n# context block `{b.label}` (shared by all sessions)\n\n")
            self.out.write(b.content + "\n")

    def session(self, record: SessionRecord) -> None:
        self.out.write("\n" + session_markdown(record, all_branches=True))

    def end(self) -> None:
        pass


# -- import ---------------------------------------------------------------------------------


def _import(args: argparse.Namespace, env: Env) -> None:
    with _seekable(args.file) as source:
        try:
            anyio.run(_import_from, args, env, source)
        except UnicodeDecodeError:
            raise UsageError(f"{args.file} is not UTF-8 text, so not a threadline export") from None
        except ExportUnreadable as exc:
            raise UsageError(str(exc)) from None
        except ImportRefused as exc:
            raise UsageError(
                f"nothing imported: {exc.problems}. Import into another store "
                "(--data-dir, --user), or pass --skip-existing to leave those alone"
            ) from None
        except ImportStopped as exc:
            raise ThreadlineError(
                f"session {exc.session_id}: {exc.cause}. {exc.imported} sessions were imported "
                "before it; fix the file and run the import again with --skip-existing for the "
                "rest"
            ) from None


@contextlib.contextmanager
def _seekable(name: str) -> Iterator[IO[str]]:
    """The file, or stdin spooled to a temporary file (an import reads its input twice)."""
    if name != "-":
        try:
            f = open(name, encoding="utf-8")  # noqa: SIM115 (closed below, errors reported)
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
        with f:
            yield f
        return
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        shutil.copyfileobj(sys.stdin, spool)
        spool.seek(0)
        yield spool


async def _import_from(args: argparse.Namespace, env: Env, source: IO[str]) -> None:
    name = "stdin" if args.file == "-" else args.file
    archive.check_file(source, name)  # before the store is opened (or created)
    progress = Progress("importing", 0)

    def advance(done: int, total: int) -> None:
        progress.total = total
        progress.advance(done - progress.done)

    async with env.store(args, create=True) as store:
        try:
            summary = await archive.import_file(
                store, source, name, skip_existing=args.skip_existing, progress=advance
            )
        finally:
            progress.close()
    if args.json:
        json.dump(summary.model_dump(), sys.stdout, ensure_ascii=False, indent=2)
        print()
        return
    messages = sum(r.messages for r in summary.imported)
    into = store.path or redacted(env.config.database or "")
    print(
        f"imported {count(len(summary.imported), 'session')} ({count(messages, 'message')}) and "
        f"{count(summary.user_blocks_added, 'user block')} into {into}"
    )
    taken, kept = summary.skipped_sessions, summary.user_blocks_kept
    if taken:
        print(f"skipped {count(len(taken), 'session')} that already exist: {', '.join(taken[:10])}")
    if kept:
        print(f"kept this store's user blocks {', '.join(kept)} (the file's differ)")
    for r in summary.imported:
        for old, new in r.renumbered.items():
            print(f"session {r.session_id}: summary {old} is now {new} (the id was taken)")

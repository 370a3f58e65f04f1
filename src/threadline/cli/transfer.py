"""``threadline export`` and ``threadline import``: lossless backups and moves, and Markdown.

The lossless formats hold a header, the user-scoped context blocks and one record per session
(see ``threadline.storage.transfer``). JSONL puts each on its own line, so a large export is
written and read one session at a time; JSON wraps the same records in one document::

    {"type": "header", "format": "threadline-export", "version": 1, ...}
    {"type": "blocks", "blocks": [...]}
    {"type": "session", "session_id": "...", "messages": [...], ...}

An import checks the whole file first (every record valid, no session id taken, no user block
in disagreement) and writes nothing if anything is wrong. Each session is then imported in one
transaction, so an interrupted import leaves whole sessions; run it again with
``--skip-existing`` to import the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import anyio
from pydantic import BaseModel, ValidationError

from threadline.cli.common import Commands, Env, Progress, UsageError, add_common, count
from threadline.cli.render import session_markdown
from threadline.storage import InvalidInput, SessionNotFound, Store, ThreadlineError, transfer
from threadline.storage.schema import why
from threadline.storage.transfer import BlockRecord, Header, SessionRecord

M = TypeVar("M", bound=BaseModel)


class ImportStopped(ThreadlineError):
    """A session of the file could not be imported after others were."""


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
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(exc, OSError):  # a full disk, a file size limit: one line, not a trace
            raise ThreadlineError(f"cannot write {path}: {why(exc)}; nothing was written") from None
        raise


async def _export_to(args: argparse.Namespace, env: Env, out: IO[str]) -> None:
    async with env.store(args) as store:
        await store.export(_WRITERS[args.format](out), args.session_ids or None)


def _line(kind: str, model: BaseModel) -> str:
    return json.dumps({"type": kind, **model.model_dump(mode="json")}, ensure_ascii=False)


class _Jsonl:
    """Writes an export as it is read (in the store's reader thread), with a progress bar."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.progress = Progress("exporting", 0)

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None:
        self.progress.total = header.messages
        self.start(header, blocks)

    def session(self, record: SessionRecord) -> None:
        self.write(record)
        self.progress.advance(len(record.messages))

    def end(self) -> None:
        self.finish()
        self.progress.close()

    def start(self, header: Header, blocks: list[BlockRecord]) -> None:
        self.out.write(_line("header", header) + "\n")
        dumped = [b.model_dump(mode="json") for b in blocks]
        self.out.write(json.dumps({"type": "blocks", "blocks": dumped}, ensure_ascii=False) + "\n")

    def write(self, record: SessionRecord) -> None:
        self.out.write(_line("session", record) + "\n")

    def finish(self) -> None:
        pass


class _Json(_Jsonl):
    def start(self, header: Header, blocks: list[BlockRecord]) -> None:
        dumped = [b.model_dump(mode="json") for b in blocks]
        self.out.write(f'{{"header": {_line("header", header)},\n')
        self.out.write(f' "blocks": {json.dumps(dumped, ensure_ascii=False)},\n "sessions": [')
        self.first = True

    def write(self, record: SessionRecord) -> None:
        self.out.write(("\n  " if self.first else ",\n  ") + _line("session", record))
        self.first = False

    def finish(self) -> None:
        self.out.write("\n ]}\n")


class _Markdown(_Jsonl):
    def start(self, header: Header, blocks: list[BlockRecord]) -> None:
        self.out.write(
            f"<!-- threadline export {header.exported_at}: {count(header.sessions, 'session')}, "
            f"{count(header.messages, 'message')} -->\n"
        )
        for b in blocks:
            self.out.write(f"\n# context block `{b.label}` (shared by all sessions)\n\n")
            self.out.write(b.content + "\n")

    def write(self, record: SessionRecord) -> None:
        self.out.write("\n" + session_markdown(record, all_branches=True))


_WRITERS: dict[str, type[_Jsonl]] = {"jsonl": _Jsonl, "json": _Json, "markdown": _Markdown}


# -- import ---------------------------------------------------------------------------------


@dataclass
class _Checked:
    header: Header
    blocks: list[BlockRecord]
    session_ids: list[str]


def _import(args: argparse.Namespace, env: Env) -> None:
    with _seekable(args.file) as source:
        try:
            anyio.run(_import_from, args, env, source)
        except UnicodeDecodeError:
            raise UsageError(f"{args.file} is not UTF-8 text, so not a threadline export") from None


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
    checked = _check(source, args.file)
    async with env.store(args, create=True) as store:
        taken = [sid for sid in checked.session_ids if await _exists(store, sid)]
        differing = await store.user_block_conflicts(checked.blocks)
        if (taken or differing) and not args.skip_existing:
            problems = []
            if taken:
                shown = ", ".join(taken[:5]) + (
                    f" and {len(taken) - 5} more" if len(taken) > 5 else ""
                )
                problems.append(f"{count(len(taken), 'session')} already exist ({shown})")
            if differing:
                problems.append(f"user blocks {', '.join(differing)} hold other content")
            raise UsageError(
                f"nothing imported: {'; '.join(problems)}. Import into another store "
                "(--data-dir, --user), or pass --skip-existing to leave those alone"
            )
        skip = set(taken)
        blocks_added = 0
        if not differing:
            blocks_added = await store.import_user_blocks(checked.blocks)
        progress = Progress("importing", checked.header.messages)
        imported: list[dict[str, Any]] = []
        try:
            for record in _records(source, args.file):
                if record.session_id in skip:
                    progress.advance(len(record.messages))
                    continue
                try:
                    result = await store.import_session(record)
                except ThreadlineError as exc:
                    raise ImportStopped(
                        f"session {record.session_id}: {exc}. {len(imported)} sessions were "
                        "imported before it; fix the file and run the import again with "
                        "--skip-existing for the rest"
                    ) from None
                imported.append(result.model_dump())
                progress.advance(len(record.messages))
        finally:
            progress.close()
    summary = {
        "imported": imported,
        "skipped_sessions": taken,
        "user_blocks_added": blocks_added,
        "user_blocks_kept": differing,
    }
    if args.json:
        json.dump(summary, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return
    messages = sum(r["messages"] for r in imported)
    print(
        f"imported {count(len(imported), 'session')} ({count(messages, 'message')}) and "
        f"{count(blocks_added, 'user block')} into {store.path}"
    )
    if taken:
        print(f"skipped {count(len(taken), 'session')} that already exist: {', '.join(taken[:10])}")
    if differing:
        print(f"kept this store's user blocks {', '.join(differing)} (the file's differ)")
    for r in imported:
        for old, new in r["renumbered"].items():
            print(f"session {r['session_id']}: summary {old} is now {new} (the id was taken)")


async def _exists(store: Store, session_id: str) -> bool:
    try:
        await store.get_session(session_id)
    except SessionNotFound:
        return False
    return True


def _check(source: IO[str], name: str) -> _Checked:
    """Validate every record before anything is written; the file is left at its start."""
    header, blocks = _start(source, name)
    ids: list[str] = []
    try:
        transfer.check_blocks(blocks)
    except InvalidInput as exc:
        raise UsageError(f"{name}: user {exc}") from None
    seen: set[str] = set()
    messages = 0
    for record in _records(source, name):
        if record.session_id in seen:
            raise UsageError(f"{name}: session {record.session_id} appears twice")
        try:
            transfer.check(record)
        except InvalidInput as exc:
            raise UsageError(f"{name}: session {record.session_id}: {exc}") from None
        seen.add(record.session_id)
        ids.append(record.session_id)
        messages += len(record.messages)
    if len(ids) != header.sessions or messages != header.messages:
        raise UsageError(
            f"{name}: the header announces {header.sessions} sessions and {header.messages} "
            f"messages, the file holds {len(ids)} and {messages}; it is incomplete or edited"
        )
    source.seek(0)
    return _Checked(header, blocks, ids)


def _start(source: IO[str], name: str) -> tuple[Header, list[BlockRecord]]:
    source.seek(0)
    kind = _kind(source, name)
    source.seek(0)
    if kind == "json":
        document = _parse(source.read(), name)
        if not isinstance(document, dict) or "header" not in document:
            raise UsageError(f"{name} is not a threadline export (no header)")
        header = _model(Header, _untyped(document["header"], "header", name), f"{name}: header")
        raw = _list(document.get("blocks", []), f"{name}: blocks")
        return header, [_model(BlockRecord, b, f"{name}: blocks") for b in raw]
    first = _parse(source.readline(), f"{name} line 1")
    header = _model(Header, _untyped(first, "header", f"{name} line 1"), f"{name} line 1")
    second = _parse(source.readline(), f"{name} line 2")
    raw = _list(_untyped(second, "blocks", f"{name} line 2").get("blocks", []), f"{name} line 2")
    blocks = [_model(BlockRecord, b, f"{name} line 2") for b in raw]
    return header, blocks


def _kind(source: IO[str], name: str) -> Literal["json", "jsonl"]:
    """JSONL starts with a header line; anything else must be one JSON document."""
    first = source.readline()
    if not first.strip():
        raise UsageError(f"{'stdin' if name == '-' else name} is empty")
    try:
        value = json.loads(first)
    except json.JSONDecodeError:
        return "json"  # a document spread over lines
    if isinstance(value, dict) and value.get("type") == "header":
        return "jsonl"
    if isinstance(value, dict) and "header" in value:
        return "json"  # a document on one line
    raise UsageError(f"{name} is not a threadline export (it starts with no export header)")


def _records(source: IO[str], name: str) -> Iterator[SessionRecord]:
    """The session records after the header, validated, in file order."""
    source.seek(0)
    if _kind(source, name) == "json":
        source.seek(0)
        document = _parse(source.read(), name)
        for i, raw in enumerate(_list(document.get("sessions", []), f"{name}: sessions")):
            where = f"{name}: sessions[{i}]"
            yield _model(SessionRecord, _untyped(raw, "session", where), where)
        return
    source.readline()  # the blocks line (the header was the first)
    for number, line in enumerate(source, start=3):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        yield _model(SessionRecord, _untyped(_parse(line, where), "session", where), where)


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not JSON ({exc.msg}, column {exc.colno})") from None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise UsageError(f"{where}: must be a list")
    return value


def _untyped(value: Any, kind: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("type") != kind:
        raise UsageError(f"{where}: expected a {kind} record")
    return {k: v for k, v in value.items() if k != "type"}


def _model(model: type[M], value: Any, where: str) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "record"
        raise UsageError(f"{where}: {field}: {error['msg']}") from None

"""The export file: writing a store's export, and importing one after checking all of it.

Two lossless formats carry the same records (``records``): a header, the user-scoped context
blocks, one record per session. JSONL puts each on its own line, so a large export is written
and read one session at a time; JSON wraps the same records in one document::

    {"type": "header", "format": "threadline-export", "version": 1, ...}
    {"type": "blocks", "blocks": [...]}
    {"type": "session", "session_id": "...", "messages": [...], ...}

An import checks the whole file first (every record valid, no session id taken, no user block
in disagreement) and writes nothing if anything is wrong. Each session is then imported in one
transaction, so an interrupted import leaves whole sessions; run it again with
``skip_existing`` to import the rest.

From Python::

    with atomic_output(Path("backup.jsonl")) as out:
        await store.export(JsonlWriter(out))
    with open("backup.jsonl", encoding="utf-8") as source:
        summary = await import_file(other_store, source)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from threadline.storage.errors import (
    ExportUnreadable,
    ImportRefused,
    ImportStopped,
    InvalidInput,
    SessionNotFound,
    ThreadlineError,
)
from threadline.storage.records import (
    BlockRecord,
    Header,
    ImportedSession,
    SessionRecord,
    check,
    check_blocks,
)

if TYPE_CHECKING:
    from threadline.storage.store import Store

M = TypeVar("M", bound=BaseModel)


# -- writing --------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` complete or not at all (written beside it under a
    temporary name, then renamed over it); an error removes the temporary file and propagates."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            yield out
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _line(kind: str, model: BaseModel) -> str:
    return json.dumps({"type": kind, **model.model_dump(mode="json")}, ensure_ascii=False)


class JsonlWriter:
    """A ``Sink`` writing JSONL to ``out``, one record a line, as the store reads them."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None:
        self.out.write(_line("header", header) + "\n")
        dumped = [b.model_dump(mode="json") for b in blocks]
        self.out.write(json.dumps({"type": "blocks", "blocks": dumped}, ensure_ascii=False) + "\n")

    def session(self, record: SessionRecord) -> None:
        self.out.write(_line("session", record) + "\n")

    def end(self) -> None:
        pass


class JsonWriter(JsonlWriter):
    """A ``Sink`` writing the same records as one JSON document."""

    def begin(self, header: Header, blocks: list[BlockRecord]) -> None:
        dumped = [b.model_dump(mode="json") for b in blocks]
        self.out.write(f'{{"header": {_line("header", header)},\n')
        self.out.write(f' "blocks": {json.dumps(dumped, ensure_ascii=False)},\n "sessions": [')
        self.first = True

    def session(self, record: SessionRecord) -> None:
        self.out.write(("\n  " if self.first else ",\n  ") + _line("session", record))
        self.first = False

    def end(self) -> None:
        self.out.write("\n ]}\n")


WRITERS: dict[str, type[JsonlWriter]] = {"jsonl": JsonlWriter, "json": JsonWriter}


# -- importing ------------------------------------------------------------------------------


class ImportSummary(BaseModel):
    imported: list[ImportedSession]
    skipped_sessions: list[str]
    user_blocks_added: int
    user_blocks_kept: list[str]


@dataclass
class Checked:
    """A file that passed ``check_file``: its header, its user blocks, its sessions' ids."""

    header: Header
    blocks: list[BlockRecord]
    session_ids: list[str]


async def import_file(
    store: Store,
    source: IO[str],
    name: str = "the export",
    *,
    skip_existing: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import an export read from ``source`` (seekable: it is read twice) into ``store``.

    Refuses (``ImportRefused``, nothing written) when a session id is taken or a user block
    holds other content, unless ``skip_existing`` leaves those alone. ``progress`` is called
    with (messages done, messages in the file) after each session. ``name`` names the file in
    errors.
    """
    checked = check_file(source, name)
    taken = [sid for sid in checked.session_ids if await _exists(store, sid)]
    differing = await store.user_block_conflicts(checked.blocks)
    if (taken or differing) and not skip_existing:
        raise ImportRefused(taken, differing)
    blocks_added = 0 if differing else await store.import_user_blocks(checked.blocks)
    imported: list[ImportedSession] = []
    done = 0
    for record in records(source, name):
        if record.session_id not in taken:
            try:
                imported.append(await store.import_session(record))
            except ThreadlineError as exc:
                raise ImportStopped(record.session_id, exc, len(imported)) from None
        done += len(record.messages)
        if progress is not None:
            progress(done, checked.header.messages)
    return ImportSummary(
        imported=imported,
        skipped_sessions=taken,
        user_blocks_added=blocks_added,
        user_blocks_kept=differing,
    )


async def _exists(store: Store, session_id: str) -> bool:
    try:
        await store.get_session(session_id)
    except SessionNotFound:
        return False
    return True


def check_file(source: IO[str], name: str) -> Checked:
    """Validate every record before anything is written; the file is left at its start."""
    header, blocks = _start(source, name)
    ids: list[str] = []
    try:
        check_blocks(blocks)
    except InvalidInput as exc:
        raise ExportUnreadable(f"{name}: user {exc}") from None
    seen: set[str] = set()
    messages = 0
    for record in records(source, name):
        if record.session_id in seen:
            raise ExportUnreadable(f"{name}: session {record.session_id} appears twice")
        try:
            check(record)
        except InvalidInput as exc:
            raise ExportUnreadable(f"{name}: session {record.session_id}: {exc}") from None
        seen.add(record.session_id)
        ids.append(record.session_id)
        messages += len(record.messages)
    if len(ids) != header.sessions or messages != header.messages:
        raise ExportUnreadable(
            f"{name}: the header announces {header.sessions} sessions and {header.messages} "
            f"messages, the file holds {len(ids)} and {messages}; it is incomplete or edited"
        )
    source.seek(0)
    return Checked(header, blocks, ids)


def _start(source: IO[str], name: str) -> tuple[Header, list[BlockRecord]]:
    source.seek(0)
    kind = _kind(source, name)
    source.seek(0)
    if kind == "json":
        document = _parse(source.read(), name)
        if not isinstance(document, dict) or "header" not in document:
            raise ExportUnreadable(f"{name} is not a threadline export (no header)")
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
        raise ExportUnreadable(f"{name} is empty")
    try:
        value = json.loads(first)
    except json.JSONDecodeError:
        return "json"  # a document spread over lines
    if isinstance(value, dict) and value.get("type") == "header":
        return "jsonl"
    if isinstance(value, dict) and "header" in value:
        return "json"  # a document on one line
    raise ExportUnreadable(f"{name} is not a threadline export (it starts with no export header)")


def records(source: IO[str], name: str) -> Iterator[SessionRecord]:
    """The session records after the header, validated one by one, in file order."""
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
        raise ExportUnreadable(f"{where}: not JSON ({exc.msg}, column {exc.colno})") from None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ExportUnreadable(f"{where}: must be a list")
    return value


def _untyped(value: Any, kind: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("type") != kind:
        raise ExportUnreadable(f"{where}: expected a {kind} record")
    return {k: v for k, v in value.items() if k != "type"}


def _model(model: type[M], value: Any, where: str) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "record"
        raise ExportUnreadable(f"{where}: {field}: {error['msg']}") from None

"""``threadline doctor``: check an installation and say what to fix.

It only reads: stores are opened read-only (an old schema is reported, not migrated), and
nothing is created. With a database (``--database``), it checks that instead of the data
directory's files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import anyio

from threadline.cli import hosts
from threadline.cli.common import Commands, Env, add_common, count
from threadline.cli.serve import tokens_path
from threadline.config import Config, ConfigError
from threadline.paths import (
    LOCAL_STORE,
    STATIC_ISSUER,
    USERS_DIR,
    default_data_dir,
    redacted,
    user_file,
)
from threadline.server.auth import TokenFile, TokenFileError
from threadline.storage.indexing import newest_pk
from threadline.storage.schema import APPLICATION_ID, LATEST

Level = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    level: Level
    what: str
    detail: str
    fix: str | None = None


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, level: Level, what: str, detail: str, fix: str | None = None) -> None:
        self.checks.append(Check(level, what, detail, fix))


def add_parsers(commands: Commands) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check the data directory, config, stores and host configs; say what to fix",
        description="Reads everything, changes nothing. Exits 1 when something needs fixing.",
    )
    add_common(doctor, json=True)
    doctor.set_defaults(run=_doctor)


def _doctor(args: argparse.Namespace, _: None) -> int:
    report = Report()
    env = _config(report, args)
    if env.config.database is not None:
        anyio.run(_database, report, env.config.database)
    else:
        _data_dir(report, env.data_dir)
        names = _user_names(env)
        for path in _stores(env.data_dir):
            _store(report, path, names.get(path.name))
    _tokens(report, env)
    _hosts(report)
    if args.json:
        json.dump([asdict(c) for c in report.checks], sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
        for c in report.checks:
            print(f"{marks[c.level]}  {c.what}: {c.detail}")
            if c.fix:
                print(f"      fix: {c.fix}")
        failed = sum(c.level == "fail" for c in report.checks)
        warned = sum(c.level == "warn" for c in report.checks)
        summary = f"{count(failed, 'problem')}, {count(warned, 'warning')}"
        print(f"\n{summary}" if failed or warned else "\nall good")
    return 1 if any(c.level == "fail" for c in report.checks) else 0


async def _database(report: Report, url: str) -> None:
    """The database: reachable, its schema, its walls. Read only: nothing is migrated."""
    import asyncpg

    from threadline.storage.postgres import errors, schema

    where = redacted(url)
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        report.add("fail", "database", f"{where}: {errors.translate(exc)}", "check the URL")
        return
    try:
        found = await schema.inspect(conn)
    except asyncpg.PostgresError as exc:
        report.add("fail", "database", f"{where}: {errors.translate(exc)}")
        return
    finally:
        await conn.close()
    version = found["version"]
    if version > schema.LATEST:
        report.add(
            "fail",
            "database",
            f"{where}: schema {version}, newer than this threadline ({schema.LATEST})",
            "upgrade threadline",
        )
    elif version < schema.LATEST:
        report.add(
            "warn",
            "database",
            f"{where}: schema {version}; the next server start migrates it to {schema.LATEST}",
        )
    else:
        report.add("ok", "database", f"{where}: reachable, schema {version}")
    if found["unwalled"]:
        report.add(
            "fail",
            "row-level security",
            f"not enabled and forced on {', '.join(found['unwalled'])}",
            "ALTER TABLE ... ENABLE and FORCE ROW LEVEL SECURITY, or restore the schema",
        )
    elif version:
        report.add("ok", "row-level security", "enabled and forced on every table")
    if found["role_escapes"]:
        report.add(
            "fail",
            "database role",
            "the role is a superuser or has BYPASSRLS: row-level security does not hold it",
            "connect as an ordinary role that owns the tables",
        )


def _config(report: Report, args: argparse.Namespace) -> Env:
    """The settings; a config that does not load is reported and the defaults used."""
    try:
        env = Env.load(args)
    except ConfigError as exc:
        report.add("fail", "config", str(exc), "correct it (every key: configs/threadline.toml)")
        return Env(Config(), args.data_dir or default_data_dir())
    given = args.config or os.environ.get("THREADLINE_CONFIG")
    report.add("ok", "config", f"{given} is valid" if given else "none given; the defaults apply")
    return env


def _data_dir(report: Report, data_dir: Path) -> None:
    if not data_dir.exists():
        report.add(
            "warn",
            "data directory",
            f"{data_dir} does not exist yet",
            "it is created when the server first runs; or pass --data-dir",
        )
        return
    if not data_dir.is_dir():
        report.add("fail", "data directory", f"{data_dir} is not a directory", "move it away")
        return
    if not os.access(data_dir, os.W_OK | os.X_OK):
        report.add(
            "fail", "data directory", f"{data_dir} is not writable", f"chmod u+rwx {data_dir}"
        )
        return
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        report.add(
            "warn",
            "data directory",
            f"{data_dir} is readable by others (mode {mode:o})",
            f"chmod 700 {data_dir}",
        )
        return
    free = shutil.disk_usage(data_dir).free
    report.add("ok", "data directory", f"{data_dir} ({free // 2**20:,} MiB free)")


def _stores(data_dir: Path) -> list[Path]:
    found = [data_dir / LOCAL_STORE] if (data_dir / LOCAL_STORE).exists() else []
    users = data_dir / USERS_DIR
    if users.is_dir():
        found += sorted(users.glob("*.db"))
    return found


def _user_names(env: Env) -> dict[str, str]:
    """Store file names of the users in the tokens file, to say whose store is whose."""
    try:
        entries = TokenFile(tokens_path(None, env)).entries()
    except TokenFileError:  # reported by _tokens
        return {}
    return {
        user_file(env.data_dir, (STATIC_ISSUER, e.user)).name: f"user {e.user!r}" for e in entries
    }


def _store(report: Report, path: Path, owner: str | None) -> None:
    what = f"store {path.name}" + (f" ({owner})" if owner else "")
    if path.name == LOCAL_STORE:
        what += " (local)"
    try:
        regular = stat.S_ISREG(path.lstat().st_mode)
    except OSError as exc:
        report.add("fail", what, f"cannot be read: {exc.strerror or exc}")
        return
    if not regular:  # a symlink, a FIFO, a directory: the server refuses it too
        report.add(
            "fail", what, "is not a regular file; no server will open it", f"move {path} away"
        )
        return
    for leftover in path.parent.glob(f".{path.name}.*.new"):
        report.add(
            "warn",
            what,
            f"{leftover.name} is left from an interrupted creation",
            f"remove it: rm {leftover}",
        )
    wal = Path(f"{path}-wal")
    # Without a WAL file no connection is open and everything is in the main file: read it as
    # immutable, so the check creates no -wal and -shm files beside it.
    immutable = "&immutable=1" if not wal.exists() else ""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True)
    except sqlite3.Error as exc:
        report.add("fail", what, f"cannot be opened: {exc}", "check its permissions")
        return
    try:
        app, version = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id), "
            "(SELECT user_version FROM pragma_user_version)"
        ).fetchone()
        if app != APPLICATION_ID:
            report.add("fail", what, "is not a threadline store", f"move {path} away")
            return
        if version > LATEST:
            report.add(
                "fail",
                what,
                f"schema {version} is newer than this threadline ({LATEST})",
                "upgrade threadline",
            )
            return
        check = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        sessions, messages = conn.execute(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM messages)"
        ).fetchone()
        index, building = _search_index(conn, version)
    except sqlite3.Error as exc:
        report.add(
            "fail",
            what,
            f"cannot be read: {exc}",
            f"restore it from an export (`threadline import`), or move {path} away",
        )
        return
    finally:
        conn.close()
    wal_size = wal.stat().st_size if wal.exists() else 0
    facts = (
        f"schema {version}, {count(sessions, 'session')}, {count(messages, 'message')}, "
        f"{path.stat().st_size / 2**20:.1f} MiB + WAL {wal_size / 2**20:.1f} MiB"
    )
    if check != ["ok"]:
        report.add(
            "fail",
            what,
            f"{facts}; damaged: {'; '.join(check)}",
            "export what is readable (`threadline export`), then import it into a new store",
        )
    elif version < LATEST:
        report.add(
            "warn",
            what,
            f"{facts}; migrates to schema {LATEST} when next opened (the word index for search "
            "is built then, in resumable steps)",
        )
    elif building:
        report.add("warn", what, f"{facts}; {index}", "open it once (`threadline sessions list`)")
    elif wal_size > 256 * 2**20:
        report.add(
            "warn",
            what,
            f"{facts}; the WAL is large",
            "a long-lived reader may block checkpoints; restart the server",
        )
    else:
        report.add("ok", what, f"{facts}; {index}; quick_check ok")


def _search_index(conn: sqlite3.Connection, version: int) -> tuple[str, bool]:
    """The state of the search indexes, as a clause (how many messages each still lacks),
    and whether the word index is still being built."""
    if version < 2:
        return "no word index yet", False
    indexed, words = conn.execute("SELECT indexed_pk, words_pk FROM search_state").fetchone()
    if words < indexed:
        built = f"word index built up to message #{words} of #{indexed}"
        return f"{built} (it resumes when the store is next opened)", True
    waiting = newest_pk(conn) - indexed
    if not waiting:
        return "search index up to date", False
    return f"search index: {count(waiting, 'message')} to index (found meanwhile by a scan)", False


def _tokens(report: Report, env: Env) -> None:
    path = tokens_path(None, env)
    if not path.exists():
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        entries = TokenFile(path).entries()
    except TokenFileError as exc:
        report.add(
            "fail",
            "tokens file",
            str(exc),
            "fix it, or add tokens anew with `threadline token add`",
        )
        return
    if mode & 0o077:
        report.add("fail", "tokens file", f"{path} is readable by others", f"chmod 600 {path}")
    else:
        report.add("ok", "tokens file", f"{path} ({count(len(entries), 'token')})")


def _hosts(report: Report) -> None:
    any_found = False
    for name, host in hosts.HOSTS.items():
        path = host.path()
        found = hosts.mentions(path)
        if found is None:
            if path.exists():
                report.add("warn", host.title, f"{path} is not valid JSON", f"fix it, then {name}")
            continue
        if not found:
            continue
        any_found = True
        command = _command(path, found[0])
        if command and not (Path(command).exists() or shutil.which(command)):
            report.add(
                "fail",
                host.title,
                f"{path} starts {command!r}, which does not exist",
                f"threadline config {name} --write",
            )
        else:
            report.add("ok", host.title, f"{path} ({', '.join(found)})")
    if not any_found:
        report.add(
            "warn",
            "MCP hosts",
            "no host config mentions threadline",
            "threadline config claude-desktop|claude-code|cursor|vscode",
        )


def _command(path: Path, entry: str) -> str | None:
    key, name = entry.split(".", 1)
    server = json.loads(path.read_text(encoding="utf-8"))[key][name]
    command = server.get("command") if isinstance(server, dict) else None
    return command if isinstance(command, str) else None

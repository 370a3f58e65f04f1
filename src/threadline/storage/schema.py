"""The schema, its migrations, and the checks that decide whether a file may be opened.

Migrations are ordered, named steps. They run in one ``BEGIN IMMEDIATE`` transaction with the
version read inside it, so two processes opening a new file at once are safe: one migrates,
the other waits on the lock and then finds nothing to do. A file that is not a threadline
store, is damaged, is empty where data was expected, or carries a newer schema is refused and
left exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import time
from pathlib import Path

from threadline.config import Config
from threadline.storage.connection import connect, translate
from threadline.storage.errors import StoreUnusable
from threadline.text import now

APPLICATION_ID = 0x546C6E31  # "Tln1": marks a file as a threadline store
SQLITE_HEADER = b"SQLite format 3\x00"

_V1 = (
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT,
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
        metadata TEXT,
        parent_session_id TEXT,
        forked_from_message_id TEXT,
        lineage TEXT CHECK (lineage IN ('fork', 'split')),
        head_pk INTEGER,
        message_count INTEGER NOT NULL DEFAULT 0,
        token_estimate INTEGER NOT NULL DEFAULT 0,
        system_prompt TEXT NOT NULL,
        prompt_rendered_at TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        turns INTEGER NOT NULL DEFAULT 0,
        last_model TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX sessions_by_activity ON sessions (updated_at DESC, id DESC)",
    """CREATE TABLE messages (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        parent_pk INTEGER REFERENCES messages (pk),
        depth INTEGER NOT NULL,
        path_tokens INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
        content TEXT NOT NULL,
        is_json INTEGER NOT NULL,
        body TEXT,
        name TEXT,
        metadata TEXT,
        tokens INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (session_id, id)
    )""",
    "CREATE INDEX messages_children ON messages (parent_pk)",
    """CREATE TABLE compactions (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        start_pk INTEGER NOT NULL REFERENCES messages (pk) ON DELETE CASCADE,
        end_pk INTEGER NOT NULL REFERENCES messages (pk) ON DELETE CASCADE,
        summary TEXT NOT NULL,
        replaced INTEGER NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX compactions_by_session ON compactions (session_id)",
    "CREATE INDEX compactions_by_start ON compactions (start_pk)",
    "CREATE INDEX compactions_by_end ON compactions (end_pk)",
    """CREATE TABLE context_blocks (
        label TEXT NOT NULL,
        session_id TEXT NOT NULL,
        content TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (label, session_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE usage (
        pk INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cost REAL,
        model TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX usage_by_session ON usage (session_id)",
    # Search: a trigram FTS5 index over the searchable text, filled in batches up to a
    # watermark (search_state.indexed_pk); search scans the few committed rows above it.
    """CREATE TABLE search_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        indexed_pk INTEGER NOT NULL
    )""",
    "INSERT INTO search_state VALUES (1, 0)",
    "CREATE VIEW message_text (pk, body) AS SELECT pk, coalesce(body, content) FROM messages",
    """CREATE VIRTUAL TABLE fts_trigram USING fts5 (
        body, content = 'message_text', content_rowid = 'pk', tokenize = 'trigram')""",
    """CREATE TRIGGER messages_unindex AFTER DELETE ON messages
        WHEN old.pk <= (SELECT indexed_pk FROM search_state)
    BEGIN
        INSERT INTO fts_trigram (fts_trigram, rowid, body)
            VALUES ('delete', old.pk, coalesce(old.body, old.content));
    END""",
    f"PRAGMA application_id = {APPLICATION_ID}",
)

# Ranked search: a word index (stemmed) beside the trigram one, with its own watermark so a
# store that held messages before it existed gets them indexed after the migration, in
# resumable chunks (``indexing.backfill_words``). Both indexes merge segments 8 at a time, not
# FTS5's default 4: indexing a chunk of 64 messages costs about a quarter less, which pays for
# the second index (bench/README.md).
_V2 = (
    "ALTER TABLE search_state ADD COLUMN words_pk INTEGER NOT NULL DEFAULT 0",
    """CREATE VIRTUAL TABLE fts_words USING fts5 (
        body, content = 'message_text', content_rowid = 'pk',
        tokenize = 'porter unicode61 remove_diacritics 2')""",
    "DROP TRIGGER messages_unindex",
    """CREATE TRIGGER messages_unindex AFTER DELETE ON messages BEGIN
        INSERT INTO fts_trigram (fts_trigram, rowid, body)
            SELECT 'delete', old.pk, coalesce(old.body, old.content)
            WHERE old.pk <= (SELECT indexed_pk FROM search_state);
        INSERT INTO fts_words (fts_words, rowid, body)
            SELECT 'delete', old.pk, coalesce(old.body, old.content)
            WHERE old.pk <= (SELECT words_pk FROM search_state);
    END""",
    "INSERT INTO fts_trigram (fts_trigram, rank) VALUES ('automerge', 8)",
    "INSERT INTO fts_words (fts_words, rank) VALUES ('automerge', 8)",
)

# The word index without positions (``detail = 'none'``): ranked search asks it only which
# messages hold a word, never where, and a message then costs about half the indexing time
# and a fifth of the bytes (bench/README.md). The index is rebuilt by the same resumable
# backfill as schema 2's.
_V3 = (
    "DROP TRIGGER messages_unindex",
    "DROP TABLE fts_words",
    """CREATE VIRTUAL TABLE fts_words USING fts5 (
        body, content = 'message_text', content_rowid = 'pk',
        tokenize = 'porter unicode61 remove_diacritics 2', detail = 'none')""",
    "INSERT INTO fts_words (fts_words, rank) VALUES ('automerge', 8)",
    "UPDATE search_state SET words_pk = 0",
    _V2[3],  # the trigger, as schema 2 wrote it
)

MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("initial schema", _V1),
    ("word index for ranked search", _V2),
    ("word index without positions", _V3),
)
LATEST = len(MIGRATIONS)


def statement(start: str) -> str:
    """The latest schema statement that begins with ``start`` (``"CREATE TABLE messages"``):
    for code that builds a table shaped like threadline's (the benchmarks' raw baselines)."""
    for _, statements in reversed(MIGRATIONS):
        for found in statements:
            if found.startswith(start):
                return found
    raise KeyError(start)


def open_writer(path: Path, config: Config) -> sqlite3.Connection:
    """Check the file (creating a new store if there is none), migrate it if needed, and
    return the writer connection."""
    if not path.parent.is_dir():
        raise StoreUnusable(f"{path.parent} is not a directory")
    if not os.path.lexists(path):
        _create(path, config)
    _check_file(path)
    try:
        conn = connect(path, config)
    except sqlite3.Error as exc:
        raise StoreUnusable(f"{path}: {translate(exc)}") from exc
    try:
        _refuse_foreign(conn, path)  # before anything writes to the file
        _enable_wal(conn, config.busy_timeout)
        _migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreUnusable(f"{path}: {translate(exc)}; the file was left untouched") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def make_directory(path: Path) -> None:
    """Create a data directory (0700) if it is missing, or say in one line why it cannot be."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnusable(f"{path}: cannot create the data directory: {why(exc)}") from None


def why(exc: OSError) -> str:
    """An operating-system refusal as a reason a person can act on."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the data directory is read-only (or not writable by this user)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "storage is full (disk or file size limit)"
    return exc.strerror or type(exc).__name__


def _create(path: Path, config: Config) -> None:
    """Build a new store under a temporary name, then publish it with a hard link.

    The link is atomic and never replaces a file, so a store appears fully initialised or not
    at all, even if the process dies half-way; when another process publishes first, its
    store is used. A leftover temporary file is only garbage (``.NAME.*.new``).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as exc:
        raise StoreUnusable(f"{path}: cannot create a store: {why(exc)}") from None
    try:
        conn = connect(temporary, config)
        try:
            _enable_wal(conn, config.busy_timeout)
            _migrate(conn, temporary)
        finally:
            conn.close()  # the last connection: its WAL is checkpointed into the file
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except sqlite3.Error as exc:
        raise StoreUnusable(f"{path}: cannot create a store: {translate(exc)}") from exc
    except OSError as exc:
        raise StoreUnusable(f"{path}: cannot create a store: {why(exc)}") from None
    finally:
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in ("-wal", "-shm"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _check_file(path: Path) -> None:
    """Make sure an existing file looks like a database (new stores are never empty)."""
    if path.is_symlink() or not path.is_file():
        raise StoreUnusable(f"{path} is not a regular file")
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreUnusable(
            f"{path}: the database file cannot be opened ({exc.strerror or exc})"
        ) from None
    if not header:
        raise StoreUnusable(
            f"{path} is empty; a threadline store is never empty, so it was left untouched. "
            "Remove it to start a new store."
        )
    if header != SQLITE_HEADER:
        raise StoreUnusable(f"{path} is not a SQLite database; it was left untouched")


def _enable_wal(conn: sqlite3.Connection, patience: float) -> None:
    # Switching to WAL needs a moment of exclusive access; processes opening the same new
    # file together can get SQLITE_BUSY at once, without the busy handler, so retry.
    deadline = time.monotonic() + patience
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        if mode.lower() != "wal":
            raise StoreUnusable(f"the database refused WAL mode (it is in {mode!r} mode)")
        return


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if _refuse_foreign(conn, path) == LATEST:
        return  # the common case, without taking the write lock
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _refuse_foreign(conn, path)  # again, now that we hold the lock
        if version < LATEST:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        for number, (name, statements) in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, name, now()))
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _refuse_foreign(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of a threadline (or brand-new) file; refuse any other file.

    One statement reads all three facts, so they come from one snapshot even while another
    process migrates the file.
    """
    version, app_id, objects = conn.execute(
        "SELECT (SELECT user_version FROM pragma_user_version), "
        "(SELECT application_id FROM pragma_application_id), "
        "(SELECT count(*) FROM sqlite_schema)"
    ).fetchone()
    if app_id != APPLICATION_ID and (app_id != 0 or version != 0 or objects != 0):
        raise StoreUnusable(
            f"{path} is a SQLite database but not a threadline store; it was left untouched"
        )
    if version > LATEST:
        raise StoreUnusable(
            f"{path} has schema version {version}, newer than this threadline understands "
            f"({LATEST}); upgrade threadline. The file was left untouched."
        )
    return int(version)

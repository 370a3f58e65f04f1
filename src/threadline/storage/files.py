"""The store's file on disk: whether its path still names the file the store opened, and
setting the store's content aside when it no longer does.

If the path comes to name another file (a backup moved over it, or none), writing on would
mix this file's WAL into the other one; so every commit and read checks first (one ``stat``),
and on close the store saves what it holds beside the new file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPLACED = (
    "the store file was replaced or removed while this server had it open, so it takes no "
    "more reads or writes; stop the server and start it again (restore a backup only with "
    "every server stopped, or with threadline import)"
)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` names now (device and inode); None if none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class StoreFile:
    """The file a store opened (and its WAL and shared memory), known by device and inode."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = _identity(path)
        self._sidecars = {suffix: _identity(self.sidecar(suffix)) for suffix in ("-wal", "-shm")}
        self.replaced = False

    def sidecar(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def still_ours(self) -> bool:
        """Whether the path still names the file this store opened."""
        if not self.replaced and _identity(self.path) != self._identity:
            self.replaced = True
            log.error("%s was replaced or removed while open; it takes no more calls", self.path)
        return not self.replaced

    def set_aside(self, conn: sqlite3.Connection) -> None:
        """The file was replaced (or removed) while open: save what ``conn`` holds (the writes
        acknowledged before the replacement included) beside the new file, close ``conn``, and
        remove the WAL and shared memory it used, which would otherwise be replayed into the
        new file when it is next opened."""
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
        aside = self.path.with_name(f"{self.path.name}.replaced-{stamp}.db")
        try:
            target = sqlite3.connect(aside)
            try:
                conn.backup(target)
            finally:
                target.close()
            log.error("%s was replaced or removed while open; it is kept as %s", self.path, aside)
        except (sqlite3.Error, OSError) as exc:
            log.error("%s was replaced or removed while open; saving it failed: %s", self.path, exc)
        conn.close()
        for suffix, identity in self._sidecars.items():
            if identity is not None and _identity(self.sidecar(suffix)) == identity:
                with contextlib.suppress(OSError):
                    self.sidecar(suffix).unlink()

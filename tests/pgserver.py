"""A real PostgreSQL server for the tests: an existing one, or a throwaway cluster.

``THREADLINE_TEST_DATABASE=postgresql://user@host:port/db`` names a server to use (the role
needs CREATEDB and CREATEROLE: each test gets a database and an application role of its own).
Without it, ``cluster()`` runs ``initdb`` into a temporary directory, starts the server on a
free loopback port, and removes it all afterwards. PostgreSQL refuses to run as root, so under
root the cluster runs as the ``postgres`` user (or ``nobody``). The binaries are found on
``THREADLINE_PG_BIN``, then ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin``.

``python -m tests.pgserver`` starts one for a developer (or ``python -m bench.drivers``) and
prints its URL until interrupted.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SUPERUSER = "threadline_admin"


def binaries() -> Path:
    named = os.environ.get("THREADLINE_PG_BIN")
    if named:
        return Path(named)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0 and (Path(found.stdout.strip()) / "initdb").exists():
            return Path(found.stdout.strip())
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if not versions:
        raise RuntimeError(
            "no PostgreSQL binaries (initdb) found: install PostgreSQL, set THREADLINE_PG_BIN, "
            "or point THREADLINE_TEST_DATABASE at a server"
        )
    return versions[-1].parent


def _runner() -> str | None:
    """The user the server runs as: ourselves, or an unprivileged one when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run as")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A throwaway server: its superuser's ``url``, and ``stop``/``start`` for fault tests."""

    bindir: Path
    root: Path
    port: int
    password: str
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bindir / "pg_ctl", "-D", self.root / "data", *args],
            capture_output=True, text=True, user=self.user,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
        options += "-c max_connections=200"
        log = self.root / "server.log"
        started = self._ctl("-l", log, "-w", "-t", "60", "-o", options, "start")
        if started.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start: {tail}")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: as a crash would (no checkpoint; recovery at the next start)."""
        self._ctl("-m", mode, "-w", "stop")


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A fresh server on 127.0.0.1 (passwords over TCP, as a real one), started; stopped and
    removed after."""
    bindir = binaries()
    user = _runner()
    root = Path(tempfile.mkdtemp(prefix="threadline-pg-"))
    try:
        password = secrets.token_hex(12)
        (root / "password").write_text(password)
        if user is not None:
            shutil.chown(root, user)
            shutil.chown(root / "password", user)
        subprocess.run(
            [bindir / "initdb", "-D", root / "data", "-U", SUPERUSER, "--pwfile",
             root / "password", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, user=user,
        )  # fmt: skip
        server = Cluster(bindir, root, _free_port(), password, user)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Database:
    """A database of its own for one test: the owner's URL (an ordinary role, as the store
    connects) and the superuser's URL on it (to look behind the store's back)."""

    url: str
    admin_url: str
    role: str


@contextlib.asynccontextmanager
async def database(server: str) -> AsyncIterator[Database]:
    import asyncpg

    name = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{name}' NOSUPERUSER NOBYPASSRLS")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
        base = urlsplit(server)
        host = f"{base.hostname}:{base.port}" if base.port else str(base.hostname)
        yield Database(
            url=f"postgresql://{name}:{name}@{host}/{name}",
            admin_url=urlunsplit(base._replace(path=f"/{name}")),
            role=name,
        )
    finally:
        await admin.close()
        admin = await asyncpg.connect(server)  # anew: a fault test may have restarted it
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"DROP ROLE IF EXISTS {name}")
        finally:
            await admin.close()


if __name__ == "__main__":
    with cluster() as running:
        print(running.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)

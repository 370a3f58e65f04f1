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


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """A fresh server on 127.0.0.1 (passwords over TCP, as a real one); yields a superuser's
    URL, and stops and removes the server after."""
    bindir = binaries()
    user = _runner()
    root = Path(tempfile.mkdtemp(prefix="threadline-pg-"))
    try:
        if user is not None:
            shutil.chown(root, user)
        data, log = root / "data", root / "server.log"
        password = secrets.token_hex(12)
        (root / "password").write_text(password)
        if user is not None:
            shutil.chown(root / "password", user)
        subprocess.run(
            [bindir / "initdb", "-D", data, "-U", SUPERUSER, "--pwfile", root / "password",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True, user=user,
        )  # fmt: skip
        port = _free_port()
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        started = subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start"],
            capture_output=True, text=True, user=user,
        )  # fmt: skip
        if started.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start: {tail}")
        try:
            yield f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                capture_output=True, user=user,
            )  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    with cluster() as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


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
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()

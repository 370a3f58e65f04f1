"""The command line of the remote side: ``threadline serve`` refusing unsafe or invalid
settings, starting without auth on request, and ``threadline token`` (real subprocesses)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2

from tests.helpers import INITIALIZE, MCP_HEADERS
from threadline.server.auth import StaticTokenVerifier, TokenFile


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    return env


def threadline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(tmp_path),
        check=False,
    )


def free_port(host: str = "0.0.0.0") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    for transport in ("streamable-http", "sse"):
        port, data = str(free_port()), str(tmp_path / "d")
        done = threadline(tmp_path, "serve", "--transport", transport, "--host", "0.0.0.0",
                          "--port", port, "--data-dir", data)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "--no-auth" in done.stderr and "0.0.0.0" in done.stderr
        assert done.stdout == ""
    assert not (tmp_path / "d").exists()


def test_serve_names_an_option_out_of_range(tmp_path: Path) -> None:
    done = threadline(tmp_path, "serve", "--transport", "streamable-http", "--port", "70000",
                      "--data-dir", str(tmp_path / "d"))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--port: input should be less than or equal to 65535" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_serve_with_no_auth_starts_warns_and_still_checks_hosts(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline", "serve", "--transport", "streamable-http",
         "--host", "0.0.0.0", "--port", str(port), "--no-auth", "--data-dir", str(tmp_path / "d"),
         "--allow-host", "threadline.example"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(tmp_path),
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                health = httpx2.get(base + "/healthz", headers={"Host": "threadline.example"})
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        body = json.dumps(INITIALIZE)
        for host, expected in (("threadline.example", 200), ("evil.example", 421)):
            response = httpx2.post(base + "/mcp", content=body,
                                   headers={**MCP_HEADERS, "Host": host})  # fmt: skip
            assert response.status_code == expected, (host, response.text)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert "WITHOUT authentication" in stderr and "--no-auth" in stderr
    assert stdout == ""


def test_token_commands_add_list_and_revoke(tmp_path: Path) -> None:
    tokens_file = tmp_path / "secret" / "tokens.json"
    added = threadline(tmp_path, "token", "add", "alice", "--tokens-file", str(tokens_file))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout == token + "\n" and token.startswith("tl_") and len(token) >= 40
    assert "shown only once" in added.stderr and token not in added.stderr
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    text = tokens_file.read_text()
    assert token not in text and token[3:] not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    entry = TokenFile(tokens_file).find(token)
    assert entry is not None and entry.user == "alice"
    assert anyio.run(StaticTokenVerifier(TokenFile(tokens_file)).verify_token, token) is not None

    listed = threadline(tmp_path, "token", "list", "--tokens-file", str(tokens_file))
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == [f"{entry.id}\talice\t{entry.created_at}"]
    assert token not in listed.stdout

    unknown = threadline(tmp_path, "token", "revoke", "mallory", "--tokens-file", str(tokens_file))
    assert unknown.returncode == 2 and "mallory" in unknown.stderr

    revoked = threadline(tmp_path, "token", "revoke", "alice", "--tokens-file", str(tokens_file))
    assert revoked.returncode == 0, revoked.stderr
    assert entry.id in revoked.stderr
    assert TokenFile(tokens_file).entries() == [] and TokenFile(tokens_file).find(token) is None
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    listed = threadline(tmp_path, "token", "list", "--tokens-file", str(tokens_file))
    assert (listed.returncode, listed.stdout) == (0, "")

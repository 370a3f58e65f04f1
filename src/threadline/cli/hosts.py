"""``threadline config HOST``: the snippet that starts this installation from an MCP host.

The snippet names this installation by absolute path (hosts start servers without your shell's
PATH), with the data directory and config file when they were given. ``--write`` merges it
into the host's config file, after copying that file to ``FILE.bak-TIMESTAMP``; every other
entry of the file is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from threadline.cli.common import Commands, Env, UsageError, add_common
from threadline.paths import env_dir

NAME = "threadline"


@dataclass(frozen=True)
class Host:
    key: str  # the object in the file that maps server names to servers
    title: str
    where: str  # for help text

    def path(self) -> Path:
        return _PATHS[self.title]()

    def entry(self, command: list[str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"command": command[0], "args": command[1:]}
        return {"type": "stdio", **entry} if self.key == "servers" else entry


def _claude_desktop() -> Path:
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = env_dir("APPDATA", Path.home() / "AppData" / "Roaming")
    else:
        base = env_dir("XDG_CONFIG_HOME", Path.home() / ".config")
    return base / "Claude" / "claude_desktop_config.json"


_PATHS: dict[str, Callable[[], Path]] = {
    "Claude Desktop": _claude_desktop,
    "Claude Code": lambda: Path.cwd() / ".mcp.json",
    "Cursor": lambda: Path.home() / ".cursor" / "mcp.json",
    "VS Code": lambda: Path.cwd() / ".vscode" / "mcp.json",
}

HOSTS = {
    "claude-desktop": Host("mcpServers", "Claude Desktop", "claude_desktop_config.json"),
    "claude-code": Host("mcpServers", "Claude Code", ".mcp.json in this directory (project)"),
    "cursor": Host("mcpServers", "Cursor", "~/.cursor/mcp.json"),
    "vscode": Host("servers", "VS Code", ".vscode/mcp.json in this directory (workspace)"),
}


def add_parsers(commands: Commands) -> None:
    config = commands.add_parser(
        "config",
        help="print (or --write) an MCP host's config for this installation",
        description="Print the ready-to-paste snippet that starts this threadline from an MCP "
        "host. With --write, merge it into the host's config file (a backup is made first). "
        + " ".join(f"{name}: {host.where}." for name, host in HOSTS.items()),
    )
    config.add_argument("host", choices=list(HOSTS))
    add_common(config)
    config.add_argument("--write", action="store_true", help="update the host's config file")
    config.set_defaults(run=_config)


def server_command(args: argparse.Namespace) -> list[str]:
    """This installation's ``threadline serve``, by absolute path, with the given options."""
    script = Path(sys.executable).with_name("threadline")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "threadline"]
    command.append("serve")
    if args.data_dir is not None:
        command += ["--data-dir", str(args.data_dir.expanduser().resolve())]
    if args.config is not None:
        command += ["--config", str(args.config.expanduser().resolve())]
    return command


def _config(args: argparse.Namespace, env: Env) -> None:
    host = HOSTS[args.host]
    command = server_command(args)
    snippet = {host.key: {NAME: host.entry(command)}}
    if not args.write:
        if args.host == "claude-code":
            print(f"claude mcp add --scope user {NAME} -- {shlex.join(command)}")
            print("# or, for this project only, `threadline config claude-code --write` or:")
        print(json.dumps(snippet, indent=2))
        return
    path = host.path()
    written, backup = write_entry(path, host.key, host.entry(command))
    if not written:
        print(f"{path} already starts {NAME} this way; nothing changed")
        return
    print(f"updated {path}" + (f" (the previous file is {backup})" if backup else ""))
    print(f"restart {host.title} to load it")


def write_entry(path: Path, key: str, entry: dict[str, Any]) -> tuple[bool, Path | None]:
    """Set ``path[key][NAME] = entry``, keeping everything else; back up a file that existed.

    A host file that is a symbolic link (dotfile managers make them) is written through: its
    target is backed up and replaced, and the link stays; a dangling link gets its target."""
    shown, path = path, Path(os.path.realpath(path))
    document: dict[str, Any] = {}
    if path.exists():
        try:
            document = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"{shown} is not readable JSON ({exc}); fix it or move it away"
            ) from None
        except RecursionError:
            raise UsageError(f"{shown} is nested too deeply to read; fix or move it") from None
        if not isinstance(document, dict) or not isinstance(document.get(key, {}), dict):
            raise UsageError(f"{shown} does not hold a JSON object with a {key!r} object")
    servers = document.setdefault(key, {})
    if servers.get(NAME) == entry:
        return False, None
    servers[NAME] = entry
    backup = None
    if path.exists():
        backup = _free(path.with_name(f"{path.name}.bak-{datetime.now():%Y%m%d-%H%M%S}"))
        shutil.copy2(path, backup)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2, ensure_ascii=False)
            out.write("\n")
        if backup is not None:
            shutil.copymode(backup, temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return True, backup


def _free(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... whichever does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def mentions(path: Path) -> list[str] | None:
    """The server entries of a host config that start threadline (None: no readable file)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        found = []
        if isinstance(document, dict):
            for key in ("mcpServers", "servers"):
                servers = document.get(key)
                if isinstance(servers, dict):
                    for name, server in servers.items():
                        if NAME in json.dumps(server):
                            found.append(f"{key}.{name}")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return found

"""Servers in subprocesses over stdio, as an MCP host runs them; calling tools; reading RSS.

A stdio server is spawned by the SDK's own ``Client(StdioServerParameters(...))``. Its process
id (to read its memory from ``/proc/<pid>/status``) is the child of this process that appears
while the client connects: the SDK does not expose the process it spawned.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent  # the repository: where ``bench`` imports from


class ToolFailed(RuntimeError):
    pass


async def call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool; its structured result, or ``ToolFailed`` with the error's text."""
    result = await client.call_tool(name, arguments)
    if result.is_error:
        words = " ".join(getattr(block, "text", "") for block in result.content)
        raise ToolFailed(f"{name}: {words}")
    return result.structured_content or {}


def serve_params(data_dir: Path, *, noop: bool = False) -> StdioServerParameters:
    """``python -m threadline serve --data-dir DIR``, or with ``noop`` the same server plus a
    no-op tool (``python -m bench.stdio_server``, run from the repository root)."""
    head = ["-m", "bench.stdio_server"] if noop else ["-m", "threadline", "serve"]
    return StdioServerParameters(
        command=sys.executable,
        args=[*head, "--data-dir", str(data_dir)],
        # An empty THREADLINE_CONFIG: no config file of this machine is read.
        env={"THREADLINE_CONFIG": "", "PYTHONIOENCODING": "utf-8"},
        cwd=str(ROOT),
    )


def _children() -> set[int]:
    """Process ids of this process's children (Linux ``/proc``; empty elsewhere)."""
    out: set[int] = set()
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return out
    for task in tasks.iterdir():
        try:
            out.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:
            continue
    return out


@dataclass
class Served:
    """A connected client and the process id of its server (None where it cannot be found)."""

    client: Client
    pid: int | None


@asynccontextmanager
async def serving(params: StdioServerParameters) -> AsyncIterator[Served]:
    """Spawn the server, connect, and find its process id; the server ends with the block."""
    before = _children()
    async with Client(params) as client:
        new = _children() - before
        yield Served(client, new.pop() if len(new) == 1 else None)


# Fields of /proc/<pid>/status worth keeping, all in kB there.
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize")


def memory(pid: int | None) -> dict[str, float] | None:
    """The process's resident memory in MiB (``/proc/<pid>/status``), or None if unreadable."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            out[key + "_MiB"] = int(value.split()[0]) / 1024
    return out if "VmRSS_MiB" in out else None


def proc_available() -> bool:
    return os.path.isdir("/proc/self/task")

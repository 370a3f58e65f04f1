"""MCP tools, resources and the prompt: thin adapters from the protocol to the store."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

from threadline.tools import compaction, context, messages, resources, search, sessions
from threadline.tools.common import Runtime

__all__ = ["Runtime", "register_all"]


def register_all(mcp: MCPServer[Any], runtime: Runtime) -> None:
    for module in (sessions, messages, compaction, context, search, resources):
        module.register(mcp, runtime)

"""The end-to-end baseline: a tool that does nothing, on the same server as threadline's."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer


def add_noop(mcp: MCPServer[Any]) -> MCPServer[Any]:
    """Register ``noop`` (returns ``"ok"``) next to threadline's own tools."""

    @mcp.tool()
    async def noop() -> str:
        """Does nothing (benchmark baseline)."""
        return "ok"

    return mcp

"""The threadline MCP server: wiring, transports, and the mapping from users to stores."""

from threadline.server.app import INSTRUCTIONS, build_server
from threadline.server.local import LocalRuntime

__all__ = ["INSTRUCTIONS", "LocalRuntime", "build_server"]

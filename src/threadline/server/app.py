"""The MCPServer: instructions, tools, resources, the prompt, and its subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolResult,
    InputRequiredResult,
)
from mcp.types import Tool as MCPTool
from pydantic import ValidationError

from threadline import __version__
from threadline.server import wire
from threadline.server.arguments import explain
from threadline.server.subscriptions import Relay, UserScopedBus, register_legacy
from threadline.tools import Runtime, register_all

INSTRUCTIONS = """\
threadline keeps persistent conversation threads ("sessions") for this user, in parallel and
isolated from each other. How to use it:
- One session per thread, topic or task. Create it with create_session and pass its
  session_id to every call: there is no "current session", so always name it.
- Each turn, append the user's message and your reply with append_messages. To edit a message
  or regenerate a reply, append with parent_id (a new branch); get_history reads the thread.
- Before asking the user to repeat something, search earlier threads with session_search.
- Write lasting facts about the user with update_context (block "memory", shared by all
  sessions); keep notes for this thread in "scratchpad". get_context shows the blocks and the
  frozen system prompt.
- When a session reports needs_compaction, call compact_session; nothing is lost.
- list_sessions finds earlier threads; fork_session explores an alternative safely.
"""


def build_server(
    runtime: Runtime,
    lifespan: AbstractAsyncContextManager[Any] | None = None,
    *,
    token_verifier: TokenVerifier | None = None,
    auth: AuthSettings | None = None,
    relay: Relay | None = None,
) -> MCPServer[Any]:
    """A threadline MCP server whose stores come from ``runtime``.

    ``lifespan`` (optional) is entered when the server starts and left when it stops: the
    place to open and close stores. ``token_verifier`` and ``auth`` turn on bearer auth (HTTP).
    ``relay`` passes resource events to and from the other replicas.
    """

    @asynccontextmanager
    async def run(_: MCPServer[Any]) -> AsyncIterator[Runtime]:
        if lifespan is None:
            yield runtime
        else:
            async with lifespan:
                yield runtime

    bus = UserScopedBus()
    if relay is not None:  # replicas on one database: events travel between them
        bus.relay = relay
        relay.attach(bus)
    mcp: MCPServer[Any] = _Server(
        "threadline",
        title="threadline",
        description="Persistent, parallel, isolated conversation threads.",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=run,
        token_verifier=token_verifier,
        auth=auth,
        subscriptions=bus,
    )
    register_all(mcp, runtime)
    register_legacy(mcp, runtime, bus)
    return mcp


class _Server(MCPServer[Any]):
    """The SDK's server, with what a model sees made lean (``server/wire.py``) and argument
    errors told as ``field: rule`` (``server/arguments.py``)."""

    async def list_tools(self) -> list[MCPTool]:
        return [wire.lean_tool(tool) for tool in await super().list_tools()]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"Error executing tool {name}: {explain(exc.__cause__)}") from exc
            raise
        return wire.compact(result, name) if isinstance(result, CallToolResult) else result

"""Tools for the working memory: update_context and get_context."""

from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import Field

from threadline.storage import BlockUsage, ContextView
from threadline.tools.common import Runtime, SessionId, hints, notify, using


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    labels = ", ".join(
        f"{b.label} ({b.scope}{', read-only' if b.readonly else ''}, {b.max_tokens} tokens)"
        for b in runtime.config.blocks
    )

    # Not marked destructive: an append adds, and a replace returns the text it replaced
    # (``replaced``), so nothing is lost that the caller cannot restore.
    @mcp.tool(annotations=hints())
    async def update_context(
        ctx: Context[Any, Any],
        session_id: SessionId,
        label: Annotated[str, Field(description=f"The block to write. Blocks: {labels}.")],
        content: Annotated[str, Field(description="The new text, or the text to add.")],
        mode: Annotated[
            Literal["replace", "append"],
            Field(description="replace the block's text, or append a line to it."),
        ] = "replace",
    ) -> BlockUsage:
        """Write to a context block, your persistent working memory.

        Blocks with scope 'user' (like memory) are shared by all of the user's sessions:
        write lasting facts and preferences there. Session blocks (like scratchpad) hold this
        thread's notes. Writes over a block's token limit are refused with the limit; then
        condense the block with mode='replace'. Returns how full the block is and, after a
        replace, the text it replaced (write it back to undo).
        """
        async with using(runtime) as store:
            usage = await store.update_context(session_id, label, content, mode)
        await notify(ctx, (session_id,), parts=("/context",))
        return usage

    @mcp.tool(annotations=hints(idempotent=True))
    async def get_context(
        ctx: Context[Any, Any],
        session_id: SessionId,
        refresh: Annotated[
            bool,
            Field(
                description="Re-render the frozen system prompt from the blocks as they are "
                "now (it is otherwise kept byte-stable for prompt caching)."
            ),
        ] = False,
    ) -> ContextView:
        """The session's context blocks and its frozen system prompt. `stale` says whether the
        blocks changed since the prompt was rendered."""
        async with using(runtime) as store:
            view = await store.get_context(session_id, refresh)
        if refresh:
            await notify(ctx, (session_id,), parts=("/context",))
        return view

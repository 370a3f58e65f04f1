"""Tools for sessions: create, list, inspect, rename, delete, fork, and usage."""

from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from pydantic import Field

from threadline.storage import Deleted, SessionInfo, SessionList, UsageTotals
from threadline.text import ID_PATTERN
from threadline.tools.common import Runtime, SessionId, hints, notify, using
from threadline.tools.schemas import Messages, Metadata

# The store holds titles to the configured limit (limits.max_title_chars) and names it.
Title = Annotated[str | None, Field(description="A short human title.")]


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    @mcp.tool(annotations=hints())
    async def create_session(
        ctx: Context[Any, Any],
        title: Title = None,
        session_id: Annotated[
            str | None,
            Field(
                description="Your own id for the session ([A-Za-z0-9._-], up to 64); "
                "generated if omitted.",
                pattern=ID_PATTERN,
            ),
        ] = None,
        metadata: Metadata = None,
        messages: Annotated[
            Messages | None, Field(description="Messages to seed the session with.")
        ] = None,
    ) -> SessionInfo:
        """Start a new conversation thread and return its info, including its session_id.

        Use one session per topic or task, and pass its session_id to every later call.
        Nothing is ever created implicitly: other tools fail on unknown ids.
        """
        async with using(runtime) as store:
            info = await store.create_session(title, session_id, metadata, messages)
        await notify(ctx, (info.session_id,), list_changed=True)
        return info

    @mcp.tool(annotations=hints(read_only=True, idempotent=True))
    async def list_sessions(
        limit: Annotated[int, Field(description="Sessions per page.", ge=1, le=200)] = 20,
        cursor: Annotated[
            str | None, Field(description="next_cursor from the previous page.")
        ] = None,
        status: Annotated[
            Literal["active", "ended"] | None, Field(description="Only sessions in this status.")
        ] = None,
        title: Annotated[str | None, Field(description="Part of the title (any case).")] = None,
        metadata: Annotated[
            Metadata,
            Field(description="Metadata to match (a JSON string)."),
        ] = None,
        updated_after: Annotated[
            str | None, Field(description="Active at or after (ISO 8601).")
        ] = None,
        updated_before: Annotated[str | None, Field(description="Last active before.")] = None,
    ) -> SessionList:
        """List your sessions, most recently active first, with titles and sizes.

        Use it to find the session_id of an earlier thread. Page with next_cursor.
        """
        async with using(runtime) as store:
            return await store.list_sessions(
                limit,
                cursor,
                status,
                title=title,
                metadata=metadata,
                updated_after=updated_after,
                updated_before=updated_before,
            )

    @mcp.tool(annotations=hints(read_only=True, idempotent=True))
    async def get_session(session_id: SessionId) -> SessionInfo:
        """One session's info: title, status, lineage, head, message and branch counts, token
        estimate, whether it needs compaction, and usage totals (input_tokens, output_tokens,
        cost, turns)."""
        async with using(runtime) as store:
            return await store.get_session(session_id)

    @mcp.tool(annotations=hints(idempotent=True))
    async def rename_session(
        ctx: Context[Any, Any],
        session_id: SessionId,
        title: Annotated[
            str | None,
            Field(description='The new title; "" removes it; null or omitted keeps it.'),
        ] = None,
        metadata: Annotated[
            Metadata,
            Field(description="Replaces the session's metadata when given; kept when omitted."),
        ] = None,
    ) -> SessionInfo:
        """Change a session's title, its metadata, or both."""
        async with using(runtime) as store:
            if title is None:
                info = await store.rename_session(session_id, metadata=metadata)
            else:
                info = await store.rename_session(session_id, title or None, metadata)
        await notify(ctx, (session_id,), parts=("",))
        return info

    @mcp.tool(annotations=hints(destructive=True, idempotent=True))
    async def delete_session(ctx: Context[Any, Any], session_id: SessionId) -> Deleted:
        """Delete a session for good: its messages, compactions, usage and session-scoped
        context. Forks of it are not affected. Only do this when the user asks."""
        async with using(runtime) as store:
            deleted = await store.delete_session(session_id)
        await notify(ctx, (session_id,), list_changed=True)
        return deleted

    @mcp.tool(annotations=hints())
    async def fork_session(
        ctx: Context[Any, Any],
        session_id: SessionId,
        message_id: Annotated[
            str | None,
            Field(
                description="Copy the history up to this message; default: the head.",
                max_length=64,
            ),
        ] = None,
        title: Title = None,
    ) -> SessionInfo:
        """Copy a session's history (up to a message) into a new, independent session.

        Use it to explore an alternative without disturbing the original. Returns the new
        session's info; its session_id is new.
        """
        async with using(runtime) as store:
            info = await store.fork_session(session_id, message_id, title)
        await notify(ctx, (info.session_id,), list_changed=True)
        return info

    @mcp.tool(annotations=hints())
    async def record_usage(
        ctx: Context[Any, Any],
        session_id: SessionId,
        input_tokens: Annotated[
            int, Field(description="Prompt tokens of one turn.", ge=0, le=10**12)
        ],
        output_tokens: Annotated[
            int, Field(description="Completion tokens of one turn.", ge=0, le=10**12)
        ],
        cost: Annotated[float | None, Field(description="Cost of the turn.", ge=0, le=1e9)] = None,
        model: Annotated[str | None, Field(description="Model name.", max_length=200)] = None,
    ) -> UsageTotals:
        """Add one LLM turn's token usage and cost to the session's totals; returns the totals.

        For the host or agent framework that has the provider's usage figures: a model does
        not know its own token counts, so it should not call this with guesses.
        """
        async with using(runtime) as store:
            totals = await store.record_usage(session_id, input_tokens, output_tokens, cost, model)
        await notify(ctx, (session_id,), parts=("",))
        return totals

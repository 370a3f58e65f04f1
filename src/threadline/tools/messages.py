"""Tools for messages: append, read history (with branches), move the head, delete."""

from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from threadline.storage import AppendResult, Branch, Deleted, History, SessionInfo
from threadline.tools.budget import BRANCH_BUDGET_CHARS, RESULT_BUDGET_CHARS, fit, fit_branches
from threadline.tools.common import (
    ExpectedHead,
    MessageId,
    Runtime,
    SessionId,
    guarded,
    hints,
    notify,
    using,
)
from threadline.tools.schemas import Messages


class HistoryPage(History):
    branches: list[Branch] | None = Field(
        default=None,
        description="The leaves of the message tree (with include_branches): the head's and "
        "the newest, as many as fit the result.",
    )
    branches_omitted: int = Field(default=0, description="Branches not listed (too many).")


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    @mcp.tool(annotations=hints())
    async def append_messages(
        ctx: Context[Any, Any],
        session_id: SessionId,
        messages: Annotated[
            Messages,
            Field(
                description="The messages, oldest first.",
                min_length=1,
                max_length=1000,
            ),
        ],
        parent_id: Annotated[
            str | None,
            Field(
                description="Attach under this message instead of the head: that is how you "
                "edit a message or regenerate a reply (a new branch). Omit to continue the "
                "conversation at its head."
            ),
        ] = None,
        new_root: Annotated[
            bool,
            Field(description="Start a separate new root in this session instead (rarely needed)."),
        ] = False,
        expected_head: ExpectedHead = None,
    ) -> AppendResult:
        """Append messages to a session, all or none, and move its head to the last one.

        Call it with the user's message and your reply each turn. Messages with an id that is
        already stored with the same content are skipped, so a retry never duplicates.
        With several writers on one thread, pass expected_head.
        Returns the message ids, the new head, and whether the session needs compaction.
        """
        if new_root and parent_id is not None:
            raise ToolError("new_root: cannot be combined with parent_id; send one of them")
        guard = guarded(expected_head)
        async with using(runtime) as store:
            if new_root or parent_id is not None:
                result = await store.append_messages(session_id, messages, parent_id, **guard)
            else:
                result = await store.append_messages(session_id, messages, **guard)
        await notify(ctx, (session_id,))
        return result

    @mcp.tool(annotations=hints(read_only=True, idempotent=True))
    async def get_history(
        session_id: SessionId,
        leaf_id: Annotated[
            str | None, Field(description="Read another branch, ending at this message.")
        ] = None,
        limit: Annotated[int, Field(description="Newest messages to return.", ge=1, le=500)] = 50,
        before: Annotated[
            str | None, Field(description="next_before of the previous page, to read further back.")
        ] = None,
        include_compacted: Annotated[
            bool, Field(description="Show the original messages instead of compaction summaries.")
        ] = False,
        truncate_tool_output: Annotated[
            int | None,
            Field(description="Cut older tool results to this many characters.", ge=0),
        ] = None,
        include_branches: Annotated[
            bool, Field(description="Also list every branch (leaf) of the session.")
        ] = False,
    ) -> HistoryPage:
        """Read a session's conversation, oldest first, ending at its head (or leaf_id).

        Returns the newest `limit` messages; has_more and next_before page further back.
        Compacted ranges read as one summary message (id 'compaction:N'). Use it to resume a
        thread; use session_search to find something without reading everything.
        """
        page: dict[str, Any] = {"leaf_id": leaf_id, "limit": limit, "before": before,
                                "include_compacted": include_compacted,
                                "truncate_tool_output": truncate_tool_output}  # fmt: skip
        every = None
        async with using(runtime) as store:
            if include_branches:  # one snapshot: the page and the branches agree
                history, every = await store.get_history_and_branches(session_id, **page)
            else:
                history = await store.get_history(session_id, **page)
        if every is None:
            return HistoryPage.model_construct(**dict(fit(history)), branches=None)
        branches = fit_branches(every)
        return HistoryPage.model_construct(
            **dict(fit(history, RESULT_BUDGET_CHARS - BRANCH_BUDGET_CHARS)),
            branches=branches,
            branches_omitted=len(every) - len(branches),
        )

    @mcp.tool(annotations=hints(idempotent=True))
    async def set_head(
        ctx: Context[Any, Any],
        session_id: SessionId,
        message_id: MessageId,
        expected_head: ExpectedHead = None,
    ) -> SessionInfo:
        """Move the session's head to message_id: history and the next append follow it
        from now on. A leaf (see get_history with include_branches) switches to that branch;
        an earlier message rewinds the thread to it (later messages stay, on their branch,
        and the next append starts a new branch there)."""
        async with using(runtime) as store:
            info = await store.set_head(session_id, message_id, **guarded(expected_head))
        await notify(ctx, (session_id,))
        return info

    @mcp.tool(annotations=hints(destructive=True))
    async def clear_session(
        ctx: Context[Any, Any], session_id: SessionId, expected_head: ExpectedHead = None
    ) -> Deleted:
        """Delete every message of a session; the session, its blocks and usage stay. Only
        when the user asks."""
        async with using(runtime) as store:
            result = await store.clear_session(session_id, **guarded(expected_head))
        await notify(ctx, (session_id,))
        return result

    @mcp.tool(annotations=hints(destructive=True))
    async def delete_messages(
        ctx: Context[Any, Any], session_id: SessionId, message_id: MessageId
    ) -> Deleted:
        """Delete a message and every message after it on its branches. If the head was
        among them it moves to the deleted message's parent. Only when the user asks."""
        async with using(runtime) as store:
            deleted = await store.delete_messages(session_id, message_id)
        await notify(ctx, (session_id,))
        return deleted

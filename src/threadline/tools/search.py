"""The session_search tool."""

from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from pydantic import Field

from threadline.storage import SearchResults
from threadline.storage.search import MAX_CONTEXT
from threadline.tools.common import Runtime, hints, using


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    @mcp.tool(annotations=hints(read_only=True, idempotent=True))
    async def session_search(
        query: Annotated[
            str,
            Field(
                description="A question or keywords, in plain words: messages holding more "
                "(and rarer) of its words rank first; word forms match (painted, painting). "
                'Put a phrase in double quotes ("error 0x80070005") to find that exact text, '
                "parts of words included (when no message holds it, its words rank as usual). "
                "Nothing is query syntax: operators are searched as "
                "text.",
                min_length=1,
                max_length=runtime.config.limits.max_query_chars,
            ),
        ],
        session_id: Annotated[
            str | None, Field(description="Search only this session; default: all sessions.")
        ] = None,
        role: Annotated[
            Literal["system", "user", "assistant", "tool"] | None,
            Field(description="Only messages with this role."),
        ] = None,
        after: Annotated[
            str | None,
            Field(
                description="Only messages from this time on: ISO 8601, such as 2026-03-01 "
                "or 2026-03-01T14:30Z (UTC when no zone is given)."
            ),
        ] = None,
        before: Annotated[
            str | None,
            Field(description="Only messages older than this time: ISO 8601, as for after."),
        ] = None,
        order: Annotated[
            Literal["relevance", "newest", "oldest"],
            Field(description="relevance (best match first), newest or oldest first."),
        ] = "relevance",
        context: Annotated[
            int,
            Field(
                description="How many messages before and after each hit on its conversation "
                "path to include, to read the exchange and not a fragment.",
                ge=0,
                le=MAX_CONTEXT,
            ),
        ] = 0,
        limit: Annotated[int, Field(description="Hits per page.", ge=1, le=50)] = 10,
        cursor: Annotated[
            str | None, Field(description="next_cursor of the previous page.")
        ] = None,
    ) -> SearchResults:
        """Search every conversation of the user (or one session). Ask a question or give
        keywords; use quotes for an exact phrase, and session_id, role, after and before to
        narrow it. Hits come best first: the session id and title, the message id, role,
        time, a snippet with the matched words in **bold**, and with context > 0 the
        messages around each hit. Compaction summaries are searched too (summary_of set).
        Search here before asking the user to repeat something they told you in another
        thread."""
        async with using(runtime) as store:
            return await store.session_search(
                query,
                session_id,
                role,
                limit,
                cursor,
                after=after,
                before=before,
                order=order,
                context=context,
            )

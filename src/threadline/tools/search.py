"""The session_search tool."""

from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from pydantic import Field

from threadline.storage import SearchResults
from threadline.tools.common import Runtime, hints, using


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    @mcp.tool(annotations=hints(read_only=True, idempotent=True))
    async def session_search(
        query: Annotated[
            str,
            Field(
                description="Words to find (all must match; any text is taken literally, "
                "including parts of words).",
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
        limit: Annotated[int, Field(description="Hits per page.", ge=1, le=50)] = 10,
        cursor: Annotated[
            str | None, Field(description="next_cursor of the previous page.")
        ] = None,
    ) -> SearchResults:
        """Search every conversation of the user (or one session) for words, ranked by
        relevance. Each hit has the session id and title, the message id, role, time and a
        snippet with the match in **bold**. Search here before asking the user to repeat
        something they told you in another thread."""
        async with using(runtime) as store:
            return await store.session_search(query, session_id, role, limit, cursor)

"""Sessions as MCP resources, and the resume_session prompt.

- ``threadline://sessions``: the session index (JSON, the 200 most recently active).
- ``threadline://sessions/{session_id}``: one session's info (JSON).
- ``threadline://sessions/{session_id}/history``: the transcript (Markdown).
- ``threadline://sessions/{session_id}/history.json``: the same history as JSON.
- ``threadline://sessions/{session_id}/context``: the frozen system prompt and the blocks.
"""

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import AssistantMessage, Message, UserMessage
from pydantic import Field

from threadline.storage import ContextView, History, SessionInfo
from threadline.text import readable
from threadline.tools.budget import fit
from threadline.tools.common import (
    INDEX_URI,
    Runtime,
    resource_errors,
    session_uri,
    using,
)

RESUME_MESSAGES = 100


def markdown(info: SessionInfo, history: History) -> str:
    lines = [f"# {info.title or info.session_id}", ""]
    lines.append(
        f"session `{info.session_id}` · {info.status} · {info.message_count} messages · "
        f"~{info.token_estimate} tokens"
    )
    if history.has_more:
        lines += [
            "",
            f"*(older messages not shown; read with get_history before '{history.next_before}')*",
        ]
    for m in history.messages:
        label = f"summary of {m.summary_of} messages" if m.summary_of is not None else m.role
        name = f" ({m.name})" if m.name else ""
        lines += ["", f"## {label}{name} · {m.created_at} · `{m.id}`", "", readable(m.content)]
    return "\n".join(lines) + "\n"


def context_text(view: ContextView) -> str:
    return json.dumps(view.model_dump(mode="json"), ensure_ascii=False, indent=1)


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    @mcp.resource(
        INDEX_URI,
        name="sessions",
        title="Sessions",
        description="Your sessions, most recently active first (up to 200): id, title, "
        "status, size.",
        mime_type="application/json",
    )
    async def index() -> str:
        async with using(runtime, resource_errors) as store:
            page = await store.list_sessions(limit=200)
        return page.model_dump_json()

    @mcp.resource(
        session_uri("{session_id}"),
        name="session",
        title="Session info",
        description="One session: title, status, lineage, head, counts, token estimate, usage.",
        mime_type="application/json",
    )
    async def session(session_id: str) -> str:
        async with using(runtime, resource_errors) as store:
            return (await store.get_session(session_id)).model_dump_json()

    async def _history(session_id: str) -> tuple[SessionInfo, History]:
        async with using(runtime, resource_errors) as store:
            info = await store.get_session(session_id)
            history = fit(await store.get_history(session_id, limit=200))
        return info, history

    @mcp.resource(
        session_uri("{session_id}", "/history"),
        name="history",
        title="Session transcript",
        description="The session's conversation up to its head as Markdown (newest 200 "
        "messages, compacted ranges as their summaries).",
        mime_type="text/markdown",
    )
    async def history_markdown(session_id: str) -> str:
        return markdown(*await _history(session_id))

    @mcp.resource(
        session_uri("{session_id}", "/history.json"),
        name="history_json",
        title="Session history (JSON)",
        description="The session's conversation up to its head as JSON (newest 200 messages).",
        mime_type="application/json",
    )
    async def history_json(session_id: str) -> str:
        _, history = await _history(session_id)
        return history.model_dump_json()

    @mcp.resource(
        session_uri("{session_id}", "/context"),
        name="context",
        title="Frozen system prompt and context blocks",
        description="The session's context blocks (working memory) and its frozen system prompt.",
        mime_type="application/json",
    )
    async def context(session_id: str) -> str:
        async with using(runtime, resource_errors) as store:
            return context_text(await store.get_context(session_id))

    @mcp.prompt(title="Resume a thread")
    async def resume_session(
        session_id: Annotated[str, Field(description="The session to resume.")],
    ) -> list[Message]:
        """The session's frozen system prompt and its recent history, to pick the thread up."""
        async with using(runtime) as store:
            info = await store.get_session(session_id)
            view = await store.get_context(session_id)
            history = fit(await store.get_history(session_id, limit=RESUME_MESSAGES))
        intro = (
            f"We are resuming the thread '{info.title or session_id}' (threadline session "
            f"{session_id}). Pass session_id='{session_id}' to threadline tools.\n\n"
            f"{view.system_prompt}"
        )
        out: list[Message] = [UserMessage(intro)]
        for m in history.messages:
            text = readable(m.content)
            if m.role == "assistant":
                out.append(AssistantMessage(text))
            elif m.role == "user" and m.summary_of is None:
                out.append(UserMessage(text))
            else:
                label = "summary of earlier messages" if m.summary_of is not None else m.role
                out.append(UserMessage(f"[{label}]\n{text}"))
        return out

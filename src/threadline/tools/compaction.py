"""The compact_session tool; without a summary it asks the host's model for one (sampling)."""
# No `from __future__ import annotations` in tool modules: the SDK evaluates these
# signatures at registration, and Resolve(...) names a local function.

import json
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Resolve, Sample
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import Field

from threadline.storage import CompactionPlan, CompactionResult, Message
from threadline.tools.common import (
    MODERN,
    ExpectedHead,
    Runtime,
    SessionId,
    guarded,
    hints,
    notify,
    using,
)

SUMMARY_TOKENS = 1500
WRITE_IT = (
    "Call get_history to read the conversation, write the summary yourself, and call "
    "compact_session again with summary set."
)
NO_SAMPLING = (
    "this host cannot write the summary for you (it does not support sampling). " + WRITE_IT
)
EMPTY_SAMPLE = "the host's model returned an empty summary, so nothing was compacted. " + WRITE_IT
SUMMARY_SYSTEM_PROMPT = (
    "You compress conversations for an assistant's memory. Write a summary that lets the "
    "assistant continue as if it had read every message. Use these sections:\n"
    "Topic: one sentence.\n"
    "Key points: decisions, facts, names, numbers, file paths, code identifiers, and what the "
    "user asked for and prefers.\n"
    "Current state: what has been done and where things stand.\n"
    "Open items: unanswered questions and next steps.\n"
    "If an earlier summary is given, produce an updated summary that keeps what still matters "
    "from it. Be concise and factual; do not invent anything."
)


def _transcript(plan: CompactionPlan) -> str:
    lines = []
    if plan.previous_summary:
        lines += ["Earlier summary:", plan.previous_summary, "", "Messages since then:"]
    for message in plan.messages:
        if message.summary_of is not None:
            continue
        lines.append(f"[{message.role}] {_text(message)}")
    return "\n".join(lines)


def _text(message: Message) -> str:
    content = message.content
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def register(mcp: MCPServer[Any], runtime: Runtime) -> None:
    rules = runtime.config.compaction
    keep_first_rule = f"Oldest messages to keep as they are; null: {rules.keep_first}."
    keep_last_rule = (
        f"Newest messages to keep as they are (exactly this many). null: the last "
        f"{rules.keep_last} and older ones while they fit in {rules.keep_last_tokens:,} tokens, "
        "never more than half of the conversation after the kept oldest ones."
    )

    async def summary_or_sample(
        session_id: str,
        summary: str | None,
        keep_first: int | None,
        keep_last: int | None,
        ctx: Context[Any, Any],
    ) -> str | Sample:
        """The caller's summary, or a request to the host's model to write one."""
        if summary is not None:
            return summary
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            raise ToolError(NO_SAMPLING)
        if ctx.protocol_version != MODERN and not ctx.session.can_send_request:
            raise ToolError(NO_SAMPLING)
        async with using(runtime) as store:
            plan = await store.plan_compaction(session_id, keep_first, keep_last)
        prompt = (
            f"Summarise these {plan.message_count} messages of a conversation.\n\n"
            + _transcript(plan)
        )
        return Sample(
            [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=SUMMARY_TOKENS,
            system_prompt=SUMMARY_SYSTEM_PROMPT,
        )

    @mcp.tool(annotations=hints())
    async def compact_session(
        ctx: Context[Any, Any],
        session_id: SessionId,
        written: Annotated[str | CreateMessageResult, Resolve(summary_or_sample)],
        summary: Annotated[
            str | None,
            Field(
                description="Your summary of the older messages (topic, key points, current "
                "state, open items). Omit it to have the host's model write one.",
                min_length=1,
            ),
        ] = None,
        keep_first: Annotated[
            int | None, Field(description=keep_first_rule, ge=0, le=10_000)
        ] = None,
        keep_last: Annotated[int | None, Field(description=keep_last_rule, ge=0, le=10_000)] = None,
        split: Annotated[
            bool,
            Field(
                description="Also end this session and continue in a new one that starts with "
                "the summary (returned as new_session_id)."
            ),
        ] = False,
        expected_head: ExpectedHead = None,
    ) -> CompactionResult:
        """Shrink a long session: a summary replaces older messages when history is read.

        Nothing is deleted: the originals stay searchable and get_history can show them
        (include_compacted). The first and the most recent messages are kept, and a tool call
        stays with its result. Call it when get_session or append_messages report
        needs_compaction.
        """
        if isinstance(written, CreateMessageResult):
            if not isinstance(written.content, TextContent) or not written.content.text.strip():
                raise ToolError(EMPTY_SAMPLE)
            text = written.content.text
        else:
            text = written
        async with using(runtime) as store:
            result = await store.compact_session(
                session_id, text, keep_first, keep_last, split, **guarded(expected_head)
            )
        new = (result.new_session_id,) if result.new_session_id else ()
        await notify(
            ctx,
            (session_id, *new),
            parts=("", "/history", "/history.json", "/context"),
            list_changed=split,
        )
        return result

"""The OpenAI Agents SDK's ``Session``, over a threadline store.

``ThreadlineSession(session_id, db_path)`` is what ``Runner.run(agent, input, session=...)``
takes: the SDK reads the thread with ``get_items`` and writes each turn's items with
``add_items``. Each item is one threadline message: a plain chat message (``{"role": "user",
"content": "..."}``) as plain text, any other kept whole (``{"type": "openai_agents.item",
"item": {...}}``, the item as the SDK gave it), with the role it speaks in (``user``,
``assistant``, ``system`` for ``developer``, ``tool`` for a tool's output), so
the thread is also a threadline session like any other: searchable, forkable, compactable,
readable through the MCP tools. Messages written by other means read back as plain
``{"role", "content"}`` items, a compaction summary as a user message.

Many sessions can share one open store (``store=``): the way to serve many threads from one
process. Without it, the session opens the store at ``db_path`` (or the default data
directory's) on first use and ``close()`` closes it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

from agents.memory.session import SessionABC
from agents.memory.session_settings import SessionSettings, resolve_session_limit

from threadline.paths import LOCAL_STORE, default_data_dir
from threadline.storage import Message, SessionExists, SessionNotFound, Store
from threadline.storage.schema import make_directory

PART = "openai_agents.item"
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_PLAIN = ("user", "assistant", "system")  # roles a plain item keeps as they are


def to_message(item: Any) -> dict[str, Any]:
    """An SDK item as the threadline message that keeps it: a plain chat message (exactly
    ``{"role", "content"}`` in that order, a string, a role threadline has) as plain text,
    which reads back as the same item; any other whole, as a JSON part."""
    if not isinstance(item, dict):
        raise TypeError(f"a session item must be a dict, not {type(item).__name__}")
    plain = list(item) == ["role", "content"] and isinstance(item["content"], str)
    if plain and item["role"] in _PLAIN:
        return {"role": item["role"], "content": item["content"]}
    role = _ROLES.get(item.get("role", ""))
    if role is None:
        kind = str(item.get("type", ""))
        role = "tool" if kind.endswith("_output") else "assistant"
    return {"role": role, "content": [{"type": PART, "item": item}]}


def to_item(message: Message) -> Any:
    """The SDK item a threadline message holds, or a plain one for any other message."""
    content = message.content
    if isinstance(content, list) and len(content) == 1:
        part = content[0]
        if isinstance(part, dict) and part.get("type") == PART and "item" in part:
            return part["item"]  # the message was read for this call: the caller may keep it
    role = "user" if message.role == "tool" or message.summary_of is not None else message.role
    text = content if isinstance(content, str) else _text(content)
    return {"role": role, "content": text}


def _copy(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists and scalars), a few times faster than deepcopy."""
    if type(value) is dict:
        return {k: v if type(v) in _SCALARS else _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [v if type(v) in _SCALARS else _copy(v) for v in value]
    return value


def _kept(item: Any) -> tuple[Any, bool]:
    """An item as the thread keeps it, with whether a shallow copy copies it whole (a chat
    message: every value a string or another scalar), which is ten times faster."""
    flat = type(item) is dict and all(type(v) in _SCALARS for v in item.values())
    return item, flat


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _text(parts: list[Any]) -> str:
    texts = [p.get("text") for p in parts if isinstance(p, dict)]
    return "\n".join(t for t in texts if isinstance(t, str))


class ThreadlineSession(SessionABC):
    """A threadline session as the Agents SDK's ``Session``, plus what threadline adds."""

    def __init__(
        self,
        session_id: str,
        db_path: str | Path | None = None,
        *,
        store: Store | None = None,
        create: bool = True,
        session_settings: SessionSettings | None = None,
    ) -> None:
        if store is not None and db_path is not None:
            raise ValueError("give db_path or store, not both")
        self.session_id = session_id
        self.session_settings = session_settings or SessionSettings()
        self._path = Path(db_path) if db_path is not None else default_data_dir() / LOCAL_STORE
        self._store = store
        self._owned = store is None
        self._create = create
        self._ready = False
        # The whole thread's items at _revision (kept private), each with _kept's flag.
        self._thread: list[tuple[Any, bool]] = []
        self._revision: str | None = None

    @property
    def store(self) -> Store:
        """The threadline store (opened by the first call when the session opens its own)."""
        if self._store is None:
            raise RuntimeError("the store opens with the session's first call")
        return self._store

    async def _session(self) -> Store:
        if self._store is None:
            make_directory(self._path.parent)
            opened = await Store.open(self._path)
            if self._store is None:
                self._store = opened
            else:  # a concurrent first call opened it meanwhile
                await opened.close()
        if not self._ready:
            try:
                await self._store.get_session(self.session_id)
            except SessionNotFound:
                if not self._create:
                    raise
                with contextlib.suppress(SessionExists):  # a concurrent first call made it
                    await self._store.create_session(session_id=self.session_id)
            self._ready = True
        return self._store

    # -- the SDK's Session ------------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The thread's items, oldest first; with a limit (or ``session_settings.limit``)
        the newest ``limit`` of them.

        The whole thread is kept in memory between calls and only what changed since is
        read (``Store.history_since``): a turn reads the items written since the last one,
        whoever wrote them. Each call returns items of its own, to change at will."""
        store = await self._session()
        limit = resolve_session_limit(limit, self.session_settings)
        if limit is not None and limit <= 0:
            return []
        if limit is not None:  # a bounded read costs what it reads; nothing is kept
            history = await store.get_history(self.session_id, limit=limit)
            return [to_item(m) for m in history.messages]
        while True:
            known = self._revision
            delta = await store.history_since(self.session_id, known)
            if delta.reset or self._revision == known:  # else a concurrent call moved on
                new = [_kept(to_item(m)) for m in delta.messages]
                self._thread = new if delta.reset else [*self._thread, *new]
                self._revision = delta.revision
                return [dict(item) if flat else _copy(item) for item, flat in self._thread]

    async def add_items(self, items: list[Any]) -> None:
        """Append the items in one atomic write."""
        if not items:
            return
        store = await self._session()
        await store.append_messages(self.session_id, [to_message(i) for i in items])

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item (None when the thread is empty)."""
        store = await self._session()
        message = await store.pop_message(self.session_id)
        return None if message is None else to_item(message)

    async def clear_session(self) -> None:
        """Empty the thread; the threadline session (and its blocks and usage) stays."""
        store = await self._session()
        await store.clear_session(self.session_id)

    # -- threadline's own -------------------------------------------------------------------

    async def search(self, query: str, **options: Any) -> Any:
        """``Store.session_search`` over this session (``session_id=None`` in ``options``
        searches every session of the store)."""
        store = await self._session()
        options.setdefault("session_id", self.session_id)
        return await store.session_search(query, **options)

    async def fork(
        self, message_id: str | None = None, title: str | None = None
    ) -> ThreadlineSession:
        """A new, independent session with this one's history (up to ``message_id``), on the
        same store."""
        store = await self._session()
        info = await store.fork_session(self.session_id, message_id=message_id, title=title)
        return ThreadlineSession(
            info.session_id, store=store, session_settings=self.session_settings
        )

    async def compact(self, summary: str, **options: Any) -> Any:
        """``Store.compact_session``: ``summary`` stands for the older items when read."""
        store = await self._session()
        return await store.compact_session(self.session_id, summary, **options)

    async def system_prompt(self) -> str:
        """The session's frozen system prompt (the context blocks, rendered)."""
        store = await self._session()
        return (await store.get_context(self.session_id)).system_prompt

    async def update_context(
        self, label: str, content: str, mode: Literal["replace", "append"] = "replace"
    ) -> Any:
        """``Store.update_context`` of one of this session's blocks."""
        store = await self._session()
        return await store.update_context(self.session_id, label, content, mode)

    async def close(self) -> None:
        """Close the store if this session opened it (a shared store stays open)."""
        if self._owned and self._store is not None:
            await self._store.close()
            self._store = None
            self._ready = False
            self._thread, self._revision = [], None

"""Model-based test: a hypothesis state machine drives a real Store against a small model.

The model is plain Python and follows the documented semantics (README "How it behaves" and
the docstrings): a message tree per session with a head; appends that extend the head, branch
at a parent or start a new root, idempotent by message id; deleting a subtree; forks that copy
the path and the compactions on it; compactions as an overlay chosen by the range rules
(``keep_first``, an exact explicit ``keep_last`` or the default tail with its token budget,
tool results never split off, a range that takes in a summary extends it), with ``split``;
context blocks (user scope shared, session scope per session, limits, read-only) and the
frozen system prompt; usage totals; search (which messages a query finds: ``matching``).

After every step every live session is read back (history plain and with
``include_compacted``, branches, session info, context) and compared with the model; a few
searches are checked for exactly the expected (session, message) hits; every deleted session
id is ``SessionNotFound``. At teardown the store is closed and the file passes SQLite's and
FTS5's integrity checks.

Defects the machine found (and that were fixed) are plain tests at the end of this file: an
explicit keep_last with empty messages at the tail, the compacted flag on history pages after
the first, the token estimate with partially overlapping compactions, deleting a branch while
the session has no head, and ASCII terms against letters whose lower case is ASCII.

The default run (60 examples of up to 40 steps, about 10 s) is derandomized, so it is the
same every time. Run longer, with fresh random examples each time::

    THREADLINE_MODEL_EXAMPLES=2000 pytest tests/test_model.py

(``THREADLINE_MODEL_STEPS`` sets the steps per example, 40 by default.) A failure prints the
steps, shrunk, and a ``@reproduce_failure`` line to replay it exactly.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.helpers import BACKENDS, integrity
from threadline import (
    BlockNotFound,
    BlockOverLimit,
    BlockReadOnly,
    Config,
    MessageConflict,
    MessageNotFound,
    NothingToCompact,
    SessionEnded,
    SessionExists,
    SessionNotFound,
    Store,
    ThreadlineError,
)
from threadline.config import Compaction
from threadline.storage import words

EXAMPLES = int(os.environ.get("THREADLINE_MODEL_EXAMPLES", "0") or 0)
STEPS = int(os.environ.get("THREADLINE_MODEL_STEPS", "40"))
MAX_SESSIONS = 5
OMIT = object()  # parent_id not passed

KEEP_LAST_TOKENS = 30  # small, so the default tail's token budget matters with short messages
COMPACTION = Compaction(keep_last_tokens=KEEP_LAST_TOKENS)
# index_delay=60: no indexing just because the test paused, so what is indexed when is decided
# by the steps alone (reproducible): never until 512 wait, everything at every write, or two
# messages per write (a moving watermark). Reopening indexes everything.
CONFIGS = (
    Config(index_delay=60, compaction=COMPACTION),
    Config(index_batch=1, index_chunk=1_000_000, index_delay=60, compaction=COMPACTION),
    Config(index_batch=1, index_chunk=2, index_delay=60, compaction=COMPACTION),
)
DEFAULTS = Config()
SPECS = {b.label: b for b in DEFAULTS.blocks}
LABELS = ("soul", "memory", "scratchpad")  # config order
SOUL = SPECS["soul"].default
KEEP_FIRST_DEFAULT = DEFAULTS.compaction.keep_first
KEEP_LAST_DEFAULT = DEFAULTS.compaction.keep_last

# Words around the unique tokens: ASCII, accents, sharp s, Greek, CJK, punctuation, and letters
# whose lower case is ASCII (the Kelvin sign, the dotted capital I). Letters SQLite's trigram
# tokenizer folds differently from Python are a documented gap of the indexed search, so
# queries keep non-ASCII text in its written case.
WORDS = (
    *("alpha", "Beta", "gamma delta", "naïve Café", "Straße", "ΟΔΟΣ", "東京で", "C# x:y"),
    *("\u212aelvin", "İstanbul"),
)


# -- the model ------------------------------------------------------------------------------


def estimate(text: str) -> int:
    """README: the larger of UTF-8 bytes / 4 (rounded up) and the number of words."""
    if not text:
        return 0
    return max((len(text.encode("utf-8")) + 3) // 4, len(text.split()))


def body(content: Any) -> str:
    """The searchable text of the content shapes this test writes."""
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] if p["type"] == "text" else p["content"] for p in content)


def is_tool_result(role: str, content: Any) -> bool:
    if role == "tool":
        return True
    return isinstance(content, list) and any(p.get("type") == "tool_result" for p in content)


def term_matches(term: str, text: str) -> bool:
    """A query term is a case-insensitive substring of the text (Python's lower-casing)."""
    return term.lower() in text.lower()


_STEMS = words.Tokenizer()  # the word index's stemmer, as the oracle of word forms


def searchable(
    live: dict[str, Sess], sid: str | None = None, role: str | None = None
) -> dict[Any, str]:
    """What search looks through, keyed as ``found`` keys hits: every message, and every
    compaction summary (it reads as a user message), of the live sessions in scope."""
    texts: dict[Any, str] = {}
    for s in live.values():
        if sid not in (None, s.sid):
            continue
        texts.update(
            ((s.sid, m.id), body(m.content)) for m in s.msgs.values() if role in (None, m.role)
        )
        if role in (None, "user"):
            texts.update(((s.sid, "compaction", i), c.summary) for i, c in enumerate(s.comps))
    return texts


def found(hits: list[tuple[str, str]]) -> tuple[set[tuple[str, str]], Counter[str]]:
    """The message hits, and how many summary hits each session has (a fork's copied
    summaries have ids the model does not know)."""
    summaries = Counter(sid for sid, mid in hits if mid.startswith("compaction:"))
    return {h for h in hits if not h[1].startswith("compaction:")}, summaries


def expected(keys: set[Any]) -> tuple[set[Any], Counter[str]]:
    return {k for k in keys if len(k) == 2}, Counter(k[0] for k in keys if len(k) == 3)


def matching(query: str, texts: dict[Any, str]) -> set[Any]:
    """The keys of the texts a query finds (README "Search"): with a quoted phrase, those
    holding every term; else, or when none does, those holding a word of the query (its stop
    words left out unless it is all stop words), stems compared; a query without a quoted
    phrase and with no word stored finds those holding every term."""
    parsed = words.parse(query, DEFAULTS)
    exact = {k for k, text in texts.items() if all(term_matches(t, text) for t in parsed.terms)}
    if parsed.exact and exact:
        return exact
    wanted = set().union(*_STEMS.stems(parsed.words)) if parsed.words else set()
    keys = list(texts)
    found = _STEMS.stems([texts[k] for k in keys])
    ranked = {k for k, stems in zip(keys, found, strict=True) if stems & wanted}
    return ranked if ranked or parsed.exact else exact


@dataclass
class Msg:
    id: str
    role: str
    content: Any
    parent: str | None
    meta: dict[str, Any] | None = None

    @property
    def tokens(self) -> int:
        return estimate(body(self.content))

    @property
    def tool_result(self) -> bool:
        return is_tool_result(self.role, self.content)

    def same(self, role: str, content: Any, meta: dict[str, Any] | None) -> bool:
        return (self.role, self.content, self.meta) == (role, content, meta)


@dataclass
class Comp:
    start: str
    end: str
    summary: str
    replaced: int
    store_id: str | None = None  # "compaction:N", once the store has shown it


@dataclass
class Sess:
    sid: str
    msgs: dict[str, Msg] = field(default_factory=dict)  # insertion (pk) order
    head: str | None = None
    comps: list[Comp] = field(default_factory=list)  # oldest first
    status: str = "active"
    continued_in: str | None = None  # where an ended session continues
    lineage: str | None = None
    parent: str | None = None
    forked_from: str | None = None
    scratchpad: str = ""
    frozen: tuple[str, str, str] = ("", "", "")
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    turns: int = 0
    last_model: str | None = None

    def path(self, leaf: str | None) -> list[str]:
        """Message ids from the root down to ``leaf``."""
        out = []
        while leaf is not None:
            out.append(leaf)
            leaf = self.msgs[leaf].parent
        return out[::-1]

    def depth(self, mid: str) -> int:
        return len(self.path(mid))

    def walk(self, leaf: str | None) -> list[tuple[Msg | Comp, bool]]:
        """History as read, oldest first: (message, compacted) or (summary, False) entries.

        From the leaf up, a message that ends a compaction (the newest, if several end there)
        reads as that summary and the walk continues above the compaction's start.
        """
        by_end = {c.end: c for c in self.comps}
        out: list[tuple[Msg | Comp, bool]] = []
        while leaf is not None:
            c = by_end.get(leaf)
            if c is not None:
                out.append((c, False))
                leaf = self.msgs[c.start].parent
            else:
                out.append((self.msgs[leaf], False))
                leaf = self.msgs[leaf].parent
        return out[::-1]

    def walk_full(self, leaf: str | None) -> list[tuple[Msg | Comp, bool]]:
        """Every message of the path, oldest first, flagged when inside an applied summary."""
        out: list[tuple[Msg | Comp, bool]] = []
        for entry, _ in self.walk(leaf):
            if isinstance(entry, Comp):
                ids = self.path(entry.end)
                ids = ids[ids.index(entry.start) :]
                out += [(self.msgs[i], True) for i in ids]
            else:
                out.append((entry, False))
        return out

    def leaves(self) -> list[str]:
        parents = {m.parent for m in self.msgs.values()}
        return [mid for mid in self.msgs if mid not in parents]

    def subtree(self, mid: str) -> set[str]:
        out = {mid}
        for m in self.msgs.values():  # parents come before children in insertion order
            if m.parent in out:
                out.add(m.id)
        return out


def tokens_of(entry: Msg | Comp) -> int:
    return estimate(entry.summary) if isinstance(entry, Comp) else entry.tokens


@dataclass
class Plan:
    chosen: list[Msg | Comp]
    tail: list[Msg | Comp]
    start: str
    end: str
    replaced: int


def plan_compaction(s: Sess, keep_first: int | None, keep_last: int | None) -> Plan | None:
    """The README's range rule on the history as it reads now; None: nothing to compact."""
    path = [entry for entry, _ in s.walk(s.head)]
    n = len(path)
    first = KEEP_FIRST_DEFAULT if keep_first is None else keep_first
    last = KEEP_LAST_DEFAULT if keep_last is None else keep_last
    rest = path[first:]
    tail_len = min(last, len(rest))  # an explicit keep_last is exact
    if keep_last is None:  # the default: at most half of the rest, in messages and tokens
        tail_len = min(last, len(rest) // 2)
        budget = min(KEEP_LAST_TOKENS, sum(tokens_of(e) for e in rest) // 2)
        used = sum(tokens_of(e) for e in rest[len(rest) - tail_len :])
        for entry in reversed(rest[: len(rest) - tail_len]):
            if used + tokens_of(entry) > budget:
                break
            used += tokens_of(entry)
            tail_len += 1
    lo, hi = first, n - tail_len

    def tool(i: int) -> bool:
        entry = path[i]
        return isinstance(entry, Msg) and entry.tool_result

    while lo < hi and tool(lo):  # never start on a tool result
        lo += 1
    while lo < hi and hi < n and tool(hi):  # never end right before one
        hi -= 1
    chosen = path[lo:hi]
    if len(chosen) < 2:
        return None
    start = chosen[0].start if isinstance(chosen[0], Comp) else chosen[0].id
    end = chosen[-1].end if isinstance(chosen[-1], Comp) else chosen[-1].id
    replaced = s.depth(end) - s.depth(start) + 1
    return Plan(chosen, path[hi:], start, end, replaced)


@dataclass
class NewMessage:
    """One message of a batch as drawn: what is sent, and what the model expects of it."""

    id: str | None
    role: str
    content: Any
    meta: dict[str, Any] | None
    token: str | None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.id is not None:
            out["id"] = self.id
        if self.meta is not None:
            out["metadata"] = self.meta
        return out


def apply_append(s: Sess, batch: list[NewMessage], parent: Any, ids: list[str]) -> tuple[Sess, int]:
    """The session after the append (a copy), and how many messages were inserted.

    Raises the error the store must raise. ``ids`` holds each message's final id.
    """
    if s.status == "ended":
        raise SessionEnded
    s = copy.deepcopy(s)
    if parent is OMIT:
        cur = s.head
    elif parent is None:
        cur = None
    elif parent not in s.msgs:
        raise MessageNotFound(s.sid, parent)
    else:
        cur = parent
    inserted = 0
    for m, mid in zip(batch, ids, strict=True):
        existing = s.msgs.get(mid)
        if existing is not None:
            if not existing.same(m.role, m.content, m.meta):
                raise MessageConflict
            cur = mid  # an identical retry: what follows in the batch goes below it
            continue
        s.msgs[mid] = Msg(mid, m.role, m.content, cur, m.meta)
        cur = mid
        inserted += 1
    if inserted:
        s.head = ids[-1]
    return s, inserted


# -- talking to the store -------------------------------------------------------------------


async def search_all(
    store: Store, query: str, session_id: str | None = None, role: str | None = None
) -> list[tuple[str, str]]:
    hits: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = await store.session_search(
            query, session_id=session_id, role=role, limit=50, cursor=cursor
        )
        hits += [(h.session_id, h.message_id) for h in page.hits]
        cursor = page.next_cursor
        if cursor is None:
            return hits


async def observe(
    store: Store, live: list[str], dead: list[str], queries: list[str]
) -> tuple[Any, ...]:
    """Everything the invariants compare, in one trip to the event loop."""
    sessions = {}
    for sid in live:
        sessions[sid] = (
            await store.get_session(sid),
            await store.get_history(sid),
            await store.get_history(sid, include_compacted=True),
            await store.list_branches(sid),
            await store.get_context(sid),
        )
    missing = {}
    for sid in dead:
        try:
            await store.get_session(sid)
            missing[sid] = "found"
        except ThreadlineError as exc:
            missing[sid] = type(exc).__name__
    hits = {q: await search_all(store, q) for q in queries}
    listed: list[tuple[str, str, int]] = []
    cursor = None
    while True:
        page = await store.list_sessions(limit=7, cursor=cursor)
        listed += [(x.session_id, x.status, x.message_count) for x in page.sessions]
        if (cursor := page.next_cursor) is None:
            break
    return sessions, missing, hits, listed


def as_rows(messages: list[Any]) -> list[tuple[Any, ...]]:
    return [(m.id, m.role, m.content, m.parent_id, m.compacted, m.summary_of) for m in messages]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="threadline-model-"))
        self.path = self.tmp / "model.db"
        self._portal_cm = start_blocking_portal(backend="asyncio")
        self.portal = self._portal_cm.__enter__()
        self.store: Store | None = None
        self.live: dict[str, Sess] = {}  # creation order
        self.dead: list[str] = ["never-created"]
        self.memory = ""  # the user-scope block, shared by every session
        self.tokens: list[str] = []  # every token ever written (lower case)
        self.counter = 0
        self.steps = 0

    # -- plumbing -------------------------------------------------------------------------

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def attempt(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, Exception | None]:
        try:
            return self.call(fn, *args, **kwargs), None
        except ThreadlineError as exc:
            return None, exc

    def next_n(self) -> int:
        self.counter += 1
        return self.counter

    def blocks_now(self, s: Sess) -> tuple[str, str, str]:
        return (SOUL, self.memory, s.scratchpad)

    def pick(self, data: st.DataObject) -> Sess:
        return self.live[data.draw(st.sampled_from(list(self.live)), label="session")]

    def draw_content(self, data: st.DataObject) -> tuple[str, Any, str | None]:
        """(role, content, token) of a new message; the token is unique to it."""
        shape = data.draw(
            st.sampled_from(
                [
                    *("user", "user", "assistant", "assistant", "assistant-parts"),
                    *("tool", "tool", "tool-result-parts", "system", "empty"),
                ]
            ),
            label="shape",
        )
        if shape == "empty":
            return data.draw(st.sampled_from(["user", "assistant"])), "", None
        n = self.next_n()
        token = f"w{n}"
        letter = "W" if data.draw(st.booleans(), label="upper") else "w"
        text = f"{data.draw(st.sampled_from(WORDS), label='word')} {letter}{n}"
        self.tokens.append(token)
        if shape == "assistant-parts":
            return "assistant", [{"type": "text", "text": text}], token
        if shape == "tool-result-parts":
            part = {"type": "tool_result", "tool_use_id": f"call{n}", "content": text}
            return "user", [part], token
        return shape, text, token

    def draw_message(self, data: st.DataObject, s: Sess | None) -> NewMessage:
        kinds = ["generated", "explicit"] * 4
        if s is not None and s.msgs:
            kinds += ["retry", "retry", "conflict"]
        foreign = []
        if s is not None:
            foreign = [
                mid for o in self.live.values() if o is not s for mid in o.msgs if mid not in s.msgs
            ]
            if foreign:
                kinds.append("foreign")
        kind = data.draw(st.sampled_from(kinds), label="kind")
        if kind == "retry":
            assert s is not None
            old = s.msgs[data.draw(st.sampled_from(list(s.msgs)), label="retry of")]
            return NewMessage(old.id, old.role, copy.deepcopy(old.content), old.meta, None)
        role, content, token = self.draw_content(data)
        if kind == "generated":
            return NewMessage(None, role, content, None, token)
        if kind == "explicit":
            return NewMessage(f"m{self.next_n()}", role, content, None, token)
        assert s is not None
        if kind == "conflict":
            mid = data.draw(st.sampled_from(list(s.msgs)), label="conflict with")
        else:
            mid = data.draw(st.sampled_from(foreign), label="foreign id")
        return NewMessage(mid, role, content, None, token)

    def open_store(self, config: Config) -> None:
        async def opening() -> Store:
            return await Store.open(self.path, config)

        self.store = self.portal.call(opening)

    # -- lifetime -------------------------------------------------------------------------

    @initialize(config=st.sampled_from(range(len(CONFIGS))), data=st.data())
    def start(self, config: int, data: st.DataObject) -> None:
        self.open_store(CONFIGS[config])
        self._create_session(data, seed=data.draw(st.integers(3, 10), label="seed"))

    def teardown(self) -> None:
        size = sum(len(s.msgs) for s in self.live.values())
        event(f"at the end: {len(self.live)} sessions, {size // 10 * 10}+ messages")
        try:
            if self.store is not None:
                self.call(self.store.close)
                check, fts = integrity(self.path)
                assert (check, fts) == ("ok", "ok")
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(config=st.sampled_from(range(len(CONFIGS))))
    def reopen(self, config: int) -> None:
        assert self.store is not None
        self.call(self.store.close)
        self.store = None
        self.open_store(CONFIGS[config])

    # -- sessions -------------------------------------------------------------------------

    @precondition(lambda self: len(self.live) < MAX_SESSIONS)
    @rule(data=st.data())
    def create_session(self, data: st.DataObject) -> None:
        self._create_session(data, seed=data.draw(st.integers(0, 3), label="seed"))

    def _create_session(self, data: st.DataObject, seed: int) -> None:
        assert self.store is not None
        choice = data.draw(st.sampled_from(["generated", "s1", "s2", "s3"]), label="id")
        sid = None if choice == "generated" else choice
        batch = [self.draw_message(data, None) for _ in range(seed)]
        kwargs: dict[str, Any] = {"session_id": sid}
        if batch:
            kwargs["messages"] = [m.wire() for m in batch]
        info, error = self.attempt(self.store.create_session, **kwargs)
        if sid is not None and sid in self.live:
            assert isinstance(error, SessionExists), error
            return
        assert error is None, error
        if sid is not None:
            assert info.session_id == sid
        s = Sess(info.session_id)
        s.frozen = self.blocks_now(s)
        if batch:
            history = self.call(self.store.get_history, info.session_id)
            ids = [m.id for m in history.messages]
            for m, mid in zip(batch, ids, strict=True):
                assert m.id is None or m.id == mid
            s, inserted = apply_append(s, batch, OMIT, ids)
            assert inserted == len(batch)
        self.live[s.sid] = s
        if s.sid in self.dead:
            self.dead.remove(s.sid)
        assert (info.message_count, info.head_id) == (len(s.msgs), s.head)

    @precondition(lambda self: len(self.live) > 1)  # the last one is kept: it has the history
    @rule(data=st.data())
    def delete_session(self, data: st.DataObject) -> None:
        assert self.store is not None
        s = self.pick(data)
        result = self.call(self.store.delete_session, s.sid)
        assert result.messages_deleted == len(s.msgs)
        del self.live[s.sid]
        self.dead.append(s.sid)

    @precondition(lambda self: self.live and len(self.live) < 2 * MAX_SESSIONS)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        assert self.store is not None
        s = self.pick(data)
        choices = ["head", "missing", *s.msgs]
        at = data.draw(st.sampled_from(choices), label="fork at")
        message_id = None if at == "head" else at
        info, error = self.attempt(self.store.fork_session, s.sid, message_id=message_id)
        event(f"fork: at {'the head' if at == 'head' else at if at == 'missing' else 'a message'}")
        if at == "missing":
            assert isinstance(error, MessageNotFound), error
            return
        assert error is None, error
        target = s.head if message_id is None else message_id
        if any(c.end in s.path(target) for c in s.comps):
            event("fork: copies a compaction")
        child = Sess(info.session_id, lineage="fork", parent=s.sid, forked_from=target)
        on_path = s.path(target)
        for mid in on_path:
            m = s.msgs[mid]
            child.msgs[mid] = Msg(mid, m.role, copy.deepcopy(m.content), m.parent, m.meta)
        child.head = target
        child.comps = [
            Comp(c.start, c.end, c.summary, c.replaced) for c in s.comps if c.end in on_path
        ]
        child.scratchpad = s.scratchpad
        child.frozen = s.frozen  # the source's prompt, as it is
        self.live[child.sid] = child
        assert (info.message_count, info.head_id) == (len(child.msgs), child.head)

    # -- messages -------------------------------------------------------------------------

    # Appending is most of what a conversation does: three rules, so it is drawn most often.
    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        self._append(data)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def append_more(self, data: st.DataObject) -> None:
        self._append(data)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def append_again(self, data: st.DataObject) -> None:
        self._append(data)

    def _append(self, data: st.DataObject) -> None:
        assert self.store is not None
        s = self.pick(data)
        mode = data.draw(
            st.sampled_from([*["head"] * 6, "parent", "parent", "root", "missing parent"]),
            label="parent",
        )
        parent: Any = OMIT
        if mode == "parent" and s.msgs:
            parent = data.draw(st.sampled_from(list(s.msgs)), label="parent id")
        elif mode == "root":
            parent = None
        elif mode == "missing parent":
            parent = "no-such-message"
        batch = [self.draw_message(data, s) for _ in range(data.draw(st.integers(1, 3)))]
        placeholders = [m.id or f"?{i}" for i, m in enumerate(batch)]
        try:
            apply_append(s, batch, parent, placeholders)
            expected: type[Exception] | None = None
        except (SessionEnded, MessageNotFound, MessageConflict) as exc:
            expected = type(exc)
        kwargs = {} if parent is OMIT else {"parent_id": parent}
        result, error = self.attempt(
            self.store.append_messages, s.sid, [m.wire() for m in batch], **kwargs
        )
        event(f"append: {mode}, {expected.__name__ if expected else 'ok'}")
        if expected is not None:
            assert isinstance(error, expected), (expected, error)
            return
        assert error is None, error
        ids = result.message_ids
        assert len(ids) == len(batch)
        for m, mid in zip(batch, ids, strict=True):
            assert m.id is None or m.id == mid
        new, inserted = apply_append(s, batch, parent, ids)
        event(f"append: inserted {inserted} of {len(batch)}")
        self.live[s.sid] = new
        assert result.head_id == new.head

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def set_head(self, data: st.DataObject) -> None:
        assert self.store is not None
        s = self.pick(data)
        mid = data.draw(st.sampled_from(["missing", *s.msgs]), label="message")
        info, error = self.attempt(self.store.set_head, s.sid, mid)
        if mid not in s.msgs:
            assert isinstance(error, MessageNotFound), error
            return
        assert error is None, error
        s.head = mid
        assert info.head_id == mid

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_messages(self, data: st.DataObject) -> None:
        assert self.store is not None
        s = self.pick(data)
        # A leaf (undoing the newest turn) as often as any message (a whole subtree).
        pool = data.draw(st.sampled_from(["leaf", "any"]), label="pool")
        choices = s.leaves() if pool == "leaf" and s.msgs else list(s.msgs)
        mid = data.draw(st.sampled_from(["missing", *choices]), label="message")
        result, error = self.attempt(self.store.delete_messages, s.sid, mid)
        if mid not in s.msgs:
            assert isinstance(error, MessageNotFound), error
            return
        assert error is None, error
        gone = s.subtree(mid)
        parent = s.msgs[mid].parent
        event(f"delete_messages: {'head inside' if s.head in gone else 'head elsewhere'}")
        if s.head in gone:  # README: a head inside moves up to the deleted message's parent
            s.head = parent
        s.msgs = {k: v for k, v in s.msgs.items() if k not in gone}
        s.comps = [c for c in s.comps if c.start not in gone and c.end not in gone]
        if s.head is None:  # the session is cleared: its prompt is rendered afresh
            s.frozen = self.blocks_now(s)
        assert (result.messages_deleted, result.head_id) == (len(gone), s.head)

    # -- compaction -----------------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(
        data=st.data(),
        keep_first=st.one_of(st.integers(0, 4), st.none()),
        keep_last=st.one_of(st.integers(0, 4), st.integers(0, 4), st.none()),
        split=st.sampled_from([False, False, True]),
    )
    def compact(
        self, data: st.DataObject, keep_first: int | None, keep_last: int | None, split: bool
    ) -> None:
        self._compact(data, keep_first, keep_last, split)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), keep_first=st.integers(0, 2), keep_last=st.integers(0, 2))
    def compact_small(self, data: st.DataObject, keep_first: int, keep_last: int) -> None:
        self._compact(data, keep_first, keep_last, False)

    def _compact(
        self, data: st.DataObject, keep_first: int | None, keep_last: int | None, split: bool
    ) -> None:
        assert self.store is not None
        s = self.pick(data)
        if split and len(self.live) >= 2 * MAX_SESSIONS:
            split = False
        n = self.next_n()
        token = f"w{n}"
        self.tokens.append(token)
        summary = f"summary {token}"
        if s.status == "ended":  # split already: it continues elsewhere, once
            calls = ((self.store.plan_compaction, ()), (self.store.compact_session, (summary,)))
            for call, extra in calls:
                _, error = self.attempt(
                    call, s.sid, *extra, keep_first=keep_first, keep_last=keep_last
                )
                assert isinstance(error, SessionEnded) and repr(s.continued_in) in str(error)
            event("compact: ended")
            return
        plan = plan_compaction(s, keep_first, keep_last)
        planned, error = self.attempt(
            self.store.plan_compaction, s.sid, keep_first=keep_first, keep_last=keep_last
        )
        if plan is None:
            assert isinstance(error, NothingToCompact), error
        else:
            assert error is None, error
            summaries = [e.summary for e in plan.chosen if isinstance(e, Comp)]
            assert (
                [(m.id, m.content) for m in planned.messages],
                planned.message_count,
                planned.tokens,
                planned.previous_summary,
            ) == (
                [
                    (e.store_id, e.summary) if isinstance(e, Comp) else (e.id, e.content)
                    for e in plan.chosen
                ],
                plan.replaced,
                sum(map(tokens_of, plan.chosen)),
                summaries[-1] if summaries else None,
            )
        result, error = self.attempt(
            self.store.compact_session,
            s.sid,
            summary,
            keep_first=keep_first,
            keep_last=keep_last,
            split=split,
        )
        if plan is None:
            event("compact: nothing to compact")
            assert isinstance(error, NothingToCompact), error
            return
        assert error is None, error
        assert result.replaced == plan.replaced
        for entry, got in ((plan.chosen[0], result.first_id), (plan.chosen[-1], result.last_id)):
            want = entry.store_id if isinstance(entry, Comp) else entry.id
            if want is not None:
                assert got == want
        s.comps.append(Comp(plan.start, plan.end, summary, plan.replaced, result.summary_id))
        s.frozen = self.blocks_now(s)
        event("compact: split" if split else "compact: ok")
        if not split:
            assert result.new_session_id is None
            return
        child = Sess(result.new_session_id, lineage="split", parent=s.sid, forked_from=s.head)
        first = self.call(self.store.get_history, child.sid)
        seed = NewMessage(None, "user", summary, {"compaction_of": s.sid}, token)
        kept = [e for e in plan.tail if isinstance(e, Msg)]
        batch = [seed] + [NewMessage(m.id, m.role, m.content, m.meta, None) for m in kept]
        ids = [first.messages[0].id] + [m.id for m in kept]
        child, _ = apply_append(child, batch, OMIT, ids)
        child.scratchpad = s.scratchpad
        child.frozen = self.blocks_now(child)
        s.status, s.continued_in = "ended", child.sid
        self.live[child.sid] = child

    # -- context and usage ----------------------------------------------------------------

    @precondition(lambda self: self.live)
    @rule(
        data=st.data(),
        label=st.sampled_from(["memory", "memory", "scratchpad", "scratchpad", "soul", "nope"]),
        mode=st.sampled_from(["replace", "append"]),
        size=st.sampled_from(["note", "note", "note", "medium", "huge", "empty"]),
    )
    def update_context(self, data: st.DataObject, label: str, mode: str, size: str) -> None:
        assert self.store is not None
        s = self.pick(data)
        n = self.next_n()
        content = {
            "note": f"note {n}",
            "medium": f"medium {n} " + "m" * 1800,  # ~450 tokens: two of them fill a block
            "huge": f"huge {n} " + "h" * 5000,  # over every limit
            "empty": "",
        }[size]
        usage, error = self.attempt(self.store.update_context, s.sid, label, content, mode=mode)
        event(f"update_context: {label}, {type(error).__name__ if error else 'ok'}")
        if label == "nope":
            assert isinstance(error, BlockNotFound), error
            return
        if label == "soul":
            assert isinstance(error, BlockReadOnly), error
            return
        current = self.memory if label == "memory" else s.scratchpad
        if mode == "append" and current:
            content = current + ("" if current.endswith("\n") else "\n") + content
        tokens = estimate(content)
        if tokens > SPECS[label].max_tokens:
            assert isinstance(error, BlockOverLimit), error
            return
        assert error is None, error
        assert (usage.label, usage.tokens) == (label, tokens)
        if label == "memory":
            self.memory = content
        else:
            s.scratchpad = content

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def refresh_context(self, data: st.DataObject) -> None:
        assert self.store is not None
        s = self.pick(data)
        view = self.call(self.store.get_context, s.sid, refresh=True)
        s.frozen = self.blocks_now(s)
        assert not view.stale

    @precondition(lambda self: self.live)
    @rule(
        data=st.data(),
        input_tokens=st.integers(0, 5000),
        output_tokens=st.integers(0, 5000),
        quarters=st.one_of(st.none(), st.integers(0, 40)),
        model=st.sampled_from([None, "model-a", "model-b"]),
    )
    def record_usage(
        self,
        data: st.DataObject,
        input_tokens: int,
        output_tokens: int,
        quarters: int | None,
        model: str | None,
    ) -> None:
        assert self.store is not None
        s = self.pick(data)
        cost = None if quarters is None else quarters / 4  # exact in binary
        totals = self.call(self.store.record_usage, s.sid, input_tokens, output_tokens, cost, model)
        s.input_tokens += input_tokens
        s.output_tokens += output_tokens
        s.cost += cost or 0.0
        s.turns += 1
        s.last_model = model or s.last_model
        assert (totals.input_tokens, totals.output_tokens, totals.cost, totals.turns) == (
            s.input_tokens,
            s.output_tokens,
            s.cost,
            s.turns,
        )

    # -- reads with arguments -------------------------------------------------------------

    @precondition(lambda self: any(s.msgs for s in self.live.values()))
    @rule(data=st.data())
    def search_substring(self, data: st.DataObject) -> None:
        """Any piece of stored text (ASCII letters in any case), alone or with a second term,
        quoted or not, over everything or one session or one role, finds exactly the messages
        ``matching`` says."""
        assert self.store is not None
        texts = [body(m.content) for s in self.live.values() for m in s.msgs.values()]
        texts = [t for t in texts if t.strip()]
        if not texts:
            return
        terms = []
        for _ in range(data.draw(st.integers(1, 2), label="terms")):
            text = data.draw(st.sampled_from(texts), label="text")
            i = data.draw(st.integers(0, len(text) - 1), label="from")
            j = data.draw(st.integers(i + 1, min(len(text), i + 10)), label="to")
            piece = "".join(
                c.swapcase() if c.isascii() and data.draw(st.booleans()) else c for c in text[i:j]
            )
            terms += piece.split()
        if not terms:
            return
        query = " ".join(terms)
        if '"' not in query and data.draw(st.booleans(), label="quoted"):
            query = f'"{terms[0]}" ' + " ".join(terms[1:])
        where = data.draw(st.sampled_from(["all", "all", "session"]), label="where")
        sid = self.pick(data).sid if where == "session" else None
        role = data.draw(st.sampled_from([None, None, "user", "assistant", "tool"]), label="role")
        got = self.call(search_all, self.store, query, session_id=sid, role=role)
        want = matching(query, searchable(self.live, sid, role))
        assert len(got) == len(set(got)), f"duplicate hits for {query!r}"
        assert found(got) == expected(want), (query, sid, role)

    @precondition(lambda self: any(s.msgs for s in self.live.values()))
    @rule(
        data=st.data(),
        limit=st.integers(1, 5),
        include_compacted=st.booleans(),
    )
    def page_history(self, data: st.DataObject, limit: int, include_compacted: bool) -> None:
        """Pages of ``limit`` chained by ``next_before`` read the same as one read, for the
        head or any leaf."""
        assert self.store is not None
        s = self.pick(data)
        if not s.msgs:
            return
        leaf = data.draw(st.sampled_from([None, *s.leaves()]), label="leaf")

        async def pages() -> list[Any]:
            assert self.store is not None
            out: list[Any] = []
            before = None
            for _ in range(1000):
                page = await self.store.get_history(
                    s.sid,
                    leaf_id=leaf,
                    limit=limit,
                    before=before,
                    include_compacted=include_compacted,
                )
                assert len(page.messages) <= limit
                out = list(page.messages) + out
                if not page.has_more:
                    assert page.next_before is None
                    return out
                assert page.next_before == page.messages[0].id
                before = page.next_before
            raise AssertionError("history pages never end")

        got = self.call(pages)
        target = s.head if leaf is None else leaf
        walk = s.walk_full(target) if include_compacted else s.walk(target)
        self.compare_history(s, walk, got, f"pages of {limit}")

    @rule(
        data=st.data(),
        op=st.sampled_from(
            [
                "get_session",
                "get_history",
                "list_branches",
                "append",
                "set_head",
                "delete_messages",
                "fork",
                "compact",
                "plan",
                "update_context",
                "get_context",
                "record_usage",
                "search",
                "delete_session",
            ]
        ),
    )
    def unknown_session(self, data: st.DataObject, op: str) -> None:
        assert self.store is not None
        sid = data.draw(st.sampled_from(self.dead), label="dead session")
        store = self.store
        calls = {
            "get_session": lambda: store.get_session(sid),
            "get_history": lambda: store.get_history(sid),
            "list_branches": lambda: store.list_branches(sid),
            "append": lambda: store.append_messages(sid, [{"role": "user", "content": "x"}]),
            "set_head": lambda: store.set_head(sid, "m1"),
            "delete_messages": lambda: store.delete_messages(sid, "m1"),
            "fork": lambda: store.fork_session(sid),
            "compact": lambda: store.compact_session(sid, "s", keep_first=0, keep_last=0),
            "plan": lambda: store.plan_compaction(sid),
            "update_context": lambda: store.update_context(sid, "memory", "x"),
            "get_context": lambda: store.get_context(sid, refresh=True),
            "record_usage": lambda: store.record_usage(sid, 1, 1),
            "search": lambda: store.session_search("x", session_id=sid),
            "delete_session": lambda: store.delete_session(sid),
        }
        with pytest.raises(SessionNotFound):
            self.portal.call(calls[op])

    # -- invariants -----------------------------------------------------------------------

    def compare_history(
        self, s: Sess, walk: list[tuple[Msg | Comp, bool]], messages: list[Any], what: str
    ) -> None:
        got = as_rows(messages)
        # Learn the summary ids the store gave copies (forks) the first time they show.
        if len(got) == len(walk):
            known = {c.store_id for o in self.live.values() for c in o.comps} - {None}
            for (entry, _), row in zip(walk, got, strict=True):
                if isinstance(entry, Comp) and entry.store_id is None:
                    assert row[0].startswith("compaction:") and row[0] not in known, row
                    entry.store_id = row[0]
                    known.add(row[0])
        want = []
        for entry, compacted in walk:
            if isinstance(entry, Comp):
                parent = s.msgs[entry.start].parent
                want.append((entry.store_id, "user", entry.summary, parent, False, entry.replaced))
            else:
                want.append((entry.id, entry.role, entry.content, entry.parent, compacted, None))
        assert got == want, f"{s.sid}: {what}"

    @invariant()
    def store_matches_model(self) -> None:
        assert self.store is not None
        self.steps += 1
        queries = []
        if self.tokens:
            queries = [self.tokens[-1], self.tokens[self.steps % len(self.tokens)].upper()]
        sessions, missing, hits, listed = self.call(
            observe, self.store, list(self.live), self.dead, queries
        )
        assert sorted(listed) == sorted((s.sid, s.status, len(s.msgs)) for s in self.live.values())
        for sid, s in self.live.items():
            info, history, full, branches, view = sessions[sid]
            self.compare_history(s, s.walk(s.head), history.messages, "history")
            self.compare_history(s, s.walk_full(s.head), full.messages, "include_compacted")
            assert not history.has_more and not full.has_more
            leaves = s.leaves()
            assert [(b.leaf_id, b.message_count, b.is_head, b.preview) for b in branches] == [
                (leaf, s.depth(leaf), leaf == s.head, body(s.msgs[leaf].content)[:160])
                for leaf in leaves
            ], sid
            expected_info = (
                s.status,
                s.continued_in,
                s.lineage,
                s.parent,
                s.forked_from,
                len(s.msgs),
                s.head,
                len(leaves),
                len(s.comps),
                s.input_tokens,
                s.output_tokens,
                s.cost,
                s.turns,
                s.last_model,
                sum(tokens_of(entry) for entry, _ in s.walk(s.head)),
            )
            assert (
                info.status,
                info.continued_in,
                info.lineage,
                info.parent_session_id,
                info.forked_from_message_id,
                info.message_count,
                info.head_id,
                info.branch_count,
                info.compactions,
                info.input_tokens,
                info.output_tokens,
                info.cost,
                info.turns,
                info.last_model,
                info.token_estimate,
            ) == expected_info, sid
            now = self.blocks_now(s)
            assert [(b.label, b.content) for b in view.blocks] == list(
                zip(LABELS, now, strict=True)
            )
            assert view.stale == (now != s.frozen), sid
            for value in s.frozen:
                assert f"<value>\n{value}\n</value>" in view.system_prompt, sid
        assert missing == dict.fromkeys(self.dead, "SessionNotFound")
        texts = searchable(self.live)
        for query, got in hits.items():
            want = matching(query, texts)
            assert len(got) == len(set(got)), f"duplicate hits for {query!r}"
            assert found(got) == expected(want), query


StoreMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 60,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=not EXAMPLES,
    print_blob=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreModel = StoreMachine.TestCase


# -- defects found by the machine, as plain tests -------------------------------------------


@BACKENDS
async def test_an_explicit_keep_last_is_exact_when_the_newest_message_is_empty(
    store: Store,
) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(
        sid,
        [
            {"id": "a", "role": "user", "content": "first"},
            {"id": "b", "role": "assistant", "content": "second"},
            {"id": "c", "role": "user", "content": ""},
        ],
    )
    result = await store.compact_session(sid, "gist", keep_first=0, keep_last=0)
    assert (result.first_id, result.last_id, result.replaced) == ("a", "c", 3)


@BACKENDS
async def test_paged_history_flags_a_compacted_range_on_every_page(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(
        sid, [{"id": f"m{i}", "role": "user", "content": f"c{i}"} for i in range(4)]
    )
    await store.compact_session(sid, "gist", keep_first=0, keep_last=0)
    full = await store.get_history(sid, include_compacted=True)
    assert [m.compacted for m in full.messages] == [True] * 4
    newest = await store.get_history(sid, limit=2, include_compacted=True)
    assert [(m.id, m.compacted) for m in newest.messages] == [("m2", True), ("m3", True)]
    older = await store.get_history(sid, limit=2, before=newest.next_before, include_compacted=True)
    assert [(m.id, m.compacted) for m in older.messages] == [("m0", True), ("m1", True)]


@BACKENDS
async def test_the_token_estimate_is_what_history_reads_with_overlapping_compactions(
    store: Store,
) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(
        sid, [{"id": f"m{i}", "role": "user", "content": f"message {i}"} for i in range(1, 13)]
    )
    first = await store.compact_session(sid, "first", keep_first=2, keep_last=2)
    assert (first.first_id, first.last_id) == ("m3", "m10")
    await store.set_head(sid, "m8")  # off the range's end: history shows m1..m8 again
    second = await store.compact_session(sid, "second", keep_first=1, keep_last=1)
    assert (second.first_id, second.last_id) == ("m2", "m7")
    info = await store.set_head(sid, "m12")  # both ranges end on this path
    history = await store.get_history(sid)
    assert [m.id for m in history.messages] == ["m1", "m2", first.summary_id, "m11", "m12"]
    assert info.token_estimate == sum(estimate(m.content) for m in history.messages)


@BACKENDS
async def test_deleting_a_branch_leaves_no_head_alone(store: Store) -> None:
    sid = (await store.create_session()).session_id
    await store.append_messages(
        sid,
        [{"id": "a", "role": "user", "content": "a"}, {"id": "b", "role": "user", "content": "b"}],
    )
    await store.append_messages(sid, [{"id": "x", "role": "user", "content": "x"}], parent_id=None)
    assert (await store.delete_messages(sid, "x")).head_id is None  # the head's root: gone
    result = await store.delete_messages(sid, "b")
    assert result.head_id is None
    assert (await store.get_session(sid)).head_id is None
    assert (await store.get_history(sid)).messages == []


@pytest.mark.parametrize("index_batch", [512, 1])
async def test_an_ascii_term_finds_a_letter_whose_lower_case_is_ascii(
    db_path: Path, index_batch: int
) -> None:
    text = "\u212aelvin scale"
    assert "kelvin" in text.lower()
    config = Config(index_batch=index_batch, index_delay=60)
    async with Store.open(db_path, config) as store:
        sid = (await store.create_session()).session_id
        await store.append_messages(sid, [{"id": "k", "role": "user", "content": text}])
        hits = (await store.session_search("kelvin")).hits
    assert [(h.session_id, h.message_id) for h in hits] == [(sid, "k")]

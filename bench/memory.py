"""Workload 7: resident memory of a ``threadline serve`` process serving the large store.

The store of workloads 3-5 is built as ``local.db`` in a data directory, the file
``threadline serve --data-dir DIR`` serves over stdio. The server runs as a subprocess
spawned by the SDK's ``Client(StdioServerParameters(...))``, exactly as a desktop host runs
it; the client makes ``server_calls`` calls (two ``get_history(limit=50)`` on sessions of
every size for each ``session_search(q, limit=10)``), then reads ``VmRSS`` (resident now) and
``VmHWM`` (the peak) from ``/proc/<pid>/status``. The baseline, in the same run: the same
server on a store holding one 50-message session, after the same calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import baseline
from bench.bigstore import BigStore, queries_for
from bench.sizes import Results, Sizes, clock, scratch
from bench.stats import Latencies, Row
from bench.stdio import call, memory, proc_available, serve_params, serving
from bench.text import WordSalad

SEED_MESSAGES = 50
BASELINE_LABEL = f"same server, store of {SEED_MESSAGES} messages"


async def _drive(
    data_dir: Path,
    sessions: Sequence[str] | None,
    queries: Sequence[str],
    calls: int,
    salad: WordSalad,
) -> dict[str, Any]:
    """Serve ``data_dir`` over stdio, make ``calls`` calls, and read the server's memory."""
    history, search = Latencies(), Latencies()
    async with serving(serve_params(data_dir)) as served:
        client = served.client
        if sessions is None:  # the baseline store: one session of SEED_MESSAGES messages
            info = await call(client, "create_session", {"title": "bench"})
            messages = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": text}
                for i, text in enumerate(salad.messages(SEED_MESSAGES, seed=7000))
            ]
            await call(
                client, "append_messages", {"session_id": info["session_id"], "messages": messages}
            )
            sessions = [info["session_id"]]
        await call(client, "get_history", {"session_id": sessions[0], "limit": 50})
        started = memory(served.pid)
        rotation = itertools.cycle(sessions)
        asked = itertools.cycle(queries)
        for i in range(calls):
            if i % 3 == 2:
                arguments: dict[str, Any] = {"query": next(asked), "limit": 10}
                t0 = clock()
                await call(client, "session_search", arguments)
                search.add(clock() - t0)
            else:
                arguments = {"session_id": next(rotation), "limit": 50}
                t0 = clock()
                page = await call(client, "get_history", arguments)
                history.add(clock() - t0)
                assert len(page["messages"]) == 50, arguments
        after = memory(served.pid)
    return {
        "pid_found": served.pid is not None,
        "calls": calls,
        "after_start": started,
        "after_calls": after,
        "get_history_over_stdio": history.summary_ms(),
        "session_search_over_stdio": search.summary_ms(),
    }


async def server_memory(big: BigStore, sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workload 7: RSS of ``threadline serve`` on the big store, against a 50-message store."""
    work = f"7. server memory, {big.messages:,} msgs (stdio)"
    calls = sizes.server_calls
    figures = (
        ("RSS after start and 1 call", "after_start", "VmRSS_MiB"),
        (f"RSS after {calls} calls", "after_calls", "VmRSS_MiB"),
        ("peak RSS (VmHWM)", "after_calls", "VmHWM_MiB"),
    )
    if big.path.name != "local.db":
        raise ValueError(f"threadline serve serves local.db, not {big.path.name}")
    if not proc_available():
        for figure, _, _ in figures:
            results.add(
                Row(work, figure, float("nan"), "MiB", "lower", note="skipped (needs /proc)")
            )
        return
    raw = baseline.read_only(big.path)
    try:
        queries = queries_for(raw, salad, max(1, calls // 3))
    finally:
        raw.close()
    sessions = [big.large, big.small, *big.fillers[:8]]
    served = await _drive(big.path.parent, sessions, queries, calls, salad)
    with scratch() as directory:
        base = await _drive(directory / "data", None, queries, calls, salad)
    results.details["server_memory"] = {
        "messages": big.messages,
        "threadline": served,
        "baseline_50_messages": base,
    }
    for figure, when, key in figures:
        ours, theirs = served[when], base[when]
        if ours is None or theirs is None:
            results.add(
                Row(work, figure, float("nan"), "MiB", "lower", note="skipped (no server pid)")
            )
            continue
        results.add(Row(work, figure, ours[key], "MiB", "lower", BASELINE_LABEL, theirs[key]))
    for tool, key in (("get_history(50)", "get_history_over_stdio"),):
        ours, theirs = served[key], base[key]
        for q in ("p50", "p99"):
            results.add(
                Row(
                    work,
                    f"{tool} over stdio {q}",
                    ours[f"{q}_ms"],
                    "ms",
                    "lower",
                    BASELINE_LABEL,
                    theirs[f"{q}_ms"],
                )
            )
    ours = served["session_search_over_stdio"]
    for q in ("p50", "p99"):
        results.add(Row(work, f"session_search over stdio {q}", ours[f"{q}_ms"], "ms", "lower"))

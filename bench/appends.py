"""Workloads 1 and 2: concurrent and sequential appends, threadline against its baselines.

Every database lives in its own temporary directory, removed when the workload ends. Each
trial starts from an empty file; contenders take turns (the order rotates from trial to
trial) so that a noisy neighbour slows all of them alike, and the table reports the median of
the trials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from bench import baseline, peers
from bench.sizes import Results, Sizes, clock, file_size, role, rotate, scratch
from bench.stats import Latencies, Row, Run, median, percentile
from bench.text import WordSalad
from threadline import Store

# -- 1 and 2: appends -----------------------------------------------------------------------


async def _threadline_appends(
    path: Path, sids: Sequence[str], texts: Sequence[Sequence[str]], commits: list[int]
) -> Run:
    """Each session's task appends its messages one call at a time; all sessions at once.

    The wall time runs until the store is closed: closing indexes the tail that was still
    waiting for a batch, so threadline has done the same index work as the raw loops.
    """
    latencies = Latencies()
    store = await Store.open(path)
    try:
        for sid in sids:
            await store.create_session(session_id=sid, title=sid)

        async def session(sid: str, session_texts: Sequence[str]) -> None:
            for i, text in enumerate(session_texts):
                t0 = clock()
                await store.append_messages(sid, [{"role": role(i), "content": text}])
                latencies.add(clock() - t0)

        store.observe_commits(commits.append)
        start = clock()
        async with anyio.create_task_group() as tg:
            for sid, session_texts in zip(sids, texts, strict=True):
                tg.start_soon(session, sid, session_texts)
        await store.close()
        seconds = clock() - start
    finally:
        await store.close()
    return Run(seconds=seconds, count=sum(len(t) for t in texts), latencies=latencies)


Contender = Callable[[Path], Awaitable[Run]]


async def _append_trials(
    sids: Sequence[str],
    texts: Sequence[Sequence[str]],
    trials: int,
    others: dict[str, Contender],
) -> tuple[dict[str, list[Run]], list[int]]:
    """``trials`` rounds of threadline and ``others``, each on an empty file, order rotating."""
    names = ["threadline", *others]
    runs: dict[str, list[Run]] = {name: [] for name in names}
    commits: list[int] = []
    for trial in range(trials):
        for name in rotate(names, trial):
            with scratch() as directory:
                path = directory / "bench.db"
                if name == "threadline":
                    run = await _threadline_appends(path, sids, texts, commits)
                else:
                    run = await others[name](path)
                run.file_bytes = file_size(path)
            runs[name].append(run)
    return runs, commits


def _raw(loop: Callable[[Path], Run]) -> Contender:
    async def contender(path: Path) -> Run:
        return loop(path)

    return contender


def _summarise(runs: dict[str, list[Run]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, trials in runs.items():
        pooled = Latencies()
        for run in trials:
            pooled.extend(run.latencies)
        out[name] = {
            "rates_per_s": [run.rate for run in trials],
            "median_rate_per_s": median([run.rate for run in trials]),
            "latency": pooled.summary_ms(),
            "file_bytes_per_message": median([run.file_bytes / run.count for run in trials]),
        }
    return out


async def concurrent_appends(sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workload 1: ``sessions`` x ``per_session`` appends, one call per message, all at once.

    Against raw sqlite3 loops (the floors) and, when ``openai-agents`` is installed, the
    Agents SDK's ``SQLiteSession`` and ``AdvancedSQLiteSession`` (the peers), same texts.
    """
    n, per = sizes.sessions, sizes.per_session
    sids = [f"conc-{s:03d}" for s in range(n)]
    texts = [list(salad.messages(per, seed=1000 + s)) for s in range(n)]
    rows = baseline.raw_messages(sids, texts, seed=1)
    others: dict[str, Contender] = {
        "raw_commit_fts": _raw(lambda p: baseline.append_loop(p, rows, index=True)),
        "raw_commit_noindex": _raw(lambda p: baseline.append_loop(p, rows, index=False)),
        "raw_batch100_fts": _raw(lambda p: baseline.append_loop(p, rows, index=True, batch=100)),
    }
    available: dict[str, peers.Peer] = {}
    for peer in peers.PEERS:
        cls = peers.load(peer)
        if cls is None:
            continue
        available[peer.key] = peer

        def contender(path: Path, peer: peers.Peer = peer, cls: type[Any] = cls) -> Any:
            return peers.appends(peer, cls, path, sids, texts)

        others[peer.key] = contender
    if "sdk_sqlite_session" in available:  # the adapter needs the SDK too
        others["adapter"] = lambda path: peers.adapter_appends(path, sids, texts)
    runs, commits = await _append_trials(sids, texts, sizes.append_trials, others)
    summary = _summarise(runs)
    summary["threadline"]["writes_per_commit"] = {
        "commits": len(commits),
        "mean": sum(commits) / len(commits) if commits else None,
        "p50": percentile(commits, 50),
        "max": max(commits, default=0),
    }
    summary["peers"] = {
        "openai_agents_version": peers.version(),
        "skipped": [peer.key for peer in peers.PEERS if peer.key not in available],
    }
    results.details["concurrent_appends"] = summary

    work = f"1. concurrent appends {n}x{per}"
    tl = summary["threadline"]
    rate = tl["median_rate_per_s"]
    for name, label in (
        ("raw_commit_fts", "raw sqlite3, commit per message, both FTS indexes"),
        ("raw_commit_noindex", "raw sqlite3, commit per message, no index (floor)"),
        ("raw_batch100_fts", "raw sqlite3, 100 per commit, both FTS indexes"),
    ):
        results.add(
            Row(work, "appends/s", rate, "/s", "higher", label, summary[name]["median_rate_per_s"])
        )
    results.add(Row(work, "latency per call p50", tl["latency"]["p50_ms"], "ms", "lower"))
    results.add(Row(work, "latency per call p99", tl["latency"]["p99_ms"], "ms", "lower"))
    mean = tl["writes_per_commit"]["mean"]
    if mean is not None:
        results.add(Row(work, "appends per group commit (mean)", mean, "", "higher"))
    sdk = "openai-agents SQLiteSession, same workload"
    adapter = f"{work} through ThreadlineSession"
    if "adapter" in summary and "sdk_sqlite_session" in summary:
        ours, theirs = summary["adapter"], summary["sdk_sqlite_session"]
        results.add(Row(adapter, "add_items/s", ours["median_rate_per_s"], "/s", "higher", sdk,
                        theirs["median_rate_per_s"]))  # fmt: skip
        for key, figure in (("p50_ms", "add_items p50"), ("p99_ms", "add_items p99")):
            results.add(Row(adapter, figure, ours["latency"][key], "ms", "lower", sdk,
                            theirs["latency"][key]))  # fmt: skip
    if "sdk_sqlite_session" in available:
        await _adapter_reads(sizes, sids, texts, results)
    for peer in peers.PEERS:
        label = f"{peer.label}, same workload"
        figures = (
            ("appends/s", rate, "/s", "higher", "median_rate_per_s", None),
            ("latency per call p50", tl["latency"]["p50_ms"], "ms", "lower", "latency", "p50_ms"),
            ("latency per call p99", tl["latency"]["p99_ms"], "ms", "lower", "latency", "p99_ms"),
            (
                "file bytes per message",
                tl["file_bytes_per_message"],
                "bytes",
                "lower",
                "file_bytes_per_message",
                None,
            ),
        )
        for figure, value, unit, better, key, sub in figures:
            if peer.key not in available:
                row = Row(work, figure, value, unit, better, label, note=peers.INSTALL_HINT)
            else:
                theirs = summary[peer.key][key]
                theirs = theirs[sub] if sub else theirs
                row = Row(work, figure, value, unit, better, label, theirs)
            results.add(row)


async def _adapter_reads(
    sizes: Sizes, sids: Sequence[str], texts: Sequence[Sequence[str]], results: Results
) -> None:
    """Through ``ThreadlineSession`` and the SDK's ``SQLiteSession``, trials alternating: the
    threads read back whole with ``get_items()``, and the same texts run as turns."""
    sdk = "openai-agents SQLiteSession, same workload"
    for name, turns, unit, rate in (
        ("reads", False, "get_items", "get_items/s"),
        ("turns", True, "turn", "turns/s"),
    ):
        runs: dict[str, list[Run]] = {"adapter": [], "sdk": []}
        for trial in range(sizes.append_trials):
            for kind in rotate(list(runs), trial):
                with scratch() as directory:
                    path = directory / "bench.db"
                    run = await peers.reads(kind, path, sids, texts, READ_CALLS, turns=turns)
                runs[kind].append(run)
        summary = _summarise(runs)
        results.details[f"adapter_{name}"] = summary
        ours, theirs = summary["adapter"], summary["sdk"]
        if turns:
            work = f"1. turns {len(sids)}x{len(texts[0]) // 2} through ThreadlineSession"
        else:
            work = f"1. whole-thread reads {len(sids)}x{len(texts[0])} through ThreadlineSession"
        results.add(Row(work, rate, ours["median_rate_per_s"], "/s", "higher", sdk,
                        theirs["median_rate_per_s"]))  # fmt: skip
        for key, figure in (("p50_ms", f"{unit} p50"), ("p99_ms", f"{unit} p99")):
            results.add(Row(work, figure, ours["latency"][key], "ms", "lower", sdk,
                            theirs["latency"][key]))  # fmt: skip


READ_CALLS = 20  # get_items() calls per session in the whole-thread reads


async def _threadline_sequential(path: Path, texts: Sequence[str], commits: list[int]) -> Run:
    latencies = Latencies()
    store = await Store.open(path)
    try:
        sid = (await store.create_session(session_id="seq", title="seq")).session_id
        store.observe_commits(commits.append)
        start = clock()
        for i, text in enumerate(texts):
            t0 = clock()
            await store.append_messages(sid, [{"role": role(i), "content": text}])
            latencies.add(clock() - t0)
        await store.close()
        seconds = clock() - start
    finally:
        await store.close()
    return Run(seconds=seconds, count=len(texts), latencies=latencies)


async def sequential_appends(sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workload 2: one session, one append at a time: latency against the per-commit floor."""
    texts = list(salad.messages(sizes.sequential, seed=2000))
    rows = baseline.raw_messages(["seq"], [texts], seed=2)
    names = ["threadline", "raw_commit_fts", "raw_commit_noindex"]
    runs: dict[str, list[Run]] = {name: [] for name in names}
    commits: list[int] = []
    for trial in range(sizes.sequential_trials):
        for name in rotate(names, trial):
            with scratch() as directory:
                path = directory / "bench.db"
                if name == "threadline":
                    run = await _threadline_sequential(path, texts, commits)
                else:
                    run = baseline.append_loop(path, rows, index=name == "raw_commit_fts")
            runs[name].append(run)
    summary = _summarise(runs)
    results.details["sequential_appends"] = summary

    work = f"2. sequential appends 1x{sizes.sequential}"
    tl, raw, floor = (summary[n] for n in names)
    label = "raw sqlite3, commit per message, both FTS indexes"
    for q in ("p50", "p99"):
        key = f"{q}_ms"
        results.add(
            Row(work, f"latency {q}", tl["latency"][key], "ms", "lower", label, raw["latency"][key])
        )
    rate = tl["median_rate_per_s"]
    results.add(Row(work, "appends/s", rate, "/s", "higher", label, raw["median_rate_per_s"]))
    results.add(
        Row(
            work,
            "appends/s",
            rate,
            "/s",
            "higher",
            "raw sqlite3, commit per message, no index (floor)",
            floor["median_rate_per_s"],
        )
    )

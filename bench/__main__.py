"""``python -m bench [--quick | --size S] [--json FILE] [--plot FILE] [--only N ...]``.

Runs the suite, prints the table. Peer libraries and matplotlib come from the ``bench``
extra (``pip install -e '.[bench]'``); without them, their rows and the chart are skipped.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bench import peers, recall
from bench.appends import concurrent_appends
from bench.appends import sequential_appends as sequential
from bench.bigstore import build_store, fork_and_compact, history, search
from bench.http import end_to_end
from bench.memory import server_memory
from bench.plot import MISSING, plot
from bench.sizes import SIZES, Results, Sizes, clock, scratch
from bench.stats import Row, table
from bench.text import WordSalad

Workload = Callable[[Sizes, WordSalad, Results], Awaitable[None]]


async def large_store(sizes: Sizes, salad: WordSalad, results: Results) -> None:
    """Workloads 3-5 and 7 on one store built for them, in a temporary directory.

    The store is ``local.db`` in a data directory, the file ``threadline serve --data-dir``
    serves, so workload 7 serves it as it is. Memory comes before fork and compaction, which
    add to the store.
    """
    phases: dict[str, float] = {}
    results.details["store_phase_seconds"] = phases  # wall time, text generation included
    with scratch() as directory:
        data = directory / "data"
        data.mkdir(mode=0o700)
        t0 = clock()
        big = await build_store(data / "local.db", sizes, salad, results)
        phases["build"] = clock() - t0
        for name, phase in (
            ("history", lambda: history(big, sizes, results)),
            ("search", lambda: search(big, sizes, salad, results)),
            ("server_memory", lambda: server_memory(big, sizes, salad, results)),
            ("fork_and_compact", lambda: fork_and_compact(big, sizes, results)),
        ):
            t0 = clock()
            await phase()
            phases[name] = clock() - t0


WORKLOADS: dict[str, tuple[str, Workload]] = {
    "appends": ("1. concurrent appends (raw sqlite3, Agents SDK sessions)", concurrent_appends),
    "sequential": ("2. sequential appends", sequential),
    "store": (
        "3-5, 7. build, history, search, server memory, fork, compaction on a large store",
        large_store,
    ),
    "http": ("6. end to end: streamable HTTP, stdio, in memory, against a no-op tool", end_to_end),
}
# Its data comes from a file: bound to --locomo in run().
RECALL = ("recall", "8. search recall on LoCoMo conversations (--locomo FILE)")


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (a figure that could not be measured) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _number(row: Row) -> int:
    head = row.workload.split(".", 1)[0]
    return int(head) if head.isdigit() else 99


def environment() -> dict[str, Any]:
    """What the figures depend on, printed above the table and kept in the JSON."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {
            name: _version(name)
            for name in ("threadline", "mcp", "openai-agents", "matplotlib", "uvicorn", "httpx2")
        },
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="threadline benchmarks: figures and ratios against baselines run now.",
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="full",
        help="quick: tiny (a smoke test, ~30 s); full (default): a 200,000-message store; "
        "large: a 1,000,000-message store (building it takes minutes)",
    )
    parser.add_argument("--quick", action="store_true", help="the same as --size quick")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE", help="also draw the ratios as a PNG chart here"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted([*WORKLOADS, RECALL[0]]),
        metavar="NAME",
        help=f"run only these workloads ({', '.join([*WORKLOADS, RECALL[0]])})",
    )
    parser.add_argument("--seed", type=int, default=1, help="text generator seed (default 1)")
    parser.add_argument(
        "--locomo",
        type=Path,
        metavar="FILE",
        help="LoCoMo conversations (JSON) for the recall workload; without it, it is skipped",
    )
    return parser.parse_args(argv)


async def run(
    sizes: Sizes, seed: int, only: Sequence[str] | None, locomo: Path | None = None
) -> tuple[Results, float]:
    salad = WordSalad(seed)
    results = Results()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    workloads = {**WORKLOADS, RECALL[0]: (RECALL[1], functools.partial(recall.recall, locomo))}
    for name, (title, workload) in workloads.items():
        if only and name not in only:
            continue
        print(f"running {title} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        await workload(sizes, salad, results)
        timings[name] = time.perf_counter() - t0
        print(f"  done in {timings[name]:.1f} s", file=sys.stderr, flush=True)
    results.details["workload_seconds"] = timings
    return results, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sizes = SIZES["quick" if args.quick else args.size]
    env = environment()
    print(
        f"threadline bench ({sizes.name}) {env['date']}: Python {env['python']}, "
        f"SQLite {env['sqlite']}, {env['cpus']} CPUs, {env['platform']}"
    )
    results, seconds = anyio.run(run, sizes, args.seed, args.only, args.locomo)
    results.rows.sort(key=_number)  # workload 7 runs inside 3-5; the table follows the numbers
    print()
    print(table(results.rows))
    print()
    print(f"ratio = threadline / baseline; total {seconds:.1f} s")
    if any(r.note == peers.INSTALL_HINT for r in results.rows):
        print(f"peers (openai-agents): {peers.INSTALL_HINT}")
    if args.json is not None:
        document = {
            "environment": env,
            "mode": sizes.name,
            "sizes": vars(sizes),
            "seed": args.seed,
            "seconds": seconds,
            "ratio": "threadline / baseline (for rates and times alike; see better)",
            "rows": [row.as_dict() for row in results.rows],
            "details": results.details,
        }
        text = json.dumps(_finite(document), indent=2, allow_nan=False)
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        title = (
            f"threadline bench ({sizes.name}), {env['date']}: Python {env['python']}, "
            f"SQLite {env['sqlite']}, {env['cpus']} CPUs"
        )
        if plot(results.rows, args.plot, title):
            print(f"wrote {args.plot}")
        else:
            print(MISSING)
    return 0


if __name__ == "__main__":
    sys.exit(main())

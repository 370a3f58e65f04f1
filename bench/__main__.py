"""``python -m bench [--quick] [--json FILE] [--only N ...]``: run the suite, print the table."""

from __future__ import annotations

import argparse
import json
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

from bench.http import end_to_end
from bench.stats import table
from bench.text import WordSalad
from bench.workloads import FULL, QUICK, Results, Sizes, concurrent_appends, large_store
from bench.workloads import sequential_appends as sequential

Workload = Callable[[Sizes, WordSalad, Results], Awaitable[None]]
WORKLOADS: dict[str, tuple[str, Workload]] = {
    "appends": ("1. concurrent appends", concurrent_appends),
    "sequential": ("2. sequential appends", sequential),
    "store": ("3-5. history, search, fork, compaction on a large store", large_store),
    "http": ("6. end to end: streamable HTTP and in-memory, against a no-op tool", end_to_end),
}


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
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="threadline benchmarks: figures and ratios against baselines run now.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(WORKLOADS),
        metavar="NAME",
        help=f"run only these workloads ({', '.join(WORKLOADS)})",
    )
    parser.add_argument("--seed", type=int, default=1, help="text generator seed (default 1)")
    return parser.parse_args(argv)


async def run(sizes: Sizes, seed: int, only: Sequence[str] | None) -> tuple[Results, float]:
    salad = WordSalad(seed)
    results = Results()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for name, (title, workload) in WORKLOADS.items():
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
    sizes = QUICK if args.quick else FULL
    env = environment()
    print(
        f"threadline bench ({sizes.name}) {env['date']}: Python {env['python']}, "
        f"SQLite {env['sqlite']}, {env['cpus']} CPUs, {env['platform']}"
    )
    results, seconds = anyio.run(run, sizes, args.seed, args.only)
    print()
    print(table(results.rows))
    print()
    print(f"ratio = threadline / baseline; total {seconds:.1f} s")
    if args.json is not None:
        document = {
            "environment": env,
            "mode": sizes.name,
            "sizes": vars(sizes),
            "seed": args.seed,
            "seconds": seconds,
            "rows": [row.as_dict() for row in results.rows],
            "details": results.details,
        }
        args.json.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

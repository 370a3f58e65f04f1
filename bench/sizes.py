"""What every workload shares: how big a run is, where its rows go, scratch directories."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Row

clock = time.perf_counter


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``QUICK``, ``FULL`` (the default) and ``LARGE`` are presets."""

    name: str
    sessions: int = 20  # 1. concurrent appends: sessions x per_session
    per_session: int = 200
    append_trials: int = 5
    sequential: int = 2000  # 2. sequential appends to one session
    sequential_trials: int = 5
    small: int = 200  # 3. history: a small and a large session in a store of `total`
    large: int = 10_000
    total: int = 200_000
    build_batch: int = 500
    filler: int = 1000  # the other sessions hold this many messages each
    history_calls: int = 200
    queries: int = 100  # 4. search
    fork_runs: int = 5  # 5. fork of the large session, compaction of filler sessions
    compact_runs: int = 5
    e2e_calls: int = 800  # 6. end to end: calls of each tool per client count and transport
    e2e_rounds: int = 4  # the tools take turns this many times (noise hits all alike)
    e2e_clients: tuple[int, ...] = (1, 8)  # concurrent clients, each with its own session
    server_calls: int = 300  # 7. get_history and session_search calls before reading the RSS


QUICK = Sizes(
    name="quick",
    per_session=25,
    append_trials=3,
    sequential=300,
    sequential_trials=3,
    large=2000,
    total=10_000,
    fork_runs=3,
    compact_runs=3,
    e2e_calls=48,
    e2e_rounds=2,
    history_calls=100,
    server_calls=60,
)
FULL = Sizes(name="full")
# Issue 5's sizes for history, search, the build rate and memory: 1,000,000 messages.
LARGE = Sizes(name="large", total=1_000_000)
SIZES = {s.name: s for s in (QUICK, FULL, LARGE)}


@dataclass
class Results:
    """The table's rows, plus everything else worth keeping in the JSON file."""

    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)


@contextmanager
def scratch() -> Iterator[Path]:
    """A temporary directory for one database, removed afterwards (with -wal and -shm)."""
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as name:
        yield Path(name)


def role(i: int) -> str:
    return "user" if i % 2 == 0 else "assistant"


def rotate(names: Sequence[str], trial: int) -> list[str]:
    k = trial % len(names)
    return [*names[k:], *names[:k]]


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))

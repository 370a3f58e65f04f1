"""Timing, percentiles and the results table."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class Timer:
    """Elapsed seconds of a ``with timed() as t:`` block, in ``t.seconds``."""

    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    timer = Timer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start


@dataclass
class Latencies:
    """Per-call latencies in seconds, with the summary the table prints."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def extend(self, other: Latencies) -> None:
        self.samples.extend(other.samples)

    def p(self, q: float) -> float:
        return percentile(self.samples, q)

    def summary_ms(self) -> dict[str, float]:
        s = self.samples
        return {
            "n": len(s),
            "p50_ms": self.p(50) * 1e3,
            "p90_ms": self.p(90) * 1e3,
            "p99_ms": self.p(99) * 1e3,
            "max_ms": max(s) * 1e3 if s else math.nan,
            "mean_ms": statistics.fmean(s) * 1e3 if s else math.nan,
        }


@dataclass
class Run:
    """One timed run of a write workload: wall time, messages written, per-call latencies."""

    seconds: float
    count: int
    latencies: Latencies
    file_bytes: int = 0  # the database's size afterwards (with -wal), where measured

    @property
    def rate(self) -> float:
        return self.count / self.seconds


@dataclass
class Row:
    """One line of the table: a figure of threadline's, optionally against a baseline."""

    workload: str
    figure: str
    value: float
    unit: str
    better: Better
    baseline: str = ""
    baseline_value: float | None = None
    note: str = ""  # why the baseline has no value (e.g. a peer library is not installed)

    @property
    def ratio(self) -> float | None:
        """``value / baseline_value`` (threadline over baseline), as the issue states targets."""
        if self.baseline_value is None or not self.baseline_value or math.isnan(self.value):
            return None
        return self.value / self.baseline_value

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


def fmt(value: float | None, unit: str) -> str:
    """A number for people: thousands separators for rates, three significant digits for times."""
    if value is None or math.isnan(value):
        return "-"
    if unit in ("ms", "µs", "s"):
        if value >= 100:
            text = f"{value:,.0f}"
        elif value >= 10:
            text = f"{value:.1f}"
        else:
            text = f"{value:.3g}" if value >= 1 else f"{value:.3f}"
        return f"{text} {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (readable in a terminal and pasteable into a README)."""
    header = [
        "workload",
        "figure",
        "threadline",
        "baseline (same run)",
        "baseline",
        "ratio",
        "better",
    ]
    lines: list[list[str]] = []
    last = None
    for r in rows:
        ratio = r.ratio
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(
            [
                r.workload if r.workload != last else "",
                r.figure,
                fmt(r.value, r.unit),
                r.baseline or "-",
                r.note or (fmt(r.baseline_value, r.unit) if r.baseline else "-"),
                ratio_text,
                r.better,
            ]
        )
        last = r.workload
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [render(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [render(line) for line in lines]
    return "\n".join(out)

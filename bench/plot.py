"""``--plot FILE``: the table's ratios as a PNG bar chart (matplotlib, from the bench extra).

One horizontal bar per ratio (threadline / baseline, as in the table), on a log scale, each
bar growing from a line at 1.0 and labelled with its value. A diamond marks issue 5's target
where it states one for that ratio. Green where the target is met or, without a target,
where threadline beats the baseline (a ratio above 1 for rates, below 1 for latencies and
sizes); red where not.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

from bench.stats import Row

MISSING = "--plot: skipped, matplotlib is not installed (pip install -e '.[bench]')"

# Short names of the baselines, so that the labels fit beside the bars.
SHORT = {
    "raw sqlite3, commit per message, both FTS indexes": "raw sqlite3 per-commit + FTS",
    "raw sqlite3, commit per message, no index (floor)": "raw sqlite3 per-commit, no index",
    "raw sqlite3, 100 per commit, both FTS indexes": "raw sqlite3 100/commit + FTS",
    "openai-agents SQLiteSession, same workload": "SDK SQLiteSession",
    "openai-agents AdvancedSQLiteSession, same workload": "SDK AdvancedSQLiteSession",
    "raw SELECT WHERE session_id ORDER BY pk DESC": "raw SELECT ORDER BY pk",
    "raw recursive CTE walk from head (50 rows)": "raw CTE walk (50 rows)",
    "raw FTS5 MATCH ... ORDER BY rank LIMIT 10": "raw FTS5 MATCH, bm25 of all",
    "raw FTS5 MATCH ... ORDER BY rowid DESC LIMIT 200": "raw FTS5 MATCH, newest 200",
    "raw FTS5 words MATCH a OR b ... ORDER BY rank LIMIT 10": "raw FTS5 words OR, bm25",
    "noop tool, same server and transport": "noop tool",
}


def target(row: Row) -> float | None:
    """Issue 5's target for this ratio, where it states one."""
    work, figure, base = row.workload, row.figure, row.baseline
    if work.startswith("1. ") and figure == "appends/s":
        if "FTS" in base and "commit per message" in base:
            return 1.0
        if "no index" in base:
            return 0.5  # the stretch goal
        if base.startswith("openai-agents SQLiteSession"):
            return 5.0
    if work.startswith("2. ") and figure == "appends/s" and "no index" in base:
        return 0.3
    if work.startswith("3. history") and figure == "p50" and base.startswith("raw SELECT"):
        return 2.0
    if work.startswith("6. ") and figure == "append_messages calls/s":
        return 0.8
    return None


def _good(row: Row, ratio: float) -> bool:
    goal = target(row)
    bar = 1.0 if goal is None else goal
    return ratio >= bar if row.better == "higher" else ratio <= bar


def _label(row: Row) -> str:
    work = row.workload
    baseline = SHORT.get(row.baseline, row.baseline)
    return f"{work} · {row.figure} vs {baseline}"


def plot(rows: Sequence[Row], path: Path, title: str) -> bool:
    """Write the chart to ``path``; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    bars = [(r, r.ratio) for r in rows if r.ratio is not None and math.isfinite(r.ratio)]
    bars = [(r, q) for r, q in bars if q > 0]
    height = 1.6 + 0.26 * max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(13, height), dpi=110)
    if not bars:
        ax.text(0.5, 0.5, "no ratios in this run", ha="center", va="center")
        ax.set_axis_off()
    else:
        ys = list(range(len(bars)))[::-1]  # the table's first row at the top
        values = [q for _, q in bars]
        colours = ["#2e8b57" if _good(r, q) else "#c0392b" for r, q in bars]
        # Bars grow from 1.0: to the right for ratios above 1, to the left below.
        ax.barh(ys, [q - 1 for q in values], left=1, color=colours, height=0.72)
        ax.set_xscale("log")
        low = min(min(values), 1.0) / 3
        high = max(max(values), 1.0) * 3
        ax.set_xlim(low, high)
        ax.axvline(1.0, color="black", linewidth=1.2)
        ax.set_yticks(ys)
        ax.set_yticklabels([_label(r) for r, _ in bars], fontsize=8)
        ax.set_ylim(-0.7, len(bars) - 0.3)
        for y, (row, q) in zip(ys, bars, strict=True):
            text = f"{q:.2f}x" if q >= 0.01 else f"{q:.3f}x"
            goal = target(row)  # past the target's marker where it would cover the label
            if q >= 1:
                at = goal * 1.08 if goal and q <= goal <= q * 1.8 else q
                ax.text(at * 1.05, y, text, va="center", ha="left", fontsize=7.5)
            else:
                at = goal / 1.08 if goal and q / 1.8 <= goal <= q else q
                ax.text(at / 1.05, y, text, va="center", ha="right", fontsize=7.5)
        goals = [(y, target(r)) for y, (r, _) in zip(ys, bars, strict=True)]
        goals = [(y, g) for y, g in goals if g is not None]
        if goals:
            ax.scatter(
                [g for _, g in goals],
                [y for y, _ in goals],
                marker="D",
                s=22,
                color="black",
                zorder=3,
                label="issue 5's target",
            )
            ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", which="major", linestyle=":", linewidth=0.6)
        ax.set_xlabel(
            "ratio = threadline / baseline, log scale, bars from 1.0\n"
            "green: meets issue 5's target (◆), or beats the baseline where there is none; "
            "red: does not",
            fontsize=9,
        )
        # Separate workloads with a faint line.
        for y, (prev, cur) in zip(ys[1:], itertools.pairwise(bars), strict=True):
            if prev[0].workload != cur[0].workload:
                ax.axhline(y + 0.5, color="#999999", linewidth=0.5)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)
    return True

"""The report's figures: the held-out metric, keep rate and reward distribution, diversity and length drift.

Each function takes the runs to draw as {label: rows}, rows being `report.rows(manifest)` (a single
run is a one-entry dict), and writes one PNG. A run keeps its colour in every figure. Nothing here
reads a run directory: `rest-loop-report` (rest_loop/summary.py) does that and calls these.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: report machines have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

DPI = 120


def position(rows: list[dict]) -> list[float]:
    """Each evaluation's x: its round, with a round's later Improve steps spread evenly towards the next,
    so that round 1's steps 1..3 sit at 1, 1.33 and 1.67 instead of on top of each other."""
    steps = Counter(row["round"] for row in rows)
    return [row["round"] + (row["step"] - 1) / steps[row["round"]] for row in rows]


def line(ax, rows: list[dict], key: str, **style) -> bool:
    """One column against position, skipping the evaluations without it (round 0 keeps nothing)."""
    points = [(x, row[key]) for x, row in zip(position(rows), rows) if row.get(key) is not None]
    if points:
        ax.plot(*zip(*points), marker="o", markersize=4, **style)
    return bool(points)


def rounds_axis(ax, runs: dict[str, list[dict]]) -> None:
    last = max((row["round"] for rows in runs.values() for row in rows), default=0)
    steps = any(row["step"] > 1 for rows in runs.values() for row in rows)
    ax.set_xticks(range(last + 1))
    ax.set_xlim(-0.2, last + (0.8 if steps else 0.2))
    ax.set_xlabel("round" + (" (its Improve steps 1, 2, ... left to right)" if steps else ""))
    ax.grid(alpha=0.3)


def legend(fig, runs: dict[str, list[dict]], dashed: str | None, inches: float) -> None:
    """Below the plots, so it never covers a line: a run per colour, and what the dashed lines are.
    As many columns as the longest label allows in `inches`; a label longer than the width wraps."""
    chars = int(inches * 13)  # about 13 characters an inch at font size 8
    labels = [textwrap.fill(label, chars) for label in runs] + ([dashed] if dashed else [])
    handles = [Line2D([], [], color=f"C{i}", marker="o", markersize=4) for i in range(len(runs))]
    handles += [Line2D([], [], color="grey", linestyle="--")] if dashed else []
    longest = max(len(line) for label in labels for line in label.splitlines())
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(len(labels), chars // (longest + 6))),
               fontsize=8, frameon=False)


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def heldout(runs: dict[str, list[dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4 + 0.25 * len(runs)), layout="constrained")
    ks = {row["k"] for rows in runs.values() for row in rows if row["k"]}
    for i, rows in enumerate(runs.values()):
        line(ax, rows, "held_out", color=f"C{i}")
        line(ax, rows, "pass@k", color=f"C{i}", linestyle="--", alpha=0.6)
    metric = next((row["metric"] for rows in runs.values() for row in rows if row["metric"]), "held-out metric")
    ax.set(ylabel=metric, title=f"held-out {metric}")
    rounds_axis(ax, runs)
    legend(fig, runs, f"pass@{ks.pop() if len(ks) == 1 else 'k'} of sampled completions" if ks else None, 7)
    save(fig, path)


def keep_reward(runs: dict[str, list[dict]], histograms: dict[str, dict[int, dict]], path: Path) -> None:
    """Keep rate per round, and beside it each run's training reward histogram as a heat-map of rounds x bins:
    the shade is the bin's share of the round's pool, the number its count."""
    shown = {label: h for label, h in histograms.items() if h}
    fig = plt.figure(figsize=(12, max(4.5, 1.2 + 1.8 * len(shown))), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.3])
    ax = left.subplots()
    for i, rows in enumerate(runs.values()):
        line(ax, rows, "keep_rate", color=f"C{i}")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(ylabel="kept / pool", title="keep rate", ylim=(0, None))
    rounds_axis(ax, runs)
    legend(left, runs, None, 5)
    axes = right.subplots(max(1, len(shown)), 1, squeeze=False)[:, 0]
    if not shown:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no Improve stage yet", ha="center", va="center")
    for n, (ax, (label, hist)) in enumerate(zip(axes, shown.items())):
        rounds, bins = sorted(hist), list(hist[min(hist)])
        counts = np.array([[hist[r].get(b, 0) for b in bins] for r in rounds])
        share = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
        image = ax.imshow(share, aspect="auto", cmap="Blues", vmin=0, vmax=1)
        for (y, x), count in np.ndenumerate(counts):
            dark = share[y, x] > 0.6
            ax.text(x, y, count, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_yticks(range(len(rounds)), [f"round {r}" for r in rounds], fontsize=8)
        ax.set_xticks(range(len(bins)), bins if n == len(shown) - 1 else [], fontsize=7, rotation=30)
        if len(runs) > 1:
            ax.set_title(textwrap.shorten(label, 70), fontsize=9, color=f"C{list(runs).index(label)}")
    if shown:
        axes[-1].set_xlabel("training reward")
        right.colorbar(image, ax=list(axes), label="share of the round's pool", shrink=0.8)
    right.suptitle("training reward distribution (Grow pool)")
    save(fig, path)


def drift(runs: dict[str, list[dict]], path: Path) -> None:
    fig, (div, length) = plt.subplots(1, 2, figsize=(11, 4 + 0.25 * len(runs)), layout="constrained")
    grown = False
    for i, rows in enumerate(runs.values()):
        line(div, rows, "distinct_2", color=f"C{i}")
        grown |= line(div, rows, "grow_distinct_2", color=f"C{i}", linestyle="--", alpha=0.6)
        line(length, rows, "eval_tokens", color=f"C{i}")
    div.set(ylabel="distinct-2", title="diversity: distinct-2 of held-out greedy completions", ylim=(0, 1.05))
    length.set(ylabel="mean tokens", title="length: held-out greedy completions", ylim=(0, None))
    for ax in (div, length):
        rounds_axis(ax, runs)
    legend(fig, runs, "distinct-2 of the Grow pool (sampled)" if grown else None, 11)
    save(fig, path)

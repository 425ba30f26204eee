"""The diversity report of a synthesised set: what was dealt, how varied the text is, how much repeated.

    summary = report(kept, stages, decks)     # a dict, written as diversity.json
    plot(summary, "diversity.png")            # a bar chart of each deck's entries in the kept rows

    attributes            per deck, each entry and how many kept rows were dealt it (entries dealt none: 0)
    distinct              per deck, how many of its entries appear in the kept rows
    examples_shown        how often each seed row was shown: distinct, min and max per seed
    distinct_1/2          rest_loop.metrics.diversity over the kept inputs, and their mean length
    near_duplicate_rate   rows dropped as near-duplicates of another synthesised row (not exact
                          copies) / rows that reached dedup
    duplicate_rate        exact and near copies of one another / rows that reached dedup
    leaked                rows dropped for repeating a seed example or a held-out prompt, per stage
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rest_loop.metrics import diversity
from rest_loop.synth.records import SynthRow


def report(kept: list[SynthRow], stages: list[dict[str, Any]], decks: dict[str, list[str]] | None = None,
           seeds: int | None = None) -> dict[str, Any]:
    """`decks` lists entries dealt to no kept row too; `seeds` (how many there are) counts unshown ones."""
    names = list(decks or {}) + sorted({n for r in kept for n in r.attributes} - set(decks or {}))
    attributes = {}
    for name in names:
        counts = Counter(r.attributes.get(name) for r in kept if name in r.attributes)
        every = {entry: counts.get(entry, 0) for entry in (decks or {}).get(name, [])}
        attributes[name] = dict(sorted({**every, **counts}.items(), key=lambda kv: (-kv[1], kv[0])))
    shown = Counter(j for r in kept for j in r.examples)
    shown_counts = list(shown.values()) + [0] * max(0, (seeds or 0) - len(shown))
    dropped = {s["stage"]: s["in"] - s["out"] for s in stages}
    reached = stages[0]["in"] if stages else len(kept)
    return {
        "rows": len(kept),
        "reached_dedup": reached,
        "attributes": attributes,
        "distinct": {name: sum(c > 0 for c in counts.values()) for name, counts in attributes.items()},
        "examples_shown": {"distinct": len(shown), "min": min(shown_counts, default=0),
                           "max": max(shown_counts, default=0)},
        **{k: round(v, 4) for k, v in diversity([r.input for r in kept]).items()},
        "near_duplicate_rate": round(dropped.get("near", 0) / reached, 4) if reached else 0.0,
        "duplicate_rate": round((dropped.get("near", 0) + dropped.get("exact", 0)) / reached, 4) if reached else 0.0,
        "leaked": {k: v for k, v in dropped.items() if k not in ("exact", "near")},
    }


def plot(summary: dict[str, Any], path: str | Path) -> None:
    """One horizontal bar chart per deck: each entry's count among the kept rows (zero bars included)."""
    from rest_loop.plots import plt, save  # matplotlib only when a chart is drawn

    decks = summary["attributes"] or {"(no decks)": {}}
    heights = [max(1, len(v)) for v in decks.values()]
    fig, axes = plt.subplots(len(decks), 1, figsize=(7, 1.2 + 0.22 * sum(heights) + 0.6 * len(decks)),
                             height_ratios=[h + 2 for h in heights], layout="constrained", squeeze=False)
    for ax, (name, counts) in zip(axes[:, 0], decks.items()):
        entries = list(counts)[::-1]  # most dealt at the top
        ax.barh(range(len(entries)), [counts[e] for e in entries], color="C0")
        ax.set_yticks(range(len(entries)), [e if len(e) <= 40 else e[:37] + "..." for e in entries], fontsize=7)
        ax.set_title(f"{name}: {sum(c > 0 for c in counts.values())} of {len(counts)} entries in "
                     f"{summary['rows']} rows", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(f"rows  (distinct-2 {summary['distinct_2']:.3f}, near-duplicate rate "
                           f"{summary['near_duplicate_rate']:.1%})")
    save(fig, Path(path))

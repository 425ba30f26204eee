"""Per-round lines and the end-of-run table, from the manifest."""

from __future__ import annotations


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def round_line(entry: dict) -> str:
    ev, imp, ft = entry.get("eval", {}), entry.get("improve", {}), entry.get("finetune", {})
    return (f"[round {entry['round']}] held-out {ev.get('metric', 'metric')} {_fmt(ev.get('value'))}"
            f" | kept {imp.get('kept', '-')} ({_fmt(imp.get('keep_rate'), '.1%')}) mean reward {_fmt(imp.get('mean_score'))}"
            f" | train loss {_fmt(ft.get('train_loss'))} | {_fmt(entry.get('wall_s'), '.0f')} s")


def table(manifest) -> str:
    header = ["round", "policy", "held-out", "mean reward", "kept", "keep rate", "train loss", "eval tokens", "wall s"]
    rows = []
    for r, entry in sorted(manifest.rounds.items()):
        ev, imp, ft = entry.get("eval", {}), entry.get("improve", {}), entry.get("finetune", {})
        rows.append([str(r), ev.get("policy", "-"), _fmt(ev.get("value")), _fmt(imp.get("mean_score")),
                     str(imp.get("kept", "-")), _fmt(imp.get("keep_rate"), ".1%"), _fmt(ft.get("train_loss")),
                     _fmt(ev.get("mean_tokens"), ".1f"), _fmt(entry.get("wall_s"), ".0f")])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    metric = next((e["eval"]["metric"] for e in manifest.rounds.values() if "eval" in e), "metric")
    best = manifest.data.get("best_round")
    lines.append(f"held-out metric: {metric}; best round: {best if best is not None else '-'}; run: {manifest.path.parent}")
    return "\n".join(lines)

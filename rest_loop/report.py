"""Per-round lines, the end-of-run table and `metrics.csv`, all from the manifest.

One row per evaluation: round 0 is the base model; with loop.improve_steps > 1 a round
has one row per step. A composite reward adds a column per term: its mean score over the
samples it was asked about (e.g. a JSON gate's pass rate beside the judge's mean rating), for the
training samples and, where the held-out metric is such a reward, for the held-out answers too
("held-out json": the valid-JSON rate). `metrics.csv` holds the same rows with every number, for plotting.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rest_loop.manifest import Manifest, stage_name, step_of
from rest_loop.store import atomic_write_text


def fmt(x, spec=".3f") -> str:
    """A cell: "-" for a missing value, text as it is ("s"), a number in `spec`."""
    return "-" if x is None else str(x) if spec == "s" else format(x, spec)


def aligned(header: list[str], cells: list[list[str]]) -> str:
    """A plain-text table: left-aligned columns two spaces apart, a rule under the header."""
    widths = [max(len(c) for c in col) for col in zip(header, *cells)]
    lines = [header, ["-" * w for w in widths], *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)


def largest_k(pass_at: dict | None) -> str | None:
    """The k of the widest pass@k an evaluation reports (keys are "1", "2", ...), or None."""
    return max(pass_at or {}, key=int, default=None)


def rows(manifest: Manifest) -> list[dict]:
    """One flat dict per evaluation, joined with the Improve and fine-tune stages that led to it."""
    out = []
    for ev in manifest.evals():
        r, step = ev["round"], ev["step"]
        entry = manifest.rounds[r]
        imp, ft = entry.get(stage_name("improve", step), {}), entry.get(stage_name("finetune", step), {})
        pass_at, k = ev.get("pass_at") or {}, largest_k(ev.get("pass_at"))
        out.append({
            "round": r, "step": step, "policy": ev.get("policy"), "metric": ev.get("metric"),
            "held_out": ev.get("value"), "pass@1": pass_at.get("1"), "pass@k": pass_at.get(k), "k": k,
            "distinct_1": ev.get("distinct_1"), "distinct_2": ev.get("distinct_2"),
            "eval_tokens": ev.get("mean_tokens"), "train_reward": imp.get("mean_score"),
            "kept": imp.get("kept"), "keep_rate": imp.get("keep_rate"), "threshold": imp.get("threshold"),
            "train_loss": ft.get("train_loss"), "started_from": ft.get("started_from"),
            "learning_rate": ft.get("learning_rate"),
            "transition_s": entry.get("transitions", {}).get(stage_name("finetune", step), {}).get("seconds"),
            "grow_distinct_2": entry.get("grow", {}).get("distinct_2") if step == 1 else None,
            "wall_s": entry.get("wall_s") if step == 1 else None,
        })
        if win := ev.get("win_rate"):  # eval=win_rate: against the evaluation before, and the judge's first-place bias
            out[-1].update(win_rate=win.get("win_rate"), first_wins=win.get("first_wins"))
        terms = imp.get("reward_terms") or {}
        if len(terms) > 1:  # a composite reward: each term's mean over the samples it was asked about
            out[-1].update({f"term:{k}": v.get("mean_score") for k, v in terms.items()})
        out[-1].update({f"held-out:{k}": v for k, v in (ev.get("terms") or {}).items()})  # the same, held out
    return out


def round_line(entry: dict) -> str:
    """The console's one line per round (its last step)."""
    steps = sorted(step_of(k) for k in entry if k == "eval" or k.startswith("eval_"))
    last = steps[-1] if steps else 1
    ev, imp, ft = (entry.get(stage_name(name, last), {}) for name in ("eval", "improve", "finetune"))
    pass_at, k = ev.get("pass_at") or {}, largest_k(ev.get("pass_at"))
    return (f"[round {entry['round']}] held-out {ev.get('metric', 'metric')} {fmt(ev.get('value'))}"
            + (f" pass@{k} {fmt(pass_at[k])}" if k else "")
            + f" distinct-2 {fmt(ev.get('distinct_2'), '.2f')}"
            f" | kept {imp.get('kept', '-')} ({fmt(imp.get('keep_rate'), '.1%')}) mean reward {fmt(imp.get('mean_score'))}"
            f" | train loss {fmt(ft.get('train_loss'))} | {fmt(entry.get('wall_s'), '.0f')} s")


COLUMNS = [("round", "round", "d"), ("step", "step", "d"), ("policy", "policy", "s"), ("held-out", "held_out", ".3f"),
           ("pass@1", "pass@1", ".3f"), ("pass@k", "pass@k", ".3f"), ("distinct-2", "distinct_2", ".3f"),
           ("length", "eval_tokens", ".1f"), ("train reward", "train_reward", ".3f"), ("kept", "kept", "d"),
           ("keep rate", "keep_rate", ".1%"), ("train loss", "train_loss", ".3f"),
           ("transition s", "transition_s", ".1f"), ("wall s", "wall_s", ".0f")]


def table(manifest: Manifest) -> str:
    data = rows(manifest)
    multi_step = any(row["step"] > 1 for row in data)
    columns = [c for c in COLUMNS if c[1] != "step" or multi_step]
    terms = list(dict.fromkeys(k for row in data for k in row if k.startswith("term:")))
    at = next(i for i, c in enumerate(columns) if c[1] == "train_reward") + 1
    columns[at:at] = [(k[5:], k, ".3f") for k in terms]
    held = list(dict.fromkeys(k for row in data for k in row if k.startswith("held-out:")))
    at = next(i for i, c in enumerate(columns) if c[1] == "held_out") + 1
    columns[at:at] = [(f"held-out {k[9:]}", k, ".3f") for k in held]  # a composite held-out reward's terms
    if any(row.get("win_rate") is not None for row in data):  # after held-out
        columns[4:4] = [("win vs prev", "win_rate", ".3f"), ("judge picks first", "first_wins", ".2f")]
    cells = [[fmt(row.get(key), spec) if spec != "s" else str(row.get(key) or "-") for _, key, spec in columns]
             for row in data]
    header = [name if name != "pass@k" else f"pass@{next((r['k'] for r in data if r['k']), 'k')}"
              for name, _, _ in columns]
    lines = [aligned(header, cells)]
    metric = next((row["metric"] for row in data if row["metric"]), "metric")
    best = manifest.data.get("best")
    where = "-" if not best else f"{best['round']}" + (f" step {best['step']}" if multi_step else "")
    lines.append(f"held-out metric: {metric}; best round: {where}; run: {manifest.path.parent}")
    if stop := manifest.data.get("stopped_early"):
        lines.append(f"stopped early after round {stop['after_round']}: {stop['reason']}")
    return "\n".join(lines)


def write_csv(manifest: Manifest, path: Path) -> None:
    """Every evaluation as a row, every number as a column: the file to plot from."""
    import io

    data = rows(manifest)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in data for k in row)) or ["round"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(data)
    atomic_write_text(path, buf.getvalue())

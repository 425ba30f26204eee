"""rest-loop-report: a run's or a sweep's report, as Markdown with figures, from the manifests.

    rest-loop-report runs/demo/2026-11-23_17-55-08                 # one run: writes <run>/report/
    rest-loop-report multirun/2026-11-24/10-00-00 --out /tmp/sweep  # a Hydra multirun: one line per member

A sweep's members are its sub-folders with a manifest.json or a FAILED file (a member that died
before writing a manifest still gets its line). A member is labelled by its own Hydra overrides: rest_loop.sweep.swept
drops those given once for the whole sweep (<sweep>/multirun.yaml). The figures are drawn by rest_loop/plots.py.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from rest_loop import plots
from rest_loop.manifest import Manifest
from rest_loop.report import COLUMNS, fmt, aligned, rows, table
from rest_loop.store import atomic_write_text, read_json
from rest_loop.sweep import swept

MAIN = {"round", "step", "policy", "held_out", "pass@k", "distinct_2", "eval_tokens", "train_reward", "kept",
        "keep_rate", "train_loss", "wall_s"}  # the columns of a run's Markdown table: report.table's, less detail
FIGURES = [("held-out metric", "heldout.png"), ("keep rate and reward", "keep_reward.png"),
           ("diversity and length", "drift.png")]


@dataclass
class Member:
    """One run of the report: the run directory given, or one of a sweep's numbered folders."""

    label: str
    dir: Path
    manifest: Manifest | None  # None: it died before writing one
    failure: dict | None  # the FAILED file: {"error": str, "exit_code": int, ...}

    @property
    def status(self) -> str:
        """finished, failed or running; "running" with no FAILED file is a live run or a killed one."""
        return "failed" if self.failure else self.manifest.data.get("status", "running")

    @property
    def rows(self) -> list[dict]:
        return rows(self.manifest) if self.manifest else []


def is_run(path: Path) -> bool:
    return (path / "manifest.json").exists() or (path / "FAILED").exists()


def load(path: Path, label: str) -> Member:
    manifest, failed = path / "manifest.json", path / "FAILED"
    return Member(label, path, Manifest(manifest, read_json(manifest)) if manifest.exists() else None,
                  read_json(failed) if failed.exists() else None)


def overrides(path: Path) -> list[str]:
    file = path / ".hydra" / "overrides.yaml"
    return [str(o) for o in yaml.safe_load(file.read_text()) or []] if file.exists() else []


def members(path: Path) -> list[Member]:
    """A run is one member; a sweep's are its numbered sub-folders, each labelled by its own overrides."""
    if is_run(path):
        run = load(path, path.name)
        run.label = run.manifest.data.get("name", path.name) if run.manifest else path.name
        return [run]
    found = sorted((p for p in path.iterdir() if p.is_dir() and is_run(p)),
                   key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))
    return [load(p, " ".join(swept(overrides(p), path)) or p.name) for p in found]


def histograms(member: Member) -> dict[int, dict]:
    """Each round's reward histogram from improve/stats.json: also there for the round whose filter kept
    too little, which the manifest never records."""
    return {int(f.parent.parent.name.removeprefix("round_")): read_json(f)["histogram"]
            for f in sorted(member.dir.glob("round_*/improve/stats.json"))}


def cache_line(members: list[Member]) -> str | None:
    counts = [m.manifest.data["cache"] for m in members if m.manifest and "cache" in m.manifest.data]
    if not counts:
        return None
    made, cached = sum(c["generated_tokens"] for c in counts), sum(c["cached_tokens"] for c in counts)
    saving = f"saving {(made + cached) / made:.2f}×" if made else "every token came from the cache"
    sent, answered = (sum(c.get(k, 0) for c in counts) for k in ("judge_requests", "judge_cached"))
    judge = f"; judge requests sent: {sent:,}, answered from the cache: {answered:,}" if sent + answered else ""
    return (f"tokens generated: {made:,}; a sweep without the cache would have generated {made + cached:,}; "
            f"{saving}{judge}")


def member_cells(m: Member) -> list[str]:
    """Label, status, final and best held-out value, kept in the last round, wall time."""
    data, best = m.rows, m.manifest.best() if m.manifest else None
    if not data:
        return [m.label, m.status, "-", "-", "-", "-"]
    multi = any(row["step"] > 1 for row in data)
    where = f" (round {best['round']}" + (f" step {best['step']})" if multi else ")") if best else ""
    walls = [row["wall_s"] for row in data if row["wall_s"] is not None]
    return [m.label, m.status, fmt(data[-1]["held_out"], ".3f"), fmt(best and best["value"], ".3f") + where,
            fmt(data[-1]["kept"], "d"), fmt(sum(walls) if walls else None, ".0f")]


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
                     for r in [header, ["---"] * len(header), *cells])


def run_table(m: Member) -> tuple[list[str], list[list[str]]]:
    multi = any(row["step"] > 1 for row in m.rows)
    columns = [c for c in COLUMNS if c[1] in MAIN and (c[1] != "step" or multi)]
    k = next((row["k"] for row in m.rows if row["k"]), "k")
    return ([name.replace("pass@k", f"pass@{k}") for name, _, _ in columns],
            [[fmt(row.get(key), spec) for _, key, spec in columns] for row in m.rows])


def figures(found: list[Member], out: Path) -> None:
    legend = {m.label: m.label if m.status == "finished" else f"{m.label} ({m.status})" for m in found}
    runs = {legend[m.label]: m.rows for m in found}
    plots.heldout(runs, out / "heldout.png")
    plots.keep_reward(runs, {legend[m.label]: histograms(m) for m in found}, out / "keep_reward.png")
    plots.drift(runs, out / "drift.png")


def markdown(path: Path, found: list[Member]) -> str:
    """report.md: what PATH is, a table, the figures, and what failed or did not finish."""
    sweep = not is_run(path)
    if sweep:
        head = f"A sweep of {len(found)} runs at `{path}`."
        header = ["member", "status", "final held-out", "best held-out", "kept (last round)", "wall s"]
        lines = [markdown_table(header, [member_cells(m) for m in found])]
        lines += ["", cache] if (cache := cache_line(found)) else []  # a blank line: GFM would take it for a row
    else:
        m = found[0]
        reward = m.manifest.data.get("reward", "-") if m.manifest else "-"
        head = f"The run `{m.label}` at `{path}`: {m.status}, reward `{reward}`."
        lines = [markdown_table(*run_table(m))]
    text = [f"# rest-loop report: {'sweep' if sweep else found[0].label} {path.name}", "", head, "", *lines, ""]
    text += [f"## {title}\n\n![{title}]({name})\n" for title, name in FIGURES]
    problems = [m for m in found if m.status != "finished"]
    text += ["## Failed or unfinished", ""] * bool(problems)
    text += [f"- `{m.label}` ({m.dir.name}): {why(m)}" for m in problems]
    return "\n".join(text) + "\n"


def why(m: Member) -> str:
    """A member's status and, for a failed one, its exit code and error on one line."""
    if m.failure:
        return f"failed, exit code {m.failure.get('exit_code')}: {' '.join(str(m.failure.get('error')).split())}"
    return m.status + (" (no FAILED file: still running, or killed)" if m.status == "running" else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rest-loop-report", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a run directory, or a sweep (Hydra multirun) directory")
    parser.add_argument("--out", type=Path, help="where to write report.md and the figures (default: PATH/report)")
    args = parser.parse_args(argv)
    found = members(args.path) if args.path.is_dir() else []
    if not found:
        parser.error(f"{args.path} is neither a run directory (a manifest.json in it) nor a sweep directory "
                     "(sub-folders 0/, 1/, ... with a manifest.json or a FAILED file)")
    out = args.out or args.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures(found, out)
    atomic_write_text(out / "report.md", markdown(args.path, found))
    if is_run(args.path):
        print(table(found[0].manifest) if found[0].manifest else f"{found[0].label}: {found[0].status}")
    else:
        header = ["member", "status", "final", "best", "kept", "wall s"]
        print(aligned(header, [member_cells(m) for m in found]))
        if cache := cache_line(found):
            print(cache)
        for m in found:
            if m.failure:
                print(f"{m.label}: {why(m)}")
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

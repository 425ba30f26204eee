"""Run every benchmark in sequence, keep their BENCH lines, print one markdown table.

    .venv/bin/python bench/run_all.py                  # about 30 minutes on a quiet 2-core machine
    .venv/bin/python bench/run_all.py --quick          # each benchmark's --quick size, about 12 minutes
    .venv/bin/python bench/run_all.py --only grow judge --run runs/demo/<time>

Results go to bench/results/<date>_<time>.jsonl (one BENCH record per line, written as each
benchmark ends; `_quick` added for --quick) and a full-size run's are copied to
bench/results/latest.jsonl; each benchmark's stderr (vLLM's and
the trainer's logs and bars) goes to bench/results/logs/, which is not kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["grow", "judge", "agent", "finetune", "dpo", "replicas", "transition", "scaling", "review", "synth_dedup", "synth_rows", "e2e"]  # e2e reads scaling's line: keep it last


def run_one(name: str, args, results: Path, logs: Path) -> dict:
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
    if args.run and name in ("transition", "e2e"):
        cmd += ["--run", str(args.run)]
    if name == "e2e":
        cmd += ["--results", str(results)]
    print(f"\n## {name}: {' '.join(cmd[1:])}", flush=True)
    record = None
    start = time.perf_counter()
    with open(logs / f"{results.stem}_{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=HERE.parent)
        for line in proc.stdout:
            if line.startswith("BENCH "):
                record = json.loads(line[len("BENCH "):])
            else:
                print(line, end="", flush=True)
        code = proc.wait()
    seconds = round(time.perf_counter() - start, 1)
    if record is None:
        record = {"bench": name, "error": f"exit code {code}, no BENCH line; see {log.name}", "ratios": {}}
        print(f"  FAILED: {record['error']}", flush=True)
    record["seconds"] = seconds
    with open(results, "a") as f:
        f.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
    return record


def table(records: list[dict]) -> str:
    rows = ["| bench | measure | value | target | met | bench s |", "|---|---|---|---|---|---|"]
    for r in records:
        entries = r.get("ratios") or {"error": {"value": r.get("error", "no ratios")}}
        for key, e in entries.items():
            met = {True: "yes", False: "**no**", None: ""}[e.get("met")]
            rows.append(f"| {r['bench']} | {key} | {e.get('value')} | {e.get('target') or ''} | {met} | "
                        f"{r.get('seconds', '')} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description="Run every benchmark; keep their BENCH lines; print a table.")
    p.add_argument("--quick", action="store_true", help="each benchmark's --quick size")
    p.add_argument("--only", nargs="+", choices=ORDER, help="these benchmarks only (in the usual order)")
    p.add_argument("--run", type=Path, help="a finished demo run, for transition.py and e2e.py")
    args = p.parse_args()

    out = HERE / "results"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = out / f"{dt.datetime.now():%Y-%m-%d_%H-%M-%S}{'_quick' if args.quick else ''}.jsonl"
    start = time.perf_counter()
    records = [run_one(name, args, results, logs) for name in ORDER if not args.only or name in args.only]
    if not args.quick:  # latest.jsonl is always a full-size run
        shutil.copyfile(results, out / "latest.jsonl")
    print(f"\n{table(records)}\n\n{len(records)} benchmarks in {time.perf_counter() - start:.0f} s; kept in "
          f"{results.relative_to(HERE.parent)}{'' if args.quick else ' and bench/results/latest.jsonl'}", flush=True)


if __name__ == "__main__":
    main()

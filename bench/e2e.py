"""End to end: the demo's rounds per hour on this machine, and on a GPU the decode roofline fraction.

    .venv/bin/python bench/e2e.py --run runs/demo/<time>     # from a finished demo run
    .venv/bin/python bench/e2e.py                            # the newest finished runs/demo/<time>, if any,
                                                             # and the scaling fit in bench/results/latest.jsonl

Two sources, each labelled in the output:

- measured: a finished demo run's manifest.json. End to end is rounds / (finished - created),
  start-up and the base model's evaluation included; steady is 3600 / the mean of rounds.<r>.wall_s.
- derived: bench/scaling.py's fit round_s = fixed + per_prompt * K (sampler n=6, the demo's), at the
  demo's K = task.n_train of conf/experiment/demo.yaml. The scaling runs keep one sample per prompt,
  so their fine-tunes see K examples where the demo's keep 15-76: the derived figure is a lower bound
  on speed for round 1 and roughly right for later rounds.

GPU roofline (only when torch.cuda.is_available()): a decode step reads every weight once for the
whole batch, so at batch B the memory-bound ceiling is B * bandwidth / weight_bytes tokens/s;
the fraction is the measured Grow tok/s over that ceiling. Bandwidth is the device's peak
(2 * memory clock * bus width). It does not run on a CPU machine.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import common


def newest_demo_run() -> Path | None:
    found = []
    for manifest in (common.ROOT / "runs" / "demo").glob("*/manifest.json"):
        try:
            if json.loads(manifest.read_text()).get("status") == "finished":
                found.append(manifest.parent)
        except (OSError, ValueError):
            pass
    return max(found, default=None, key=lambda p: p.name)


def measured(run: Path) -> dict:
    m = json.loads((run / "manifest.json").read_text())
    rounds = [v for k, v in m["rounds"].items() if int(k) > 0 and v.get("wall_s")]
    e2e_s = (dt.datetime.fromisoformat(m["finished"]) - dt.datetime.fromisoformat(m["created"])).total_seconds()
    walls = [r["wall_s"] for r in rounds]
    return {"run": str(run), "rounds": len(rounds), "e2e_s": e2e_s, "round_wall_s": walls,
            "rounds_per_hour_e2e": round(3600 * len(rounds) / e2e_s, 2),
            "rounds_per_hour_steady": round(3600 / (sum(walls) / len(walls)), 2),
            "grow_tok_s": [r.get("grow", {}).get("tokens_per_s") for r in rounds],
            "finetune_tok_s": [r["finetune"].get("tokens_per_s") for r in rounds if "finetune" in r]}


def derived(results: Path) -> dict | None:
    """From the newest scaling line of a results file, at the demo's number of prompts."""
    if not results.is_file():
        return None
    fits = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    fits = [r for r in fits if r.get("bench") == "scaling" and "metrics" in r]
    if not fits:
        return None
    fit = fits[-1]["metrics"]["fit"]
    demo = common.demo_config()
    k, n = demo.task["n_train"], demo.sampler.n
    if fit["n"] != n:
        return {"note": f"scaling ran with n={fit['n']}, the demo samples n={n}: not extrapolated"}
    round_s = fit["fixed_s"] + fit["per_prompt_s"] * k
    return {"from": str(results), "prompts": k, "round_s": round(round_s, 1),
            "rounds_per_hour": round(3600 / round_s, 2), "fit": fit}


def peak_bandwidth(torch) -> float:
    """Bytes/s: DDR/HBM transfer twice per clock; memory_clock_rate is in kHz, the bus width in bits."""
    props = torch.cuda.get_device_properties(0)
    return 2 * props.memory_clock_rate * 1e3 * props.memory_bus_width / 8


def roofline(batch: int) -> dict | None:
    """Measured Grow tok/s over the memory-bound decode ceiling at `batch` sequences. CUDA only."""
    import torch

    if not torch.cuda.is_available():
        return None
    from rest_loop.engine import BASE
    from rest_loop.grow import grow

    eng = common.engine()
    weight_bytes = sum(f.stat().st_size for f in Path(common.model_path()).glob("*.safetensors"))
    weight_bytes *= 2 / 4 if eng.identity["dtype"] == "bfloat16" else 1  # the files are float32
    n = 8
    prompts = common.arithmetic_prompts(max(1, batch // n))
    sampler = common.demo_sampler(n=n, max_tokens=128)
    grow(eng, BASE, prompts, sampler, round=1)  # warm-up
    t: list[float] = []
    with common.timed(t):
        samples = grow(eng, BASE, prompts, sampler, round=1)
    tok_s = sum(s.num_tokens for s in samples) / t[0]
    bandwidth = peak_bandwidth(torch)
    ceiling = len(prompts) * n * bandwidth / weight_bytes
    return {"device": torch.cuda.get_device_name(0), "batch": len(prompts) * n, "tok_s": round(tok_s, 1),
            "weight_bytes": int(weight_bytes), "bandwidth_gb_s": round(bandwidth / 1e9, 1),
            "ceiling_tok_s": round(ceiling, 1), "fraction": round(tok_s / ceiling, 4)}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--run", type=Path, help="a finished demo run folder (default: the newest in runs/demo)")
    p.add_argument("--results", type=Path, default=common.ROOT / "bench" / "results" / "latest.jsonl",
                   help="where to find bench/scaling.py's fit")
    p.add_argument("--batch", type=int, default=256, help="GPU roofline: sequences decoded together")
    args = p.parse_args()
    common.quiet()

    run = args.run or newest_demo_run()
    have = measured(run) if run else None
    guess = derived(args.results)
    if have:
        common.line("measured: demo rounds/hour, end to end", have["rounds_per_hour_e2e"],
                    f"{have['rounds']} rounds in {have['e2e_s']:.0f} s ({run})")
        common.line("measured: demo rounds/hour, round walls only", have["rounds_per_hour_steady"],
                    f"round walls {have['round_wall_s']} s")
    else:
        common.line("measured", "no finished demo run (pass --run runs/demo/<time>)")
    if guess and "rounds_per_hour" in guess:
        common.line(f"derived: rounds/hour at {guess['prompts']} prompts", guess["rounds_per_hour"],
                    f"round {guess['round_s']} s from the scaling fit")
    else:
        common.line("derived", (guess or {}).get("note", f"no scaling result in {args.results}"))
    roof = roofline(args.batch)
    if roof:
        common.line("GPU decode roofline fraction", roof["fraction"], f"{roof}")
    else:
        common.line("GPU decode roofline fraction", "skipped: no CUDA device")

    headline = {}
    if have:
        headline["measured_rounds_per_hour"] = common.ratio_entry(have["rounds_per_hour_e2e"])
    if guess and "rounds_per_hour" in guess:
        headline["derived_rounds_per_hour"] = common.ratio_entry(guess["rounds_per_hour"])
    if roof:
        headline["gpu_roofline_fraction"] = common.ratio_entry(roof["fraction"])
    common.emit("e2e", args, headline, {"measured": have, "derived": guess, "roofline": roof})


if __name__ == "__main__":
    main()

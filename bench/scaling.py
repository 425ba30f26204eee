"""Scaling: wall time and peak memory of one round through the real CLI at 1x, 2x and 4x the prompts.

    .venv/bin/python bench/scaling.py --quick                 # 1x and 2x of 2 prompts, about 2 minutes
    .venv/bin/python bench/scaling.py                         # 6, 12, 24 prompts, about 6 minutes

Each size is one `python -m rest_loop experiment=demo loop.rounds=1 task.n_train=K ...` in a
subprocess with its own run folder and the pool cache off (paths.pools=null), so nothing is read
back. The demo's sampler (n=6, 16 tokens) and trainer are kept; the held-out set is shrunk to a
fixed size (task.n_heldout) so that only Grow, Improve and the fine-tune grow with K, and
filter.threshold=0 keeps one sample per prompt, so the fine-tune's data grows with K too (and a
tiny run never stops for keeping nothing).

Reported per size: the process's wall time, the round's wall time from its manifest (rounds.1.wall_s:
Grow to the round's evaluation, without start-up and the base model's evaluation), the Grow and
fine-tune seconds, and the peak of the summed RSS of the process tree (sampled with psutil: vLLM may
run its engine core in a child, and RUSAGE_CHILDREN would give only the largest process). The ratio
to linear is time(mK) / (m * time(K)): 1.0 is linear, below 1 is fixed cost amortised. A linear fit
round_s = fixed + per_prompt * K is kept for bench/e2e.py, which extrapolates it to the demo's size.
Sizes run in order, not alternated: each is minutes long.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def one_round(k: int, args, folder: Path) -> dict:
    cmd = [sys.executable, "-m", "rest_loop", "experiment=demo", "loop.rounds=1", f"task.n_train={k}",
           f"task.n_heldout={args.heldout}", f"sampler.n={args.n}", "filter.threshold=0", "paths.pools=null",
           f"hydra.run.dir={folder}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.ROOT, stdout=sys.stderr, stderr=sys.stderr)
    with common.TreeRSS(proc.pid) as rss:
        code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"exit code {code}: {' '.join(cmd)}")
    from rest_loop.store import read_json

    m = read_json(folder / "manifest.json")
    r1 = m["rounds"]["1"]
    return {"prompts": k, "wall_s": round(wall, 1), "round_s": r1.get("wall_s"), "grow_s": r1["grow"]["seconds"],
            "grow_tokens": r1["grow"]["tokens"], "finetune_s": r1["finetune"]["seconds"],
            "kept": r1["finetune"].get("kept", r1["finetune"].get("examples")),
            "engine_startup_s": m.get("engine_startup_s"), "peak_rss_gib": common.gib(rss.peak)}


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n, mx, my = len(xs), sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=6, help="train prompts at 1x")
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--n", type=int, default=6, help="samples per prompt (the demo's 6)")
    p.add_argument("--heldout", type=int, default=10, help="held-out prompts, the same at every size")
    args = p.parse_args()
    if args.quick:
        args.prompts, args.multiples, args.n, args.heldout = 2, [1, 2], 2, 4
    common.quiet()
    print(f"scaling: one round of the demo at {[args.prompts * m for m in args.multiples]} prompts x n={args.n}, "
          f"{args.heldout} held-out", flush=True)

    # untimed: read the libraries into the page cache, or the first size pays for it alone
    subprocess.run([sys.executable, "-c", "import vllm, trl, peft, rest_loop.loop"], cwd=common.ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for m in args.multiples:
            row = one_round(args.prompts * m, args, Path(tmp) / f"x{m}")
            rows.append({"multiple": m, **row})
            common.line(f"{m}x = {row['prompts']} prompts: wall s / round s", f"{row['wall_s']} / {row['round_s']}",
                        f"grow {row['grow_s']} s, fine-tune {row['finetune_s']} s, peak RSS {row['peak_rss_gib']} GiB")
    base = rows[0]
    ratios = {}
    for row in rows[1:]:
        m = row["multiple"] / base["multiple"]
        wall_ratio = row["wall_s"] / (m * base["wall_s"])
        round_ratio = row["round_s"] / (m * base["round_s"])
        ratios[f"wall_{row['multiple']}x_vs_linear"] = common.ratio_entry(wall_ratio)
        ratios[f"round_{row['multiple']}x_vs_linear"] = common.ratio_entry(round_ratio)
        common.line(f"{row['multiple']}x vs linear: wall / round", f"{wall_ratio:.3f} / {round_ratio:.3f}",
                    f"peak RSS {row['peak_rss_gib'] / base['peak_rss_gib']:.2f}x of 1x")
    fixed, per_prompt = linear_fit([r["prompts"] for r in rows], [r["round_s"] for r in rows])
    common.line("round_s = fixed + per_prompt * K", f"{fixed:.1f} + {per_prompt:.2f} * K", f"(n={args.n})")
    common.emit("scaling", args, ratios, {"rows": rows, "fit": {"fixed_s": round(fixed, 2),
                                                                "per_prompt_s": round(per_prompt, 3),
                                                                "n": args.n, "heldout": args.heldout}})


if __name__ == "__main__":
    main()

"""Round transition: from a fine-tuned adapter on disk to the first token generated with it.

    .venv/bin/python bench/transition.py --quick                       # about 1 minute on a quiet machine
    .venv/bin/python bench/transition.py --run runs/demo/<time>        # also: share of that run's rounds

Ours is what the loop does after a LoRA fine-tune (rest_loop.loop.Run.ready): hot-swap the adapter
into the running engine with a `Policy` and generate one token (max_tokens=1). The peer is what a
loop without hot-swap does: build a new engine as the loop builds it and generate one token,
timed in a fresh process after vLLM is imported (a second in-process engine cannot be closed
without breaking the first: see cold_child). Each hot-swap uses a fresh copy of the adapter folder,
so vLLM loads it from disk every time, as it does for each round's new adapter. The adapter is a
freshly initialised LoRA (conf/trainer/lora.yaml's rank and modules) saved by PEFT, or --adapter.

Reported: hot-swap seconds as a fraction of a cold start (target <= 10%), a one-token generate
without any swap for scale, and with --run the transitions a finished run recorded in its manifest
(rounds.<r>.transitions) as a fraction of each round's wall time (rounds.<r>.wall_s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common


def make_adapter(out: Path) -> Path:
    """A LoRA adapter folder as PEFT saves it, with the trainer config's rank and target modules."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = common.demo_trainer()
    model = AutoModelForCausalLM.from_pretrained(common.model_path(), dtype=torch.float32)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(str(out))
    return out


def manifest_transitions(run: Path) -> list[dict]:
    """Each round's recorded transitions and wall time, from a finished run's manifest.json."""
    from rest_loop.store import read_json

    rounds = read_json(run / "manifest.json").get("rounds", {})
    rows = []
    for r, entry in sorted(rounds.items(), key=lambda kv: int(kv[0])):
        for stage, t in entry.get("transitions", {}).items():
            wall = entry.get("wall_s")
            rows.append({"round": int(r), "stage": stage, "how": t["how"], "seconds": t["seconds"], "wall_s": wall,
                         "fraction_of_round": round(t["seconds"] / wall, 5) if wall else None})
    return rows


def cold_child() -> None:
    """The peer, in a fresh process (vllm imported first, untimed): a new engine and its first token.
    In one process a second in-process engine cannot be closed without breaking the first (its
    shutdown tears down vLLM's process-wide parallel groups), so the peer gets its own process."""
    common.quiet()
    import vllm  # noqa: F401 - the import is not part of a cold start in a running loop

    from rest_loop.engine import BASE, close_engines

    t: list[float] = []
    with common.timed(t):
        fresh = common.engine()  # as the loop builds it, so on CPU with the engine core in-process
        prompt = fresh.chat_prompt(common.arithmetic_prompts(1)[0].messages)
        fresh.generate([prompt], {"n": 1, "max_tokens": 1, "temperature": 0.0}, BASE, use_tqdm=False)
    close_engines()
    print(json.dumps({"seconds": t[0]}), flush=True)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--adapter", type=Path, help="an adapter folder to swap in (default: a fresh LoRA)")
    p.add_argument("--run", type=Path, help="a finished run folder: report its recorded transitions too")
    p.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cold_child:
        return cold_child()
    reps = args.reps or (1 if args.quick else 3)
    common.quiet()

    from rest_loop.engine import BASE, Policy, adapter_id

    one_token = {"n": 1, "max_tokens": 1, "temperature": 0.0}
    tmp = Path(tempfile.mkdtemp(prefix="bench-transition-"))
    try:
        adapter = args.adapter or make_adapter(tmp / "adapter")
        eng = common.engine()
        prompt = eng.chat_prompt(common.arithmetic_prompts(1)[0].messages)
        print(f"transition: adapter {adapter}; engine start-up {eng.startup_s:.1f} s; {reps} reps alternated",
              flush=True)
        eng.generate([prompt], one_token, BASE, use_tqdm=False)  # warm-up
        copies = iter(range(10_000))

        def hot_swap() -> float:
            folder = tmp / f"round_{next(copies):03d}"
            shutil.copytree(adapter, folder)  # a new folder: vLLM loads it as the new round's adapter
            t: list[float] = []
            with common.timed(t):
                policy = Policy(folder.name, str(folder), adapter_id(str(folder)))
                eng.generate([prompt], one_token, policy, use_tqdm=False)
            return t[0]

        def cold_start() -> float:
            out = subprocess.run([sys.executable, __file__, "--cold-child"], stdout=subprocess.PIPE,
                                 stderr=sys.stderr, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]

        def no_swap() -> float:
            t: list[float] = []
            with common.timed(t):
                eng.generate([prompt], one_token, BASE, use_tqdm=False)
            return t[0]

        runs = common.alternate({"hot_swap": hot_swap, "cold_start": cold_start, "no_swap": no_swap}, reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: common.median(v) for k, v in runs.items()}
    fraction = common.paired_ratio(runs["hot_swap"], runs["cold_start"])
    common.line("hot-swap + first token, s", f"{med['hot_swap']:.3f}",
                f"runs {[round(x, 3) for x in runs['hot_swap']]}")
    common.line("new engine + first token, s", f"{med['cold_start']:.1f}",
                f"runs {[round(x, 1) for x in runs['cold_start']]}")
    common.line("one-token generate, no swap, s", f"{med['no_swap']:.3f}")
    common.line("hot-swap / cold start", f"{fraction:.4f}", "target <= 0.10")

    recorded = manifest_transitions(args.run) if args.run else []
    for row in recorded:
        common.line(f"run: round {row['round']} {row['stage']} ({row['how']})",
                    f"{row['seconds']} s", f"{row['fraction_of_round']} of the round's {row['wall_s']} s")
    if args.run and not recorded:
        common.line("run", f"{args.run}: its manifest records no transitions")
    common.emit("transition", args, {"hot_swap_vs_cold_start": common.ratio_entry(fraction, "<=0.10")}, {
        "seconds": {k: round(v, 4) for k, v in med.items()}, "runs": runs, "recorded": recorded, "reps": reps,
        "engine_startup_s": round(eng.startup_s, 2),
    })


if __name__ == "__main__":  # vLLM may start processes with spawn, which re-imports this file: keep the guard
    main()
    from rest_loop.engine import close_engines

    close_engines()

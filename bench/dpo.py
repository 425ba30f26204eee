"""DPO throughput and memory: rest_loop.prefer.train.dpo against TRL's DPOTrainer used directly, on the same pairs.

    .venv/bin/python bench/dpo.py --quick    # about 6 minutes on a quiet machine
    .venv/bin/python bench/dpo.py            # the run_all size

Every side trains a LoRA adapter on SmolLM2-135M with DPO (sigmoid loss, beta 0.1) on the same pairs: the
demo's arithmetic prompts, chosen = "The answer is <right>.", rejected = "The answer is <right + 3>.".

- ours: `dpo(base, pairs, TrainerConfig(objective=dpo, ...), out)`, conf/trainer/dpo.yaml's settings
  (float32, cosine schedule, the reference is the base with the adapter switched off: no second copy);
- trl_peft: `DPOTrainer(model=<path>, args=DPOConfig(...), peft_config=LoraConfig(...))` with the same
  hyperparameters, numerics and data order: plain TRL as its docs show it, which also switches the
  adapter off for the reference. Its loss should equal ours; the ratio is what our wrapper costs;
- trl_ref_copy: the same, with the reference passed as a second model (`ref_model=`): what a trainer
  without the adapter trick pays in memory.

Each side runs in its own process, alternated, so its peak RSS is its own (os.wait4). Tokens are the
prompt, chosen and rejected tokens of every pair (the prompt counted twice: TRL feeds it with each
answer) over the epochs, per second of `trainer.train()`. Target: ours >= 1.0x trl_peft in tokens/s.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import common

SIDES = ("ours", "trl_peft", "trl_ref_copy")


def pairs(n: int):
    from rest_loop.prefer.pairs import PreferencePair

    return [PreferencePair(round=1, step=1, prompt_id=p.id, messages=p.messages, chosen=f"The answer is {p.reference}.",
                           rejected=f"The answer is {int(p.reference) + 3}.", chosen_idx=0, rejected_idx=1,
                           chosen_score=1.0, rejected_score=0.0, policy="base", reward="reference")
            for p in common.arithmetic_prompts(n)]


def config(args):
    from rest_loop.config import TrainerConfig

    return TrainerConfig(objective="dpo", learning_rate=5e-5, epochs=args.epochs, batch_size=args.batch_size,
                         report_to=[], logging_steps=1000)


def tokens(trainer, epochs: float) -> int:
    from rest_loop.prefer.train import pair_tokens

    return int(pair_tokens(trainer.train_dataset) * epochs)


def run_ours(cfg, data, out: Path) -> dict:
    import trl

    from rest_loop.prefer.train import dpo

    seen = {}
    original = trl.DPOTrainer.train

    def train(self, *a, **k):  # count the tokens TRL tokenized, as for the peers
        seen["tokens"] = tokens(self, cfg.epochs)
        return original(self, *a, **k)

    trl.DPOTrainer.train = train
    summary = dpo(common.model_path(), data, cfg, out)
    return {"train_s": summary["seconds"], "train_loss": summary["train_loss"], "steps": summary["steps"],
            "tokens": seen["tokens"], "reference": summary["reference"]}


def run_trl(cfg, data, out: Path, ref_copy: bool) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from rest_loop.prefer.train import to_dataset

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=str(out), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
                     per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                     beta=cfg.beta, lr_scheduler_type="cosine", bf16=False, gradient_checkpointing=False,
                     use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no", logging_steps=1000)
    model = AutoModelForCausalLM.from_pretrained(common.model_path(), dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(common.model_path(), dtype=torch.float32) if ref_copy else None
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=to_dataset(data), peft_config=lora)
    n = tokens(trainer, cfg.epochs)
    start = time.perf_counter()
    result = trainer.train()
    return {"train_s": time.perf_counter() - start, "train_loss": result.training_loss, "steps": result.global_step,
            "tokens": n, "reference": "a second model" if ref_copy else "base model (adapter off)"}


def child(args) -> None:
    common.quiet()
    cfg, data = config(args), pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        result = (run_ours(cfg, data, Path(tmp)) if args.child == "ours"
                  else run_trl(cfg, data, Path(tmp), ref_copy=args.child == "trl_ref_copy"))
    result["tokens_per_s"] = result["tokens"] / result["train_s"]
    Path(args.result).write_text(json.dumps(result))


def spawn(side: str, args, tmp: Path) -> dict:
    return common.run_side(__file__, side, tmp, "--pairs", str(args.pairs), "--epochs", str(args.epochs),
                           "--batch-size", str(args.batch_size))


def main() -> None:
    import argparse

    p = common.parser(__doc__)
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.pairs = 32
    reps = args.reps or (1 if args.quick else 2)
    print(f"dpo: {args.pairs} pairs, {args.epochs:g} epoch(s), batch {args.batch_size}; {reps} reps alternated, "
          "each side in its own process", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = common.alternate({side: (lambda side=side: spawn(side, args, Path(tmp))) for side in SIDES}, reps)
    tps = {k: [r["tokens_per_s"] for r in v] for k, v in runs.items()}
    summary = {}
    for k, rs in runs.items():
        summary[k] = {"tokens_per_s": round(common.median(tps[k]), 2), "tokens": rs[-1]["tokens"],
                      "train_loss": [round(r["train_loss"], 4) for r in rs], "steps": rs[-1]["steps"],
                      "train_s": [round(r["train_s"], 1) for r in rs], "wall_s": [round(r["wall_s"], 1) for r in rs],
                      "peak_rss_gib": max(r["peak_rss_gib"] for r in rs), "reference": rs[-1]["reference"]}
        common.line(f"{k}: tokens/s in train()", f"{summary[k]['tokens_per_s']:.1f}", f"runs {[round(x, 1) for x in tps[k]]}")
        common.line(f"{k}: final train loss", summary[k]["train_loss"])
        common.line(f"{k}: peak RSS GiB (reference: {summary[k]['reference']})", f"{summary[k]['peak_rss_gib']:.2f}")
    ratio = common.paired_ratio(tps["ours"], tps["trl_peft"])
    common.line("ours_vs_trl_peft (tokens/s)", f"{ratio:.3f}", "target >= 1.0")
    gap = abs(common.median(summary["ours"]["train_loss"]) - common.median(summary["trl_peft"]["train_loss"]))
    common.line("|loss ours - loss trl_peft| (same pairs)", f"{gap:.4f}")
    memory = summary["trl_ref_copy"]["peak_rss_gib"] - summary["ours"]["peak_rss_gib"]
    common.line("peak RSS saved by no reference copy, GiB", f"{memory:.2f}")
    common.emit("dpo", args, {"ours_vs_trl_peft": common.ratio_entry(ratio, ">=1.0"),
                              "peak_rss_ours_vs_trl_ref_copy": common.ratio_entry(
                                  summary["ours"]["peak_rss_gib"] / summary["trl_ref_copy"]["peak_rss_gib"])},
                {"sides": summary, "loss_gap_vs_trl_peft": round(gap, 4), "reps": reps})


if __name__ == "__main__":
    main()

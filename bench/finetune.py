"""Fine-tune throughput: non-padding tokens/s of rest_loop.finetune.finetune against TRL's SFTTrainer.

    .venv/bin/python bench/finetune.py --quick    # about 3 minutes on a quiet machine
    .venv/bin/python bench/finetune.py            # the run_all size

All sides train a LoRA adapter on SmolLM2-135M on the same examples: KeptExample rows made of the
demo's arithmetic prompts and their reference answers, in the prompt-completion format our
fine-tune uses (rest_loop.finetune.to_dataset).

- ours: `finetune(base, examples, TrainerConfig, out)` with conf/trainer/lora.yaml and the demo's
  overrides (float32, no gradient checkpointing, cosine schedule, TensorBoard logging as configured);
- trl_defaults: `SFTTrainer(model=<path>, args=SFTConfig(...), peft_config=LoraConfig(...))` with
  TRL's defaults (bf16 autocast, gradient checkpointing, linear schedule, no logging integration)
  plus the same LoRA settings, learning rate, epochs, batch size, max_length and data-order seed,
  and use_cpu=True without a GPU (transformers refuses TRL's bf16 default there otherwise). It is
  ~20x slower on a CPU without native bf16, so it trains on the first --defaults-examples only:
  its tokens/s is a rate, its loss is not comparable;
- trl_fp32: the same with bf16=False and gradient_checkpointing=False, our numerics: the same data,
  so its loss should equal ours within noise (the schedules differ: linear vs our cosine), and the
  ratio is what our wrapper costs or saves over plain TRL.

Each side runs in its own process (alternated, A B C, C B A, ...), so its peak RSS is its own
(os.wait4's rusage of that child). Tokens are counted by wrapping TRL's collator: real tokens
(attention mask) against the padded batch tensors, and tokens with a loss. Tokens/s is real tokens
over the seconds of `trainer.train()`; the process's wall time (imports, model load, saving) is
reported beside it. Target: ours >= 1.0x plain TRL.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import common

SIDES = ("ours", "trl_fp32", "trl_defaults")
COUNTS = {"real": 0, "padded": 0, "loss": 0, "batches": 0}


def count_collated_tokens() -> None:
    """Wrap TRL's collator (both sides use it) to count real, padded and loss tokens per batch."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    original = DataCollatorForLanguageModeling.torch_call

    def torch_call(self, examples):
        batch = original(self, examples)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        COUNTS["padded"] += ids.numel()
        COUNTS["real"] += int(mask.sum()) if mask is not None else ids.numel()  # padding-free: no padding
        COUNTS["loss"] += int((batch["labels"] != -100).sum())
        COUNTS["batches"] += 1
        return batch

    DataCollatorForLanguageModeling.torch_call = torch_call


def examples(n: int):
    from rest_loop.records import KeptExample

    return [KeptExample(round=1, prompt_id=p.id, sample_idx=0, messages=p.messages, completion=p.reference,
                        score=1.0, policy="base", seed=0, reward="reference") for p in common.arithmetic_prompts(n)]


def run_ours(cfg, data, out: Path) -> dict:
    from rest_loop.finetune import finetune

    summary = finetune(common.model_path(), data, cfg, out)
    return {"train_s": summary["seconds"], "train_loss": summary["train_loss"], "steps": summary["steps"],
            "reported_tokens_per_s": summary["tokens_per_s"]}


def run_trl(cfg, data, out: Path, fp32: bool) -> dict:
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from rest_loop.finetune import to_dataset

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=str(out), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
                     per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                     use_cpu=not torch.cuda.is_available(),  # else transformers refuses bf16 without a GPU
                     **({"bf16": False, "gradient_checkpointing": False} if fp32 else {}))
    trainer = SFTTrainer(model=common.model_path(), args=args, train_dataset=to_dataset(data), peft_config=lora)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(out / "adapter"))
    return {"train_s": seconds, "train_loss": result.training_loss, "steps": result.global_step,
            "settings": {"bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
                         "lr_scheduler": str(args.lr_scheduler_type), "report_to": args.report_to,
                         "use_cpu": args.use_cpu}}


def child(args) -> None:
    """One side in this process; writes its result as JSON to args.result."""
    common.quiet()
    count_collated_tokens()
    cfg = common.demo_trainer(epochs=args.epochs, batch_size=args.batch_size)
    data = examples(args.examples)
    with tempfile.TemporaryDirectory() as tmp:
        if args.child == "ours":
            result = run_ours(cfg, data, Path(tmp))
        else:
            result = run_trl(cfg, data, Path(tmp), fp32=args.child == "trl_fp32")
    result.update(COUNTS, tokens_per_s=COUNTS["real"] / result["train_s"])
    Path(args.result).write_text(json.dumps(result))


def spawn(side: str, args, tmp: Path) -> dict:
    """Run one side in a fresh process (common.run_side: its wall time and peak RSS join its result)."""
    examples = args.defaults_examples if side == "trl_defaults" else args.examples
    return common.run_side(__file__, side, tmp, "--examples", str(examples), "--epochs", str(args.epochs),
                           "--batch-size", str(args.batch_size))


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--examples", type=int, default=32, help="training examples (arithmetic prompt + reference)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--defaults-examples", type=int, default=8, help="examples for the slow TRL-defaults side")
    p.add_argument("--child", choices=SIDES, help=argparse_hidden())
    p.add_argument("--result", help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.examples = 16
    reps = args.reps or (1 if args.quick else 2)
    print(f"finetune: {args.examples} examples ({args.defaults_examples} for trl_defaults), {args.epochs:g} "
          f"epoch(s), batch {args.batch_size}; {reps} reps alternated, each side in its own process", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        runs = common.alternate({side: (lambda side=side: spawn(side, args, Path(tmp))) for side in SIDES}, reps)
    tps = {k: [r["tokens_per_s"] for r in v] for k, v in runs.items()}
    ratios = {f"ours_vs_{k}": common.paired_ratio(tps["ours"], tps[k]) for k in SIDES[1:]}
    summary = {}
    for k, rs in runs.items():
        last = rs[-1]
        pad = 1 - last["real"] / last["padded"]
        summary[k] = {"tokens_per_s": round(common.median(tps[k]), 2),
                      "train_loss": [round(r["train_loss"], 4) for r in rs],
                      "padding_fraction": round(pad, 4), "real_tokens": last["real"], "padded_tokens": last["padded"],
                      "loss_tokens": last["loss"], "steps": last["steps"],
                      "train_s": [round(r["train_s"], 1) for r in rs], "wall_s": [round(r["wall_s"], 1) for r in rs],
                      "peak_rss_gib": max(r["peak_rss_gib"] for r in rs), "settings": last.get("settings")}
        common.line(f"{k}: real tokens/s in train()", f"{summary[k]['tokens_per_s']:.1f}",
                    f"runs {[round(x, 1) for x in tps[k]]}")
        common.line(f"{k}: final train loss", summary[k]["train_loss"])
        common.line(f"{k}: padding fraction", f"{pad:.3f}",
                    f"{last['real']} real of {last['padded']} batch tokens, {last['loss']} with a loss")
        common.line(f"{k}: peak RSS GiB / process wall s", f"{summary[k]['peak_rss_gib']:.2f} / {summary[k]['wall_s']}")
    for k in SIDES[1:]:
        common.line(f"{k} settings", summary[k]["settings"])
    for k, v in ratios.items():
        common.line(f"{k} (real tokens/s)", f"{v:.3f}", "target >= 1.0")
    loss_gap = abs(common.median(summary["ours"]["train_loss"]) - common.median(summary["trl_fp32"]["train_loss"]))
    common.line("|loss ours - loss trl_fp32| (same data)", f"{loss_gap:.4f}")
    rss = {f"peak_rss_ours_vs_{k}": common.ratio_entry(summary["ours"]["peak_rss_gib"] / summary[k]["peak_rss_gib"])
           for k in SIDES[1:]}
    common.emit("finetune", args, {**{k: common.ratio_entry(v, ">=1.0") for k, v in ratios.items()}, **rss},
                {"sides": summary, "loss_gap_vs_trl_fp32": round(loss_gap, 4), "reps": reps})


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()

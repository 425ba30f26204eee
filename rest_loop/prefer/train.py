"""DPO on preference pairs with TRL's DPOTrainer: the fine-tune stage of a preference round.

The policy trains as a LoRA adapter by default, and the reference costs no second copy of the weights:

    init=base,     reference=start   a fresh adapter; the reference is the base (the adapter switched off)
    init=previous, reference=start   the previous adapter trains on; TRL copies it, frozen, as adapter "ref"
    init=previous, reference=base    the copy is dropped, so the reference is the base (adapters switched off)

With trainer.method=full TRL loads the reference as a second model. `trainer.loss_type` is TRL's: sigmoid
(DPO), ipo, hinge, robust, ... (DPOConfig.loss_type). The summary records the loss and the reward margin
(chosen minus rejected implicit reward) of the first and last logged steps.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

from rest_loop.config import ConfigError, TrainerConfig
from rest_loop.finetune import main_process, on_gpu, prepare, save
from rest_loop.prefer.pairs import PreferencePair
from rest_loop.store import write_jsonl

log = logging.getLogger(__name__)


def to_dataset(pairs: list[PreferencePair]):
    """Conversational preference rows: the prompt's messages, the chosen and the rejected answer."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.messages, "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def pair_tokens(dataset) -> int:
    """The tokens DPO feeds per epoch: each pair's prompt twice (with each answer), its chosen and rejected."""
    columns = dataset.column_names
    n = sum(2 * len(ids) for ids in dataset["prompt_ids"]) if "prompt_ids" in columns else 0
    return n + sum(len(ids) for c in ("chosen_ids", "rejected_ids") if c in columns for ids in dataset[c])


def dpo_config(cfg: TrainerConfig, lr: float, work: Path, run_name: str | None = None):
    from trl import DPOConfig

    gpu = on_gpu()
    try:
        return DPOConfig(
            output_dir=str(work), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum, learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=0,
            logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps" if cfg.save_steps else "no",
            **({"save_steps": cfg.save_steps} if cfg.save_steps else {}), save_total_limit=2,
            report_to=list(cfg.report_to), run_name=run_name, max_length=cfg.max_length, beta=cfg.beta,
            loss_type=list(cfg.loss_type), gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed,
            bf16=gpu, use_cpu=not gpu, dataloader_num_workers=0, dataloader_pin_memory=gpu, disable_tqdm=False)
    except ValueError as e:  # TRL's own check of the loss types and their settings
        raise ConfigError(f"trainer.loss_type={list(cfg.loss_type)}: {e}") from None


def losses() -> set[str]:
    """The loss types TRL's DPOConfig documents (it checks them only when it computes the loss)."""
    from trl import DPOConfig

    return set(re.findall(r"`'(\w+)'`", DPOConfig.__dataclass_fields__["loss_type"].metadata.get("help", "")))


def check_dpo(cfg: TrainerConfig) -> None:
    """Before anything runs: settings the DPO trainer would refuse at the first fine-tune."""
    import tempfile

    known = losses()
    if known and (unknown := [t for t in cfg.loss_type if t not in known]):
        raise ConfigError(f"trainer.loss_type={list(cfg.loss_type)}: {', '.join(unknown)} is not one of TRL's DPO "
                          f"losses: {', '.join(sorted(known))}")
    if cfg.mix_original and "sft" not in (cfg.step_objectives or [cfg.objective]):
        raise ConfigError(f"trainer.mix_original={cfg.mix_original}: original targets are not preference pairs; "
                          "set it to 0 with trainer.objective=dpo")
    if cfg.accelerate_config:
        raise ConfigError("trainer.accelerate_config: DPO fine-tunes run in the loop's process for now; set it to null")
    with tempfile.TemporaryDirectory() as tmp:
        dpo_config(cfg, cfg.learning_rate, Path(tmp))


def dpo(base_model: str, pairs: list[PreferencePair], cfg: TrainerConfig, out: Path, start: str | None = None,
        learning_rate: float | None = None, allow_pickle: bool = False) -> dict:
    """Train on `pairs` and save the adapter (or model) under `out`; return a summary like finetune's."""
    from trl import DPOTrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lr, previous, model, tokenizer, peft_config, work, resume, resumed_step = prepare(
        base_model, cfg, out, start, learning_rate, allow_pickle)
    trainer = DPOTrainer(model=model, args=dpo_config(cfg, lr, work, run_name=f"{out.parent.name}/{out.name}"),
                         train_dataset=to_dataset(pairs), processing_class=tokenizer, peft_config=peft_config)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    ref_adapter = "ref" in getattr(unwrapped, "peft_config", {})
    if ref_adapter and cfg.reference == "base":
        unwrapped.delete_adapter("ref")  # without it, TRL's reference is the model with its adapters off: the base
    reference = ("a second copy of the start model" if cfg.method == "full"
                 else "previous policy (a frozen copy of its adapter)" if ref_adapter and cfg.reference == "start"
                 else "base model (adapter off)")
    tokens = pair_tokens(trainer.train_dataset) * cfg.epochs  # the whole schedule's
    begin = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - begin
    tokens_run = tokens * (result.global_step - resumed_step) / max(trainer.state.max_steps, 1)  # this call's share
    if "ref" in getattr(unwrapped, "peft_config", {}):
        unwrapped.delete_adapter("ref")  # the saved adapter is the policy alone
    output = out / ("model" if cfg.method == "full" else "adapter")
    save(trainer, output)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    if main_process():
        write_jsonl(out / "metrics.jsonl", trainer.state.log_history)
        shutil.rmtree(work, ignore_errors=True)
    log.info("DPO (%s, reference: %s) on %d pairs: loss %.3f, %d steps, %.0f s", cfg.method, reference, len(pairs),
             result.training_loss, result.global_step, seconds)
    return {
        "pairs": len(pairs),
        "examples": len(pairs),
        "train_loss": result.training_loss,
        "first": {k: logged[0].get(k) for k in ("loss", "rewards/margins", "rewards/accuracies")} if logged else None,
        "last": {k: logged[-1].get(k) for k in ("loss", "rewards/margins", "rewards/accuracies")} if logged else None,
        "steps": result.global_step,
        "resumed_steps": resumed_step,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens_run / seconds, 1) if seconds else None,
        "method": cfg.method,
        "objective": "dpo",
        "loss_type": list(cfg.loss_type),
        "beta": cfg.beta,
        "reference": reference,
        "init": "previous" if previous else "base",
        "started_from": previous or base_model,
        "learning_rate": lr,
        "output": str(output),
        "resumed_from": resume,
    }

"""Fine-tune: TRL's SFTTrainer with a PEFT LoRA adapter on the kept examples.

The loss is on the completion only (prompt-completion dataset, prompt masked), the
ReST default that beat offline-RL losses. `init=base` trains a fresh adapter on the
base model every round (ReST-EM); `init=previous` keeps training the last round's
adapter (ReST). The adapter is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from rest_loop.config import TrainerConfig
from rest_loop.records import KeptExample
from rest_loop.store import write_jsonl

log = logging.getLogger(__name__)


def finetune(base_model: str, kept: list[KeptExample], cfg: TrainerConfig, out: Path,
             previous_adapter: str | None = None) -> dict:
    """Train on `kept`, save the adapter to `out/adapter`, the log to `out/metrics.jsonl`; return a summary."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list([
        {"prompt": k.messages, "completion": [{"role": "assistant", "content": k.completion}]} for k in kept
    ])
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32 if not torch.cuda.is_available()
                                                 else torch.bfloat16)
    peft_config = None
    if cfg.init == "previous" and previous_adapter:
        model = PeftModel.from_pretrained(model, previous_adapter, is_trainable=True)
    else:
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    work = out / "trainer"
    args = SFTConfig(
        output_dir=str(work),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        max_length=cfg.max_length,
        completion_only_loss=True,
        seed=cfg.seed,
        bf16=torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * cfg.epochs

    tmp = out / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    shutil.rmtree(out / "adapter", ignore_errors=True)
    tmp.rename(out / "adapter")
    shutil.rmtree(work, ignore_errors=True)
    write_jsonl(out / "metrics.jsonl", trainer.state.log_history)
    summary = {
        "examples": len(kept),
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "init": "previous" if peft_config is None else "base",
        "started_from": previous_adapter if peft_config is None else base_model,
    }
    log.info("fine-tuned on %d examples: loss %.3f, %.0f s", len(kept), result.training_loss, seconds)
    return summary

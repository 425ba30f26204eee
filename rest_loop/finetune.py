"""Fine-tune: TRL's SFTTrainer on the kept examples, as a LoRA adapter, a QLoRA adapter or a full model.

The loss is on the completion only by default (prompt-completion dataset, prompt masked), the
ReST default that beat offline-RL losses. `trainer.init=base` starts every fine-tune from the base
model (ReST-EM); `init=previous` keeps training the last one (ReST): its adapter for lora/qlora,
its whole model for full. The result is written to a temporary folder and renamed into place:
`out/adapter` (a PEFT folder vLLM hot-swaps) or `out/model` (safetensors and the tokenizer, a
folder vLLM loads as a model).

With `trainer.save_steps` the trainer checkpoints into `out/trainer`; a fine-tune that was killed
resumes from its last complete checkpoint when it is called again, and the folder is removed once
the output is saved. With `trainer.accelerate_config` the same training runs under `accelerate
launch` (DDP, FSDP, DeepSpeed; see launch/), which runs this module in each process:

    python -m rest_loop.finetune OUT/job.json   # what `accelerate launch ... -m rest_loop.finetune` runs

Packing and padding-free on a machine without flash attention (TRL 1.16, transformers 5): packing
(`bfd`) turns padding-free on, so a batch is one row of concatenated examples with position ids
restarting at 0 and no attention mask. Transformers' sdpa and eager attention read those position
ids as packed sequences and build a block-diagonal causal mask, so examples do not attend to each
other and the loss is the unpacked one; it trains correctly on CPU, but the mask is dense, so it
saves the padding and no attention compute. Padding-free without packing is refused by TRL
when max_length is set (it would not truncate), so `check_method` stops it first.
"""

from __future__ import annotations

import codecs
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rest_loop.config import PROJECT_ROOT, ConfigError, TrainerConfig
from rest_loop.records import KeptExample
from rest_loop.resources import SHIPPED
from rest_loop.store import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # trainer.report_to -> the package it needs


def check_method(cfg: TrainerConfig) -> None:
    """Stop before anything runs when the trainer settings cannot work here. The loop calls this at
    start, so a run does not spend a Grow and an Improve to fail at its first fine-tune."""
    if cfg.padding_free and not cfg.packing:
        raise ConfigError("trainer.padding_free=true: needs trainer.packing=true. TRL only truncates a "
                          "padding-free batch to trainer.max_length when it packs, and refuses otherwise; "
                          "packing=true turns padding-free on by itself")
    if cfg.accelerate_config:
        check_launch(Path(cfg.accelerate_config))
    for name in cfg.report_to:
        if name not in TRACKERS:
            raise ConfigError(f"trainer.report_to: {name!r} is not one of {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ConfigError(f"trainer.report_to: {name} needs the {TRACKERS[name]} package: pip install "
                              f"{TRACKERS[name]}, or drop it from trainer.report_to")
    if cfg.method != "qlora":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("trainer.method=qlora: needs a CUDA GPU (bitsandbytes' 4-bit base model) and this "
                          "machine has none; use trainer=lora or trainer=full")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # not installed, or installed without its CUDA library
        raise ConfigError(f"trainer.method=qlora: needs bitsandbytes, which does not import ({e}); "
                          "install it with pip install -e '.[gpu]'") from None


def check_launch(config_file: Path) -> None:
    """An accelerate config that cannot train as it says: no such file, several machines, FSDP without a GPU
    (accelerate turns FSDP on only for processes on accelerators; on CPU processes it wraps the model in DDP
    and says nothing), DeepSpeed without the deepspeed package."""
    if not config_file.is_file():
        shipped = ", ".join(sorted(p.name for p in (SHIPPED / "launch").glob("*.yaml")))
        raise ConfigError(f"trainer.accelerate_config={config_file}: no such file; {SHIPPED / 'launch'} has {shipped}")
    settings = launch_settings(config_file)
    kind = settings.distributed_type.value
    if settings.num_machines > 1:
        raise ConfigError(f"trainer.accelerate_config={config_file}: num_machines={settings.num_machines}; the "
                          "fine-tune starts its processes on this machine only. Train on one machine's GPUs "
                          "(num_machines: 1); spread a sweep over machines with launcher=slurm")
    if kind == "FSDP" and not on_gpu():
        raise ConfigError(f"trainer.accelerate_config={config_file}: FSDP needs GPUs; on CPU processes accelerate "
                          "trains with DDP instead. Use launch/ddp_cpu.yaml here")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"trainer.accelerate_config={config_file}: DeepSpeed is not installed: pip install deepspeed")


def launch_settings(config_file: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        return load_config_from_file(str(config_file))
    except Exception as e:  # noqa: BLE001 - accelerate raises whatever its yaml or dataclass parsing does
        raise ConfigError(f"trainer.accelerate_config={config_file}: not an accelerate config ({e})") from None


def finetune(base_model: str, examples: list[KeptExample], cfg: TrainerConfig, out: Path,
             start: str | None = None, learning_rate: float | None = None, allow_pickle: bool = False) -> dict:
    """Train on `examples` and save the adapter or model under `out`; return a summary.

    `start` is the previous fine-tune's output, used when cfg.init is previous (else the base model,
    with a fresh adapter for lora/qlora). `learning_rate` overrides cfg.learning_rate (the loop's
    decayed rate). train_loss is the mean over the steps this call ran (after a resume: since it).
    Weights load from safetensors only, unless `allow_pickle` (model.allow_pickle).
    """
    check_method(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.accelerate_config:
        return launch(base_model, examples, cfg, out, start, learning_rate, allow_pickle)
    from trl import SFTTrainer

    lr, previous, model, tokenizer, peft_config, work, resume, resumed_step = prepare(
        base_model, cfg, out, start, learning_rate, allow_pickle)
    trainer = SFTTrainer(model=model, args=sft_config(cfg, lr, work, run_name=f"{out.parent.name}/{out.name}"),
                         train_dataset=to_dataset(examples), processing_class=tokenizer, peft_config=peft_config)
    begin = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - begin

    output = out / ("model" if cfg.method == "full" else "adapter")
    save(trainer, output)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * cfg.epochs  # the whole schedule's
    tokens_run = tokens * (result.global_step - resumed_step) / max(trainer.state.max_steps, 1)  # this call's share
    if main_process():
        write_jsonl(out / "metrics.jsonl", trainer.state.log_history)
        shutil.rmtree(work, ignore_errors=True)
    log.info("fine-tuned (%s) on %d examples: loss %.3f, %d steps, %.0f s", cfg.method, len(examples),
             result.training_loss, result.global_step, seconds)
    return {
        "examples": len(examples),
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens_run / seconds, 1) if seconds else None,
        "method": cfg.method,
        "init": "previous" if previous else "base",
        "started_from": previous or base_model,
        "learning_rate": lr,
        "output": str(output),
        "resumed_from": resume,
        "processes": int(os.environ.get("WORLD_SIZE", 1)),  # training processes (accelerate launch: each one)
        "distributed": trainer.accelerator.distributed_type.value,  # NO, MULTI_CPU (DDP), MULTI_GPU, FSDP, DEEPSPEED
    }


def prepare(base_model: str, cfg: TrainerConfig, out: Path, start: str | None, learning_rate: float | None,
            allow_pickle: bool) -> tuple:
    """What a trainer (SFT or DPO) starts from: (learning rate, the previous output it continues or None, model,
    tokenizer, LoRA config, its checkpoint folder, the checkpoint to resume from or None, that checkpoint's step)."""
    lr = cfg.learning_rate if learning_rate is None else learning_rate
    previous = start if cfg.init == "previous" and start else None
    model, tokenizer, peft_config = load(base_model, cfg, previous, allow_pickle)
    work = out / "trainer"
    resume = last_checkpoint(work, prune=main_process())
    resumed_step = read_json(Path(resume) / "trainer_state.json")["global_step"] if resume else 0
    # TensorBoard's event files go beside the adapter, not in `work`, which is deleted after training
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")
    return lr, previous, model, tokenizer, peft_config, work, resume, resumed_step


def load(base_model: str, cfg: TrainerConfig, previous: str | None, allow_pickle: bool = False):
    """The model to train, its tokenizer, and the LoRA config for TRL to apply (None: nothing to add)."""
    import torch
    from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    safetensors = None if allow_pickle else True  # True: a folder or hub id with only pickles fails to load
    if cfg.method == "full":
        want(previous, "config.json", cfg)
        # fp32 weights on GPU too, with bf16 autocast: bf16 weights round away AdamW steps of ~1e-5.
        return (AutoModelForCausalLM.from_pretrained(previous or base_model, dtype=torch.float32,
                                                     use_safetensors=safetensors), tokenizer, None)
    want(previous, "adapter_config.json", cfg)
    quantization, device_map = None, None
    if cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16)
        device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}  # a 4-bit model is placed at load, one GPU a process
    dtype = torch.bfloat16 if on_gpu() else torch.float32  # float32 is the fast one on CPU
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, quantization_config=quantization,
                                                 device_map=device_map, use_safetensors=safetensors)
    if quantization is not None:  # TRL does not: norms to fp32, inputs that carry gradients
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if previous:
        return PeftModel.from_pretrained(model, previous, is_trainable=True), tokenizer, None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return model, tokenizer, lora


def want(previous: str | None, marker: str, cfg: TrainerConfig) -> None:
    """A previous output of another method (a model where an adapter is expected) cannot be continued."""
    if previous and not (Path(previous) / marker).is_file():
        raise ConfigError(f"trainer.init=previous: {previous} has no {marker}, so it is not the output of a "
                          f"trainer.method={cfg.method} fine-tune; was the method changed mid-run?")


def to_dataset(examples: list):
    """Kept completions as TRL prompt-completion conversations; an agent's examples (TokenExample) as the
    token ids it generated and read, with the loss only where it generated them (TRL's `assistant_masks`
    applies whatever `completion_only_loss` says: observations are never trained on)."""
    from datasets import Dataset

    if examples and hasattr(examples[0], "input_ids"):
        return Dataset.from_list([{"input_ids": k.input_ids, "assistant_masks": k.mask} for k in examples])
    return Dataset.from_list([
        {"prompt": k.messages, "completion": [{"role": "assistant", "content": k.completion}]} for k in examples
    ])


def sft_config(cfg: TrainerConfig, lr: float, work: Path, run_name: str | None = None):
    from trl import SFTConfig

    gpu = on_gpu()
    return SFTConfig(
        output_dir=str(work),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        **({"save_steps": cfg.save_steps} if cfg.save_steps else {}),  # else TRL's default, unused
        save_total_limit=2,  # the newest may be cut short by a kill; the one before it is whole
        report_to=list(cfg.report_to),
        run_name=run_name,  # W&B's run name, e.g. round_001/finetune
        max_length=cfg.max_length,
        completion_only_loss=cfg.completion_only_loss,
        packing=cfg.packing,
        padding_free=cfg.padding_free,
        gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
        bf16=gpu,
        use_cpu=not gpu,
        dataloader_num_workers=0,
        dataloader_pin_memory=gpu,
        disable_tqdm=False,
    )


def last_checkpoint(work: Path, prune: bool) -> str | None:
    """The newest whole checkpoint in `work`, or None. The trainer writes trainer_state.json last, so
    a checkpoint without a readable one was cut short: it is never resumed from, and `prune` deletes it."""
    whole = []
    for path in work.glob("checkpoint-*"):  # nothing when `work` does not exist
        match = CHECKPOINT.match(path.name)
        if not match or not path.is_dir():
            continue
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            whole.append((int(match.group(1)), path))
        except (OSError, ValueError):
            log.warning("ignoring %s: no complete trainer_state.json (cut short by a kill)", path)
            if prune:
                shutil.rmtree(path, ignore_errors=True)
    if not whole:
        return None
    step, path = max(whole)
    log.info("resuming the fine-tune from %s (step %d)", path, step)
    return str(path)


def save(trainer, folder: Path) -> None:
    """Save through the trainer, to a temporary folder renamed into place. Every process takes part:
    FSDP and ZeRO-3 gather the weights collectively; only the main one writes."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if main_process():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if main_process():
        sort_target_modules(tmp / "adapter_config.json")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)


def sort_target_modules(config: Path) -> None:
    """PEFT writes target_modules from a set, in an order that changes with the process's hash seed:
    sorted, equal adapters are equal files (the pool cache and the draw seeds hash them)."""
    if config.is_file() and isinstance((settings := read_json(config)).get("target_modules"), list):
        write_json(config, {**settings, "target_modules": sorted(settings["target_modules"])})


def on_gpu() -> bool:
    """Whether training runs on CUDA: there is a GPU and accelerate was not told to use the CPU (cpu.yaml)."""
    import torch
    from accelerate.utils import parse_flag_from_env

    return torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")


def main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"  # set by accelerate's multi-process launchers; absent: one process


def launch(base_model: str, examples: list[KeptExample], cfg: TrainerConfig, out: Path, start: str | None,
           learning_rate: float | None, allow_pickle: bool) -> dict:
    """Run this fine-tune under `accelerate launch --config_file cfg.accelerate_config` and return the
    summary the child wrote. The job files stay in `out` when it fails, to rerun it by hand."""
    job = out / "job.json"
    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    settings = {**dataclasses.asdict(cfg), "accelerate_config": None, "target_modules": targets}
    write_jsonl(out / "examples.jsonl", examples)
    write_json(job, {"base_model": base_model, "trainer": settings, "start": start, "learning_rate": learning_rate,
                     "allow_pickle": allow_pickle, "tokens": bool(examples) and hasattr(examples[0], "input_ids")})
    (out / "summary.json").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    cmd, processes, asked = launcher(Path(cfg.accelerate_config), job, env)
    log.info("fine-tune via %s", " ".join(cmd))
    code, tail = run_passing_through(cmd, env)
    if code != 0 or not (out / "summary.json").is_file():
        raise RuntimeError(f"accelerate launch exited with {code}: {' '.join(cmd)}\n... {tail}")
    summary = read_json(out / "summary.json")
    if summary["processes"] != processes or asked in ("FSDP", "DEEPSPEED") and summary["distributed"] != asked:
        raise RuntimeError(f"{cfg.accelerate_config} asks for {processes} processes ({asked}), but "
                           f"{summary['processes']} trained ({summary['distributed']}): {' '.join(cmd)}")
    for name in ("job.json", "examples.jsonl", "summary.json"):
        (out / name).unlink()
    return summary


def launcher(config_file: Path, job: Path, env: dict) -> tuple[list[str], int, str]:
    """The command that runs `python -m rest_loop.finetune job` as the accelerate config asks, how many
    processes it starts, and the config's distributed_type. accelerate launch starts several CPU processes (MULTI_CPU) only through mpirun and
    a hostfile; without one its simple launcher starts one process and ignores num_processes. Those are
    started here with torchrun, the launcher accelerate itself uses for GPUs (gloo between CPU processes),
    each with an equal share of the cores unless OMP_NUM_THREADS is set."""
    settings = launch_settings(config_file)
    kind = settings.distributed_type.value
    processes = settings.num_processes if kind != "NO" else 1
    hostfile = (settings.mpirun_config or {}).get("mpirun_hostfile")
    if kind == "MULTI_CPU" and not hostfile:
        env.update(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS")
                   or str(max(1, len(os.sched_getaffinity(0)) // settings.num_processes)))
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(settings.num_processes), "-m", "rest_loop.finetune", str(job)], processes, kind
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), "--quiet",
            "-m", "rest_loop.finetune", str(job)], processes, kind  # quiet: the child's traceback, not the launcher's


def run_passing_through(cmd: list[str], env: dict) -> tuple[int, str]:
    """Run `cmd`, passing its output on to our stderr as it comes (the progress bar stays live),
    and return its exit code and the tail of its output."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    decoder, tail = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
    for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):  # read1: what is there, not a full buffer
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        tail = (tail + text)[-8000:]
    return proc.wait(), tail


def main() -> None:
    """The child of `launch`: read the job, fine-tune, and (main process) write out/summary.json."""
    job_file = Path(sys.argv[1])
    job, out = read_json(job_file), job_file.parent
    from rest_loop.agent.records import TokenExample

    examples = read_jsonl(out / "examples.jsonl", TokenExample if job.get("tokens") else KeptExample)
    summary = finetune(job["base_model"], examples, TrainerConfig(**job["trainer"]), out, start=job["start"],
                       learning_rate=job["learning_rate"], allow_pickle=job["allow_pickle"])
    if main_process():
        write_json(out / "summary.json", summary)


if __name__ == "__main__":
    main()

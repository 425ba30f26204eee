"""Fine-tuning with the real TRL trainer on the tiny model: LoRA and full, the init choice, packing,
the learning-rate override, resuming a fine-tune cut short, settings stopped before they run, and
training under `accelerate launch` in a fresh Python process (~12 s; its failure path is marked slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import SFTTrainer

from rest_loop.config import ConfigError, TrainerConfig
from rest_loop.finetune import check_method, finetune, last_checkpoint, sft_config
from rest_loop.records import KeptExample
from rest_loop.resources import SHIPPED

ACCELERATE = SHIPPED / "launch"  # accelerate launch configs: not a Hydra group, so not under conf/
SUMMARY_KEYS = {"examples", "train_loss", "steps", "seconds", "tokens_per_s", "method", "init", "started_from",
                "learning_rate", "output", "resumed_from", "processes",
                "distributed"}


def examples(n: int = 8) -> list[KeptExample]:
    return [KeptExample(round=1, prompt_id=f"{a}+{a}", sample_idx=0,
                        messages=[{"role": "user", "content": f"What is {a} + {a}?"}],
                        completion=str(2 * a), score=1.0, policy="base", seed=0, reward="numeric_match")
            for a in range(10, 10 + n)]


def small(**changes) -> TrainerConfig:
    """A fine-tune of a few steps: 8 examples, 1 epoch, a log line every step."""
    return TrainerConfig(**{"epochs": 1, "batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "lora_r": 4,
                            "lora_alpha": 8, **changes})


def lora_b(adapter: Path) -> torch.Tensor:
    weights = load_file(adapter / "adapter_model.safetensors")
    return torch.cat([w.flatten() for k, w in sorted(weights.items()) if "lora_B" in k])


def weights(model: str | Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(model).state_dict().items()}


def logged(out: Path, key: str) -> list:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in rows if key in row]


def test_base_and_previous_inits(tiny_model, tmp_path):
    cfg = TrainerConfig(epochs=2, batch_size=4, learning_rate=1e-2, logging_steps=1, lora_r=4, lora_alpha=8)
    first = finetune(tiny_model, examples(), cfg, tmp_path / "r1")
    adapter = tmp_path / "r1" / "adapter"
    assert (adapter / "adapter_config.json").exists()
    assert first["init"] == "base" and first["examples"] == 8 and first["steps"] == 4
    assert set(first) == SUMMARY_KEYS and first["method"] == "lora" and first["output"] == str(adapter)
    assert first["resumed_from"] is None and not (tmp_path / "r1" / "trainer").exists()
    assert (tmp_path / "r1" / "metrics.jsonl").read_text().count("loss") >= 4
    trained = lora_b(adapter)
    assert trained.abs().sum() > 0  # LoRA B starts at zero; training moved it

    # init=previous with a negligible learning rate ends where the previous adapter was ...
    still = TrainerConfig(**{**cfg.__dict__, "init": "previous", "learning_rate": 1e-12})
    second = finetune(tiny_model, examples(), still, tmp_path / "r2", start=str(adapter))
    assert second["init"] == "previous" and second["started_from"] == str(adapter)
    assert torch.allclose(lora_b(tmp_path / "r2" / "adapter"), trained, atol=1e-6)

    # ... while init=base ignores it and starts from a fresh adapter (B = 0).
    fresh = TrainerConfig(**{**cfg.__dict__, "init": "base", "learning_rate": 1e-12})
    third = finetune(tiny_model, examples(), fresh, tmp_path / "r3", start=str(adapter))
    assert third["init"] == "base" and third["started_from"] == tiny_model
    assert lora_b(tmp_path / "r3" / "adapter").abs().max() < 1e-6
    assert not list(tmp_path.rglob(".adapter.tmp"))


def test_full_finetune_saves_a_model_and_continues_from_it(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    first = finetune(tiny_model, examples(), small(method="full", learning_rate=1e-3), tmp_path / "r1")
    model = tmp_path / "r1" / "model"
    assert first["method"] == "full" and first["output"] == str(model) and first["steps"] == 2
    assert (model / "model.safetensors").exists() and not (model / "adapter_config.json").exists()
    assert AutoTokenizer.from_pretrained(model).chat_template  # a folder vLLM can load by itself
    base, trained = weights(tiny_model), weights(model)
    assert base.keys() == trained.keys()
    assert all(not torch.equal(base[k], trained[k]) for k in base if k.endswith("proj.weight"))  # every layer trains

    # init=previous loads that model as the starting point; at a negligible rate it stays where it was.
    still = small(method="full", init="previous", learning_rate=1e-12)
    second = finetune(tiny_model, examples(), still, tmp_path / "r2", start=str(model))
    assert second["init"] == "previous" and second["started_from"] == str(model)
    again = weights(tmp_path / "r2" / "model")
    assert all(torch.allclose(again[k], trained[k], atol=1e-6) for k in trained)
    assert not list(tmp_path.rglob(".model.tmp"))


def test_the_learning_rate_override_is_what_the_trainer_used(tiny_model, tmp_path):
    summary = finetune(tiny_model, examples(), small(batch_size=2), tmp_path, learning_rate=3e-3)
    assert summary["learning_rate"] == 3e-3 and summary["steps"] == 4
    # Cosine from the override down: step s logs the rate it stepped with, lr * (1 + cos(pi (s-1) / N)) / 2.
    want = [3e-3 * (1 + math.cos(math.pi * s / 4)) / 2 for s in range(4)]
    assert logged(tmp_path, "learning_rate") == pytest.approx(want, rel=1e-6)


def test_packing_trains_and_keeps_examples_apart(tiny_model, tmp_path):
    """Packed into one row, the 8 examples see exactly the loss they see as a padded batch of 8: the
    attention mask that transformers builds from the restarting position ids keeps them apart on CPU."""
    packed = finetune(tiny_model, examples(), small(packing=True), tmp_path / "packed")
    assert packed["steps"] > 0 and math.isfinite(packed["train_loss"])
    assert lora_b(tmp_path / "packed" / "adapter").abs().sum() > 0
    padded = finetune(tiny_model, examples(), small(batch_size=8), tmp_path / "padded")
    assert packed["steps"] == padded["steps"] == 1  # 8 short examples fill one row of max_length 512
    assert packed["train_loss"] == pytest.approx(padded["train_loss"], rel=1e-5)


@pytest.mark.parametrize("changes,expected", [
    ({}, {"completion_only_loss": True, "packing": False, "padding_free": False, "gradient_checkpointing": False,
          "gradient_accumulation_steps": 1, "save_strategy": "no"}),
    ({"completion_only_loss": False, "packing": True, "padding_free": True, "gradient_checkpointing": True,
      "grad_accum": 4, "save_steps": 3}, {"completion_only_loss": False, "packing": True, "padding_free": True,
                                          "gradient_checkpointing": True, "gradient_accumulation_steps": 4,
                                          "save_strategy": "steps", "save_steps": 3}),
])
def test_trainer_settings_reach_trl(changes, expected, tmp_path):
    args = sft_config(small(**changes), 1e-3, tmp_path)
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.learning_rate == 1e-3 and args.disable_tqdm is False and args.report_to == ["tensorboard"]


def test_training_curves_go_to_tensorboard_beside_the_adapter(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    finetune(tiny_model, examples(), small(), tmp_path)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and not (tmp_path / "trainer").exists()
    curves = EventAccumulator(str(events[0])).Reload()
    losses = [e.value for e in curves.Scalars("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)  # 8 examples, batch 4, a log every step


@pytest.mark.parametrize("report_to,message", [
    (["wandb"], "trainer.report_to: wandb needs the wandb package"),
    (["comet"], "trainer.report_to: 'comet' is not one of tensorboard, wandb"),
])
def test_a_tracker_that_cannot_work_stops_before_anything_runs(report_to, message):
    with pytest.raises(ConfigError, match=message):
        check_method(small(report_to=report_to))


def test_gradient_checkpointing_with_accumulation_trains(tiny_model, tmp_path):
    cfg = small(batch_size=2, grad_accum=2, gradient_checkpointing=True, completion_only_loss=False)
    summary = finetune(tiny_model, examples(), cfg, tmp_path)
    assert summary["steps"] == 2 and math.isfinite(summary["train_loss"])  # 8 examples / (2 x 2) a step
    assert lora_b(tmp_path / "adapter").abs().sum() > 0


def test_a_fine_tune_cut_short_resumes_from_its_last_whole_checkpoint(tiny_model, tmp_path, monkeypatch):
    cfg = small(batch_size=2, save_steps=2)  # 4 steps, checkpoints at 2 and 4
    whole = finetune(tiny_model, examples(), cfg, tmp_path / "whole")

    # Cut short while saving checkpoint-4: after its weights and optimizer, before its trainer_state.json.
    save_rng_state = SFTTrainer._save_rng_state

    def dies_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise RuntimeError("killed mid-checkpoint")
        return save_rng_state(self, output_dir)

    monkeypatch.setattr(SFTTrainer, "_save_rng_state", dies_at_step_4)
    with pytest.raises(RuntimeError, match="killed mid-checkpoint"):
        finetune(tiny_model, examples(), cfg, tmp_path / "cut")
    monkeypatch.undo()
    work = tmp_path / "cut" / "trainer"
    assert (work / "checkpoint-4" / "optimizer.pt").exists()
    assert not (work / "checkpoint-4" / "trainer_state.json").exists()
    assert not (tmp_path / "cut" / "adapter").exists()

    resumed = finetune(tiny_model, examples(), cfg, tmp_path / "cut")
    assert resumed["resumed_from"] == str(work / "checkpoint-2")  # checkpoint-4 is not trusted
    assert resumed["steps"] == whole["steps"] == 4
    assert torch.equal(lora_b(tmp_path / "cut" / "adapter"), lora_b(tmp_path / "whole" / "adapter"))
    assert logged(tmp_path / "cut", "loss") == logged(tmp_path / "whole", "loss")  # the whole history, unchanged
    assert not work.exists()


def test_only_checkpoints_with_a_trainer_state_are_trusted(tmp_path):
    for step, state in [(2, "{}"), (4, "{}"), (6, None), (8, '{"global_st')]:  # 6: none yet; 8: half written
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path, prune=False) == str(tmp_path / "checkpoint-4")
    assert (tmp_path / "checkpoint-8").exists()
    assert last_checkpoint(tmp_path, prune=True) == str(tmp_path / "checkpoint-4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert last_checkpoint(tmp_path / "none", prune=True) is None


@pytest.mark.parametrize("changes,message", [
    ({"padding_free": True}, "trainer.padding_free=true: needs trainer.packing=true"),
    ({"accelerate_config": "/no/such.yaml"}, "trainer.accelerate_config=/no/such.yaml: no such file"),
])
def test_settings_that_cannot_work_stop_before_training(changes, message, tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=message):
        check_method(small(**changes))
    with pytest.raises(ConfigError, match=message):
        finetune(tiny_model, examples(), small(**changes), tmp_path)
    assert not (tmp_path / "trainer").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="QLoRA can run here")
def test_qlora_without_a_gpu_stops_naming_the_setting(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="trainer.method=qlora: needs a CUDA GPU"):
        check_method(small(method="qlora"))
    with pytest.raises(ConfigError, match="trainer.method=qlora"):
        finetune(tiny_model, examples(), small(method="qlora"), tmp_path)
    check_method(small(method="lora"))
    check_method(small(method="full"))


def test_previous_output_of_another_method_is_refused(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="trainer.init=previous: .* has no adapter_config.json"):
        finetune(tiny_model, examples(), small(init="previous"), tmp_path, start=tiny_model)


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)).distributed_type.value for p in ACCELERATE.glob("*.yaml")}
    assert kinds == {"cpu": "NO", "ddp_cpu": "MULTI_CPU", "ddp": "MULTI_GPU", "fsdp": "FSDP",
                     "deepspeed_zero2": "DEEPSPEED"}
    assert all(p.read_text().startswith("# ") for p in ACCELERATE.glob("*.yaml"))  # each says what it is for


def test_accelerate_launch_trains_in_a_subprocess(tiny_model, tmp_path):
    cfg = small(accelerate_config=str(ACCELERATE / "cpu.yaml"))
    summary = finetune(tiny_model, examples(), cfg, tmp_path, learning_rate=5e-3)
    assert set(summary) == SUMMARY_KEYS
    assert summary["steps"] == 2 and summary["learning_rate"] == 5e-3 and math.isfinite(summary["train_loss"])
    assert summary["output"] == str(tmp_path / "adapter") and lora_b(tmp_path / "adapter").abs().sum() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "metrics.jsonl", "tensorboard"]  # job files cleaned up


@pytest.mark.slow
def test_accelerate_launch_failure_raises_with_the_childs_error(tmp_path):
    cfg = small(accelerate_config=str(ACCELERATE / "cpu.yaml"))
    with pytest.raises(RuntimeError, match="accelerate launch exited with 1(.|\n)*no-such-model"):
        finetune(str(tmp_path / "no-such-model"), examples(), cfg, tmp_path / "out")
    assert (tmp_path / "out" / "job.json").exists()  # kept, to rerun it by hand


@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU")
def test_qlora_trains_an_adapter_on_a_4bit_base(tiny_model, tmp_path):
    pytest.importorskip("bitsandbytes")
    summary = finetune(tiny_model, examples(), small(method="qlora"), tmp_path)
    assert summary["method"] == "qlora" and summary["steps"] == 2 and math.isfinite(summary["train_loss"])
    assert lora_b(tmp_path / "adapter").abs().sum() > 0

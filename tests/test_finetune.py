"""Fine-tuning with the real TRL trainer on the tiny model: adapters, metrics and the init choice."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from rest_loop.config import TrainerConfig
from rest_loop.finetune import finetune
from rest_loop.records import KeptExample


def examples(n: int = 8) -> list[KeptExample]:
    return [KeptExample(round=1, prompt_id=f"{a}+{a}", sample_idx=0,
                        messages=[{"role": "user", "content": f"What is {a} + {a}?"}],
                        completion=str(2 * a), score=1.0, policy="base", seed=0, reward="numeric_match")
            for a in range(10, 10 + n)]


def lora_b(adapter: Path) -> torch.Tensor:
    weights = load_file(adapter / "adapter_model.safetensors")
    return torch.cat([w.flatten() for k, w in sorted(weights.items()) if "lora_B" in k])


def test_base_and_previous_inits(tiny_model, tmp_path):
    cfg = TrainerConfig(epochs=2, batch_size=4, learning_rate=1e-2, logging_steps=1, lora_r=4, lora_alpha=8)
    first = finetune(tiny_model, examples(), cfg, tmp_path / "r1")
    adapter = tmp_path / "r1" / "adapter"
    assert (adapter / "adapter_config.json").exists()
    assert first["init"] == "base" and first["examples"] == 8 and first["steps"] == 4
    assert (tmp_path / "r1" / "metrics.jsonl").read_text().count("loss") >= 4
    trained = lora_b(adapter)
    assert trained.abs().sum() > 0  # LoRA B starts at zero; training moved it

    # init=previous with a negligible learning rate ends where the previous adapter was ...
    still = TrainerConfig(**{**cfg.__dict__, "init": "previous", "learning_rate": 1e-12})
    second = finetune(tiny_model, examples(), still, tmp_path / "r2", previous_adapter=str(adapter))
    assert second["init"] == "previous" and second["started_from"] == str(adapter)
    assert torch.allclose(lora_b(tmp_path / "r2" / "adapter"), trained, atol=1e-6)

    # ... while init=base ignores it and starts from a fresh adapter (B = 0).
    fresh = TrainerConfig(**{**cfg.__dict__, "init": "base", "learning_rate": 1e-12})
    third = finetune(tiny_model, examples(), fresh, tmp_path / "r3", previous_adapter=str(adapter))
    assert third["init"] == "base"
    assert lora_b(tmp_path / "r3" / "adapter").abs().max() < 1e-6
    assert not list(tmp_path.rglob(".adapter.tmp"))

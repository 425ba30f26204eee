"""Shared fixtures: the real config, the embedded model, and a tiny model made on the fly.

The tiny model is a 2-layer Llama with the SmolLM2 tokenizer and random weights:
it runs the real vLLM engine and the real TRL trainer in seconds, which is what
the mechanics tests need. Quality claims use the embedded SmolLM2-135M.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rest_loop.__main__ import CONF
from rest_loop.config import PROJECT_ROOT
from rest_loop.models import resolve_model

CACHE = Path(os.environ.get("REST_LOOP_CACHE", "~/.cache/rest_loop")).expanduser()
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]


def compose_config(*overrides: str, run_dir: str = "/tmp/rest-loop-test-run"):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.run_dir={run_dir}"])


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted once per machine, ~1 min)."""
    return resolve_model("embedded:smollm2-135m-instruct", CACHE / "models")


@pytest.fixture(scope="session")
def tiny_model(smollm2, tmp_path_factory) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    for name in TOKENIZER_FILES:
        if (Path(smollm2) / name).exists():
            shutil.copy(Path(smollm2) / name, out / name)
    config = LlamaConfig(vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return str(out)


@pytest.fixture
def prompts_dir() -> str:
    return str(PROJECT_ROOT / "prompts")

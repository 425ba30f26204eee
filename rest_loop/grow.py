"""Grow: sample n completions per training prompt from the current policy."""

from __future__ import annotations

from dataclasses import asdict

from rest_loop.config import SamplerConfig
from rest_loop.engine import Engine, Policy
from rest_loop.records import Prompt, Sample


def sampling_params(sampler: SamplerConfig) -> dict:
    return asdict(sampler)  # n, temperature, top_p, top_k, max_tokens: vLLM's own names


def grow(engine: Engine, policy: Policy, prompts: list[Prompt], sampler: SamplerConfig, round: int) -> list[Sample]:
    params = sampling_params(sampler)
    texts = [engine.chat_prompt(p.messages) for p in prompts]
    completions = engine.generate(texts, params, policy)
    return [
        Sample(round=round, prompt_id=p.id, sample_idx=i, text=c.text, num_tokens=len(c.token_ids),
               policy=policy.name, seed=engine.seed, sampling=params, finish_reason=c.finish_reason)
        for p, cs in zip(prompts, completions)
        for i, c in enumerate(cs)
    ]

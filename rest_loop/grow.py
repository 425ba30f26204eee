"""Grow: sample n completions per training prompt from the current policy.

Each pool is drawn from a seed derived from its inputs (the weights, prompts, sampling parameters
and engine seed), so it is the same whatever the engine drew before: alone, after a killed run's
resume, or as a sweep's second member. With a pool cache (`rest_loop.pools`), a pool whose inputs
were drawn before is read back instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from rest_loop.config import SamplerConfig
from rest_loop.engine import Engine, Policy
from rest_loop.pools import Pools, folder_digest, pool_key
from rest_loop.records import Prompt, Sample


def sampling_params(sampler: SamplerConfig) -> dict:
    return asdict(sampler)  # n, temperature, top_p, top_k, max_tokens: vLLM's own names


def grow(engine: Engine, policy: Policy, prompts: list[Prompt], sampler: SamplerConfig, round: int,
         pools: Pools | None = None) -> list[Sample]:
    params = sampling_params(sampler)
    texts = [engine.chat_prompt(p.messages) for p in prompts]
    inputs = pool_inputs(engine, policy, prompts, texts, params)

    def generate() -> list[Sample]:
        completions = engine.generate(texts, params, policy, seed=int(pool_key(inputs)[:8], 16))
        return [
            Sample(round=round, prompt_id=p.id, sample_idx=i, text=c.text, num_tokens=len(c.token_ids),
                   policy=policy.name, seed=engine.seed, sampling=params, finish_reason=c.finish_reason)
            for p, cs in zip(prompts, completions)
            for i, c in enumerate(cs)
        ]

    if pools is None:
        return generate()
    return pools.fetch(inputs, generate, round, policy.name)


def pool_inputs(engine: Engine, policy: Policy, prompts: list[Prompt], texts: list[str], params: dict) -> dict:
    """Everything that decides a pool's samples, for its cache key (names and rounds do not)."""
    rendered = json.dumps([[p.id, t] for p, t in zip(prompts, texts)], ensure_ascii=False)
    return {
        "weights": folder_digest(engine.path),  # the base, or a fully fine-tuned model
        "adapter": folder_digest(policy.adapter) if policy.adapter else None,
        "engine": engine.identity,
        "seed": engine.seed,
        "prompts": hashlib.sha256(rendered.encode()).hexdigest(),
        "num_prompts": len(prompts),
        "sampling": params,
    }

"""Agent Grow with the pool cache, and what Improve and fine-tuning make of trajectories.

    trajectories = grow(engine, policy, env, fmt, prompts, sampler, round, pools)
    answers      = [answer_sample(t) for t in trajectories]   # what outcome rewards score
    examples     = training_examples(kept, mode="step")       # token ids, masks and lineage

A pool of trajectories is keyed like Grow's pools (weights, adapter, engine, seed, sampling) plus the
rendered prompt ids, the environment's identity (its tools, their versions, the corpus digest) and
the action format, so a sweep over filter settings rolls out once, and a changed tool or corpus
rolls out again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from rest_loop.agent.actions import Format
from rest_loop.agent.env import Environment
from rest_loop.agent.records import TokenExample, Trajectory
from rest_loop.agent.rollout import Renderer, rollout, step_params
from rest_loop.config import SamplerConfig
from rest_loop.engine import Engine, Policy
from rest_loop.pools import Pools, folder_digest, pool_key
from rest_loop.records import Prompt, Sample


def grow(engine: Engine, policy: Policy, env: Environment, fmt: Format, prompts: list[Prompt],
         sampler: SamplerConfig, round: int, pools: Pools | None = None, use_tqdm: bool = True) -> list[Trajectory]:
    renderer = Renderer(engine.tokenizer, fmt, env.specs())
    rendered = [[p.id, renderer.prompt_ids(p)] for p in prompts]
    inputs = {
        "weights": folder_digest(engine.path),
        "adapter": folder_digest(policy.adapter) if policy.adapter else None,
        "engine": engine.identity,
        "seed": engine.seed,
        "prompts": hashlib.sha256(json.dumps(rendered).encode()).hexdigest(),
        "num_prompts": len(prompts),
        "n": sampler.n,
        "sampling": step_params(sampler, fmt, env.specs()),
        "env": env.identity(),
        "format": fmt.version(),
        "kind": "trajectories",
    }

    def make() -> list[Trajectory]:
        return rollout(engine, policy, env, fmt, prompts, sampler.n, sampler, round,
                       seed=int(pool_key(inputs)[:8], 16), use_tqdm=use_tqdm)

    if pools is None:
        return make()
    return pools.fetch(inputs, make, round, policy.name, cls=Trajectory)


@dataclass
class TrajectorySample(Sample):
    """A trajectory as a reward term sees it: `text` is its final answer ("" when it never gave one), what
    outcome verifiers score; `trajectory` is the whole of it, what a trajectory judge reads."""

    trajectory: Trajectory | None = None


def answer_sample(t: Trajectory) -> TrajectorySample:
    return TrajectorySample(round=t.round, prompt_id=t.prompt_id, sample_idx=t.sample_idx, text=t.answer or "",
                            num_tokens=t.num_tokens, policy=t.policy, seed=t.seed, sampling=t.sampling,
                            finish_reason=t.stop, trajectory=t)


def training_examples(kept: list[tuple[Trajectory, float | None]], mode: str, reward: str, step: int = 1,
                      max_length: int | None = None) -> list[TokenExample]:
    """Fine-tuning examples from kept trajectories, as the exact tokens of the rollout.

    mode "step": one example per agent turn, the history so far (observations included) as the prompt;
    "trajectory": one example per trajectory, the loss on every agent turn and none on observations.
    An unparsed turn is never a target (it taught nothing but a format error)."""
    out = []
    for t, score in kept:
        lineage = dict(round=t.round, prompt_id=t.prompt_id, sample_idx=t.sample_idx, score=score, policy=t.policy,
                       seed=t.seed, reward=reward, step=step)
        if mode == "trajectory":
            ids, mask = t.ids()
            out.append(TokenExample(turn=None, input_ids=ids, mask=mask, **lineage))
            continue
        for k, s in enumerate(t.steps):
            if s.parse == "ok":
                history = t.history(k)
                out.append(TokenExample(turn=k, input_ids=history + s.token_ids,
                                        mask=[0] * len(history) + [1] * len(s.token_ids), **lineage))
    if max_length:
        too_long = [e for e in out if len(e.input_ids) > max_length]
        if too_long:
            raise ValueError(f"{len(too_long)} agent examples are longer than trainer.max_length={max_length} "
                             f"(longest {max(len(e.input_ids) for e in too_long)} tokens): raise trainer.max_length, "
                             "since cutting them would drop the turns they train on")
    return out


def trajectory_row(t: Trajectory, **extra) -> dict:
    """A trajectory as a JSONL row, with scores beside it (the eval's completions file)."""
    return {**asdict(t), **extra}

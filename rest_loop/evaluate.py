"""Evaluate a policy on held-out prompts with greedy decoding.

The metric is verifier accuracy where the task has references, otherwise the mean
score of the reward. Completions are kept in `eval/completions.jsonl` so a number
can always be traced to the text behind it.
"""

from __future__ import annotations

from pathlib import Path

from rest_loop.config import SamplerConfig
from rest_loop.engine import Engine, Policy
from rest_loop.grow import grow
from rest_loop.improve.rewards import Reward
from rest_loop.improve.verifiers import NumericMatch
from rest_loop.records import Prompt
from rest_loop.store import write_jsonl


def evaluate(engine: Engine, policy: Policy, prompts: list[Prompt], reward: Reward, max_tokens: int,
             round: int, out: Path) -> dict:
    samples = grow(engine, policy, prompts, SamplerConfig(n=1, temperature=0.0, max_tokens=max_tokens), round)
    if all(p.reference is not None for p in prompts):
        metric_name, results = "accuracy", NumericMatch()(prompts, samples)
    else:
        metric_name, results = "mean_reward", reward({p.id: p for p in prompts}, samples)
    rows = [{"prompt_id": s.prompt_id, "text": s.text, "score": r.score, "status": r.status}
            for s, r in zip(samples, results)]
    write_jsonl(out / "completions.jsonl", rows)
    scores = [r.score for r in results if r.status == "ok"]  # unscored samples count in "n", not in the mean
    return {
        "round": round,
        "policy": policy.name,
        "metric": metric_name,
        "value": sum(scores) / len(scores) if scores else None,
        "n": len(prompts),
        "scored": len(scores),
        "mean_tokens": sum(s.num_tokens for s in samples) / len(samples),
    }

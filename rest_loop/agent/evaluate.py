"""Held-out evaluation of an agent: one greedy trajectory per question, plus pass@k trajectories if asked.

The primary number ("value") is the task's metric on the final answers (e.g. exact match after
normalisation, with aliases). Beside it: token F1, mean steps, the valid-action rate (turns whose
action parsed), the tool-error rate (tool calls that failed), how the trajectories stopped, and
retrieval recall where the task names gold supporting documents (the share of them that a search
observation showed). Greedy trajectories go to `completions.jsonl`, pass@k ones to `samples.jsonl`,
each with its score.
"""

from __future__ import annotations

import re
from pathlib import Path

from rest_loop.agent.actions import Format
from rest_loop.agent.env import Environment
from rest_loop.agent.grow import answer_sample, grow, trajectory_row
from rest_loop.agent.rollout import describe
from rest_loop.config import EvalConfig, SamplerConfig
from rest_loop.engine import Engine, Policy
from rest_loop.evaluate import mean_ok, scorer_name
from rest_loop.improve.answers import AnswerF1
from rest_loop.metrics import default_ks, diversity, pass_at
from rest_loop.pools import Pools
from rest_loop.records import Prompt
from rest_loop.store import write_jsonl

DOC_ID = re.compile(r"^\[([^\]\n]+)\]", re.MULTILINE)  # a search hit's line: "[doc_id] Title: snippet"


def evaluate(engine: Engine, policy: Policy, env: Environment, fmt: Format, prompts: list[Prompt], metric,
             cfg: EvalConfig, round: int, out: Path, pools: Pools | None = None) -> dict:
    if metric is None or any(p.reference is None for p in prompts):
        raise ValueError("agent evaluation needs the task's metric and a reference on every held-out question")
    by_id = {p.id: p for p in prompts}
    greedy = grow(engine, policy, env, fmt, prompts, SamplerConfig(n=1, temperature=0.0, max_tokens=cfg.max_tokens),
                  round, pools, use_tqdm=False)
    answers = [answer_sample(t) for t in greedy]
    results = metric([by_id[a.prompt_id] for a in answers], answers)
    f1 = AnswerF1()([by_id[a.prompt_id] for a in answers], answers)
    write_jsonl(out / "completions.jsonl", [trajectory_row(t, score=r.score, status=r.status, f1=g.score)
                                            for t, r, g in zip(greedy, results, f1)])
    value, scored = mean_ok(results)
    counts = describe(greedy)
    metrics = {
        "round": round,
        "policy": policy.name,
        "metric": getattr(metric, "label", "accuracy"),
        "metric_source": "task.metric",
        "scorer": scorer_name(metric),
        "value": value,
        "n": len(prompts),
        "scored": scored,
        "f1": mean_ok(f1)[0],
        "mean_steps": counts["mean_steps"],
        "valid_action_rate": counts["valid_action_rate"],
        "tool_error_rate": counts["tool_error_rate"],
        "stops": counts["stops"],
        "retrieval_recall": retrieval_recall(greedy, by_id),
        "mean_tokens": counts["tokens"] / len(greedy),
        **diversity([t.answer or "" for t in greedy]),
        "pass_at": None,
        "sampled": None,
        "notes": [],
    }
    if cfg.pass_k > 0:
        sampler = SamplerConfig(n=cfg.pass_k, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        sampled = grow(engine, policy, env, fmt, prompts, sampler, round, pools, use_tqdm=False)
        answers = [answer_sample(t) for t in sampled]
        scores = metric([by_id[a.prompt_id] for a in answers], answers)
        hits: dict[str, list[bool]] = {p.id: [] for p in prompts}
        for t, r in zip(sampled, scores):
            hits[t.prompt_id].append(r.status == "ok" and r.score >= 1.0)
        write_jsonl(out / "samples.jsonl", [trajectory_row(t, score=r.score, status=r.status)
                                            for t, r in zip(sampled, scores)])
        metrics["pass_at"] = pass_at(list(hits.values()), default_ks(cfg.pass_k))
        metrics["sampled"] = {**describe(sampled), "n_per_prompt": cfg.pass_k, "temperature": cfg.temperature}
    return metrics


def retrieval_recall(trajectories, by_id: dict[str, Prompt]) -> float | None:
    """Over questions with gold supporting documents: the mean share of them that the agent's searches
    showed it. None when the task names none, or the environment has no tool that lists document ids."""
    shares = []
    for t in trajectories:
        gold = set(by_id[t.prompt_id].support)
        if not gold:
            continue
        seen = {doc for s in t.steps if s.tool_status == "ok" and s.tool != "finish"
                for doc in DOC_ID.findall(s.observation or "")}
        shares.append(len(gold & seen) / len(gold))
    return sum(shares) / len(shares) if shares else None

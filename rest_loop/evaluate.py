"""Evaluate a policy on held-out prompts: one greedy completion each, plus pass@k samples if asked.

    metrics = evaluate(engine, policy, task.heldout, task.metric, reward, cfg.eval, round, out,
                       eval_reward=eval_reward)

The primary number ("value") is the first of these that applies:

    accuracy     the task's metric (a verifier) on every prompt; needs a reference on each, unless the
                 verifier says `needs_reference = False` (then its `label`, e.g. valid_json_rate)
    mean_reward  `eval_reward`, a held-out reward the policy was not trained on (e.g. a judge)
    mean_reward  the training reward itself, with a warning: a policy that learns to game
                 its reward raises this number too, so reward hacking cannot show in it

`metric_source` says which it was. With `cfg.pass_k > 0` and a task metric, pass_k
samples per prompt at `cfg.temperature` also give pass@1, 2, 4, ..., pass_k. Greedy
completions go to `completions.jsonl` and pass@k samples to `samples.jsonl`, each
with its score, so every number can be traced to the text behind it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rest_loop.config import EvalConfig, SamplerConfig
from rest_loop.engine import Engine, Policy
from rest_loop.grow import grow
from rest_loop.improve.rewards import Reward
from rest_loop.metrics import default_ks, diversity, pass_at
from rest_loop.pools import Pools
from rest_loop.records import Prompt, Sample
from rest_loop.store import write_jsonl

log = logging.getLogger(__name__)


def evaluate(engine: Engine, policy: Policy, prompts: list[Prompt], metric, reward: Reward | None, cfg: EvalConfig,
             round: int, out: Path, eval_reward: Reward | None = None, pools: Pools | None = None) -> dict:
    """Score `policy` on `prompts` and write its completions under `out`; return what goes in metrics.json.

    `metric` is the task's verifier (`verifier(prompts, samples) -> list[Result]`) or None;
    `reward` is the training reward, used only when nothing independent of it applies.
    `pools` caches the generated completions (an unchanged policy is not sampled twice).
    """
    if not prompts:
        raise ValueError("evaluate: no held-out prompts")
    by_id = {p.id: p for p in prompts}
    notes: list[str] = []
    greedy = grow(engine, policy, prompts, SamplerConfig(n=1, temperature=0.0, max_tokens=cfg.max_tokens), round,
                  pools)

    missing = sum(p.reference is None for p in prompts)
    needs_reference = getattr(metric, "needs_reference", True)
    use_metric = metric is not None and (missing == 0 or not needs_reference)
    if metric is not None and missing and needs_reference:
        notes.append(f"task metric {scorer_name(metric)} not used: {missing} of {len(prompts)} held-out prompts "
                     "have no reference")
    if use_metric:
        name, source, scorer = getattr(metric, "label", "accuracy"), "task.metric", metric
        results = metric([by_id[s.prompt_id] for s in greedy], greedy)
    elif eval_reward is not None:
        name, source, scorer = "mean_reward", "eval.reward", eval_reward
        results = eval_reward(by_id, greedy)
    elif reward is not None:
        name, source, scorer = "mean_reward", "training reward", reward
        results = reward(by_id, greedy)
        warning = (f"the held-out metric is the training reward {reward.name!r}: reward hacking cannot show in it; "
                   "give the task a metric with references, or set eval.reward to an independent reward")
        log.warning(warning)
        notes.append(warning)
    else:
        raise ValueError("evaluate: nothing to score held-out completions with: the task has no metric (or its "
                         "prompts lack references), and neither eval.reward nor a training reward was given")

    # an independent reward beside accuracy: the two disagreeing is itself a finding
    second = eval_reward(by_id, greedy) if use_metric and eval_reward is not None else None
    rows = [{"prompt_id": s.prompt_id, "text": s.text, "score": r.score, "status": r.status}
            for s, r in zip(greedy, results)]
    if second is not None:
        for row, r in zip(rows, second):
            row["eval_reward_score"], row["eval_reward_status"] = r.score, r.status
    write_jsonl(out / "completions.jsonl", rows)

    value, scored = mean_ok(results)
    texts = [s.text for s in greedy]
    metrics = {
        "round": round,
        "policy": policy.name,
        "metric": name,
        "metric_source": source,
        "scorer": scorer_name(scorer),
        "value": value,
        "n": len(prompts),
        "scored": scored,  # unscored samples count in "n", not in the mean
        "eval_reward": mean_ok(second)[0] if second is not None else None,
        "eval_reward_scorer": scorer_name(eval_reward) if second is not None else None,
        "mean_tokens": mean_tokens(greedy),
        **diversity(texts),  # distinct_1, distinct_2, mean_chars of the greedy completions
        "pass_at": None,
        "sampled": None,
        "notes": notes,
    }
    if isinstance(scorer, Reward) and len(scorer.last_stats) > 1:  # a composite reward: each term's held-out mean
        metrics["terms"] = {k: v.get("mean_score") for k, v in scorer.last_stats.items()}  # e.g. the valid-JSON rate
    if cfg.pass_k > 0 and use_metric:
        metrics.update(sample_pass_at(engine, policy, prompts, metric, cfg, round, out, notes, pools))
    elif cfg.pass_k > 0:
        notes.append(f"pass@k not computed (eval.pass_k={cfg.pass_k}): it needs the task's metric and a reference "
                     "on every held-out prompt, since a reward score is not a pass or a fail")
    return metrics


def sample_pass_at(engine: Engine, policy: Policy, prompts: list[Prompt], metric, cfg: EvalConfig, round: int,
                   out: Path, notes: list[str], pools: Pools | None = None) -> dict:
    """Draw pass_k samples per prompt, score each with the task metric, write them, and estimate pass@k.

    A sample counts as correct only with full marks (status ok, score 1.0): pass@k asks
    whether a sample solves the prompt, and partial credit does not.
    """
    by_id = {p.id: p for p in prompts}
    sampler = SamplerConfig(n=cfg.pass_k, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    samples = grow(engine, policy, prompts, sampler, round, pools)
    results = metric([by_id[s.prompt_id] for s in samples], samples)
    hits = [r.status == "ok" and r.score >= 1.0 for r in results]
    correct: dict[str, list[bool]] = {p.id: [] for p in prompts}
    for s, hit in zip(samples, hits):
        correct[s.prompt_id].append(hit)
    write_jsonl(out / "samples.jsonl", [
        {"prompt_id": s.prompt_id, "sample_idx": s.sample_idx, "text": s.text, "num_tokens": s.num_tokens,
         "score": r.score, "status": r.status, "correct": hit}
        for s, r, hit in zip(samples, results, hits)])
    unscored = sum(r.status != "ok" for r in results)
    if unscored:
        notes.append(f"pass@k: {unscored} of {len(samples)} samples could not be scored; they count as incorrect")
    if cfg.temperature == 0 and cfg.pass_k > 1:
        notes.append("pass@k: eval.temperature=0 draws the same greedy completion pass_k times, so pass@k = pass@1")
    n = min(len(cs) for cs in correct.values())  # vLLM returns pass_k per prompt; a short list would bound k
    return {
        "pass_at": pass_at(list(correct.values()), default_ks(n)),
        "sampled": {**diversity([s.text for s in samples]), "mean_tokens": mean_tokens(samples),
                    "n_per_prompt": n, "temperature": cfg.temperature},
    }


def mean_ok(results: list) -> tuple[float | None, int]:
    """Mean score over the results that could be judged, and how many those were."""
    scores = [r.score for r in results if r.status == "ok"]
    return (sum(scores) / len(scores) if scores else None), len(scores)


def mean_tokens(samples: list[Sample]) -> float:
    return sum(s.num_tokens for s in samples) / len(samples) if samples else 0.0


def scorer_name(scorer) -> str:
    """A reward's name and its terms' versions (which judge template scored it), or a verifier's name."""
    version = getattr(scorer, "version", None)
    name = getattr(scorer, "name", type(scorer).__name__)
    return f"{name} [{version}]" if version else name

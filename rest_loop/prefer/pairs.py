"""Chosen-vs-rejected pairs from a round's judged pool, as Self-Rewarding LMs (Yuan et al. 2024) build them.

Per prompt, only samples the reward scored (status ok) take part. `best_worst` pairs the highest-scored
sample with the lowest; `all` pairs every higher-scored sample with every lower one. A pair needs a score
gap of at least `min_gap` and never a tie (equal scores say nothing about which is better). At most
`max_per_prompt` pairs per prompt, the widest gaps first. Each stage's in and out counts go to stats.json.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rest_loop.config import PairsConfig
from rest_loop.records import Judgement, Sample


@dataclass
class PreferencePair:
    """One pair the DPO trainer sees, with the lineage of both samples."""

    round: int
    step: int
    prompt_id: str
    messages: list[dict[str, Any]]
    chosen: str
    rejected: str
    chosen_idx: int
    rejected_idx: int
    chosen_score: float
    rejected_score: float
    policy: str  # the policy that grew both samples
    reward: str  # the reward's version: which judge template and terms scored them
    seed: int = 0
    source: str = "pool"
    extra: dict[str, Any] = field(default_factory=dict)


def candidates(scored: list[tuple[Sample, Judgement]], strategy: str) -> list[tuple[tuple, tuple]]:
    """(chosen, rejected) of one prompt's scored samples, before the gap and the cap; ties are not pairs."""
    ranked = sorted(scored, key=lambda sj: (-sj[1].score, sj[0].sample_idx))  # equal scores: by sample index
    if strategy == "best_worst":
        best, worst = ranked[0], min(scored, key=lambda sj: (sj[1].score, sj[0].sample_idx))
        return [(best, worst)] if best[1].score > worst[1].score else []
    return [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:] if a[1].score > b[1].score]


def build_pairs(samples: list[Sample], judgements: list[Judgement], cfg: PairsConfig, prompts: dict,
                round: int, step: int, reward: str) -> tuple[list[PreferencePair], list[dict]]:
    """The pairs of a judged pool and each stage's counts (`[{"stage", "in", "out"}, ...]`, in pairs except
    the first, which counts samples)."""
    by_key = {(j.prompt_id, j.sample_idx): j for j in judgements}
    per_prompt: dict[str, list] = defaultdict(list)
    ok = 0
    for s in samples:
        j = by_key.get((s.prompt_id, s.sample_idx))
        if j is not None and j.status == "ok" and j.score is not None:
            per_prompt[s.prompt_id].append((s, j))
            ok += 1
    found = {pid: candidates(scored, cfg.strategy) for pid, scored in per_prompt.items()}
    n_found = sum(map(len, found.values()))
    wide = {pid: [p for p in ps if p[0][1].score - p[1][1].score >= cfg.min_gap] for pid, ps in found.items()}
    n_wide = sum(map(len, wide.values()))
    pairs = []
    for pid in sorted(wide):
        chosen = sorted(wide[pid], key=lambda p: -(p[0][1].score - p[1][1].score))[: cfg.max_per_prompt]
        pairs += [PreferencePair(round=round, step=step, prompt_id=pid, messages=prompts[pid].messages,
                                 chosen=c.text, rejected=r.text, chosen_idx=c.sample_idx, rejected_idx=r.sample_idx,
                                 chosen_score=cj.score, rejected_score=rj.score, policy=c.policy, reward=reward,
                                 seed=c.seed) for (c, cj), (r, rj) in chosen]
    stages = [{"stage": "scored (status ok)", "in": len(samples), "out": ok},
              {"stage": f"pairs ({cfg.strategy}, no ties)", "in": ok, "out": n_found},
              {"stage": f"min_gap {cfg.min_gap}", "in": n_found, "out": n_wide},
              {"stage": f"max_per_prompt {cfg.max_per_prompt}", "in": n_wide, "out": len(pairs)}]
    return pairs, stages

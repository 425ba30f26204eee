"""Combine reward terms built from config into one Judgement per sample.

    reward:
      name: verifier_judge
      terms:
        correct: {_target_: rest_loop.improve.verifiers.NumericMatch, weight: 1.0}
        judge:   {_target_: rest_loop.improve.judge.PointwiseJudge, weight: 0.5, template: judge/pointwise.j2, ...}

The score is the weighted mean of the terms' scores. If any weighted term could
not judge a sample, neither can the combination: its status passes through and
the sample gets no score.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rest_loop.records import Judgement, Prompt, Sample


class Reward:
    def __init__(self, name: str, terms: dict[str, tuple[Any, float]]):
        if not terms:
            raise ValueError(f"reward {name!r}: no term has a weight > 0")
        self.name, self.terms = name, terms

    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> "Reward":
        spec = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        terms = {}
        for key, term in spec.get("terms", {}).items():
            weight = float(term.pop("weight", 1.0))
            if weight < 0:
                raise ValueError(f"reward.terms.{key}.weight={weight}: must be >= 0")
            if weight > 0:  # a term with weight 0 is configured but off: do not pay for it
                terms[key] = (instantiate(term), weight)
        return cls(spec.get("name", "reward"), terms)

    @property
    def version(self) -> str:
        return "+".join(f"{k}:{getattr(t, 'version', t.name)}" for k, (t, _) in self.terms.items())

    def __call__(self, prompts: dict[str, Prompt], samples: list[Sample]) -> list[Judgement]:
        ps = [prompts[s.prompt_id] for s in samples]
        results = {key: term(ps, samples) for key, (term, _) in self.terms.items()}
        judgements = []
        for i, s in enumerate(samples):
            parts = {k: vars(results[k][i]) for k in self.terms}
            bad = [(k, r) for k, r in parts.items() if r["status"] != "ok"]
            if bad:
                key, r = bad[0]
                judgements.append(Judgement(s.prompt_id, s.sample_idx, None, r["status"], f"{key}: {r['reason']}", parts))
                continue
            total = sum(w for _, w in self.terms.values())
            score = sum(parts[k]["score"] * w for k, (_, w) in self.terms.items()) / total
            reason = "; ".join(f"{k}: {r['reason']}" for k, r in parts.items())
            judgements.append(Judgement(s.prompt_id, s.sample_idx, score, "ok", reason, parts))
        return judgements

"""Combine reward terms built from config into one Judgement per sample.

    reward:
      name: json_then_judge
      terms:
        valid: {_target_: rest_loop.improve.verifiers.JsonSchema, gate: 1.0, weight: 0, schema_file: ...}
        judge: {_target_: rest_loop.improve.judge.RationaleJudge, weight: 1.0, template: judge/rationale.j2, ...}

The score is the weighted sum of the terms' scores, with the weights normalised
to sum to 1 so that it stays in [0, 1]. A term with `gate: g` must score at least
g first: a sample that fails a gate scores 0.0 and the other terms are not asked
about it (no judge call is spent on invalid JSON). If a term could not judge a
sample, neither can the combination: its status passes through, with no score.

`retries` re-asks a retryable term (a judge that generates text) about the samples
it left unparsed or errored, up to that many times; the rest are dropped by the filter.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from rest_loop.config import ConfigError, build
from rest_loop.improve.verifiers import Result
from rest_loop.records import Judgement, Prompt, Sample


class Reward:
    def __init__(self, name: str, terms: dict[str, tuple[Any, float]], gates: dict[str, float] | None = None):
        self.name, self.terms, self.gates = name, terms, gates or {}
        if not any(w > 0 for _, w in terms.values()):
            raise ConfigError(f"reward {name!r}: no term has a weight > 0")
        # gates run first, so the other terms see only the samples that pass them
        self.order = [k for k in terms if k in self.gates] + [k for k in terms if k not in self.gates]
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> "Reward":
        spec = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        name = spec.get("name", "reward")
        terms, gates = {}, {}
        for key, term in spec.get("terms", {}).items():
            weight, gate = float(term.pop("weight", 1.0)), term.pop("gate", None)
            if weight < 0:
                raise ConfigError(f"reward.terms.{key}.weight={weight}: must be >= 0")
            if gate is not None:
                gates[key] = float(gate)
            if weight > 0 or gate is not None:  # a term with weight 0 and no gate is off: do not pay for it
                terms[key] = (build(term), weight)  # a ConfigError inside (a missing API key) stays one
        return cls(name, terms, gates)

    @property
    def version(self) -> str:
        return "+".join(f"{k}{'(gate)' if k in self.gates else ''}:{getattr(t, 'version', t.name)}"
                        for k, (t, _) in self.terms.items())

    def __call__(self, prompts: dict[str, Prompt], samples: list[Sample], retries: int = 0) -> list[Judgement]:
        ps = [prompts[s.prompt_id] for s in samples]
        parts: list[dict[str, dict]] = [{} for _ in samples]
        stopped: list[str | None] = [None] * len(samples)  # why a sample is out: a failed gate or no judgement
        self.last_stats = {}
        for key in self.order:
            term, _ = self.terms[key]
            idx = [i for i in range(len(samples)) if stopped[i] is None]
            results = self.ask(key, term, [ps[i] for i in idx], [samples[i] for i in idx], retries)
            for i, r in zip(idx, results):
                parts[i][key] = vars(r)
                if r.status != "ok":
                    stopped[i] = key
                elif key in self.gates and r.score < self.gates[key]:
                    stopped[i] = key
        return [self.combine(s, p, why) for s, p, why in zip(samples, parts, stopped)]

    def ask(self, key: str, term, ps: list[Prompt], ss: list[Sample], retries: int) -> list[Result]:
        backend = getattr(term, "backend", None)
        before = vars(backend.usage).copy() if backend else {}
        results = term(ps, ss) if ps else []
        retried = recovered = 0
        for attempt in range(1, retries + 1 if getattr(term, "retryable", False) else 1):
            redo = [i for i, r in enumerate(results) if r.status != "ok"]
            if not redo:
                break
            again = term([ps[i] for i in redo], [ss[i] for i in redo], attempt=attempt)
            retried += len(redo)
            for i, r in zip(redo, again):
                recovered += r.status == "ok"
                results[i] = Result(r.score, r.status, f"{r.reason} (attempt {attempt})", r.raw)
        ok = [r.score for r in results if r.status == "ok"]
        stats = {"asked": len(results), "ok": len(ok), "mean_score": sum(ok) / len(ok) if ok else None,
                 **(term.stats(results) if hasattr(term, "stats") else {})}
        if backend:  # what this call cost; the backend counts the whole process, for its budget
            stats["usage"] = {k: round(v - before[k], 3) for k, v in vars(backend.usage).items()}
        self.last_stats[key] = {**stats, "retried": retried, "recovered_by_retry": recovered} if retries else stats
        return results

    def combine(self, sample: Sample, parts: dict[str, dict], stopped: str | None) -> Judgement:
        if stopped is not None:
            r = parts[stopped]
            if r["status"] != "ok":
                return Judgement(sample.prompt_id, sample.sample_idx, None, r["status"], f"{stopped}: {r['reason']}",
                                 parts)
            return Judgement(sample.prompt_id, sample.sample_idx, 0.0, "ok",
                             f"gate {stopped} failed: {r['reason']}", parts)
        weighted = [(k, w) for k, (_, w) in self.terms.items() if w > 0]
        score = sum(parts[k]["score"] * w for k, w in weighted) / sum(w for _, w in weighted)
        reason = "; ".join(f"{k}: {r['reason']}" for k, r in parts.items())
        return Judgement(sample.prompt_id, sample.sample_idx, score, "ok", reason, parts)

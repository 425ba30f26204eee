"""The preference loop: the ReST loop of rest_loop/loop.py whose Improve makes pairs and whose fine-tune is DPO.

    round r:  samples = grow(policy, train prompts)                     n per prompt (Self-Rewarding: 4)
              judgements = reward(samples)                              improve/judgements.jsonl, as in ReST
              pairs = best vs worst per prompt, gap >= min_gap          improve/pairs.jsonl, stage counts in stats.json
              policy = DPO(start, pairs; reference)                     finetune/pairs.jsonl: what DPO saw
              evaluate(policy, held-out prompts)

`rest-loop trainer=dpo` selects it (trainer.objective=dpo). Grow, the judge, the pool cache, resume and
evaluation are the ReST loop's own.

Mixed rounds, `loop.improve_steps=2 trainer.step_objectives=[sft,dpo]`: step 1 filters the judged pool and
fine-tunes on the kept samples (SFT, as ReST), step 2 makes pairs of the same pool and trains that policy on
them with DPO, against it. Both are evaluated (`eval/`, `eval_2/`): SFT alone and SFT then DPO, one pool.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from omegaconf import DictConfig

from rest_loop.config import RunConfig
from rest_loop.engine import Policy
from rest_loop.improve.filters import NothingKept, histogram
from rest_loop.loop import Run, judge_cache
from rest_loop.prefer.pairs import PreferencePair, build_pairs
from rest_loop.prefer.train import check_dpo, dpo
from rest_loop.records import Judgement, Sample
from rest_loop.store import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


class PreferenceRun(Run):
    def __init__(self, cfg: RunConfig, raw: DictConfig):
        check_dpo(cfg.trainer)  # before the engine: a loss TRL refuses, original data that cannot be paired
        super().__init__(cfg, raw)

    def prefers(self, step: int) -> bool:
        return self.cfg.trainer.objective_at(step) == "dpo"

    def improve(self, r: int, step: int, samples: list[Sample]) -> list:
        if not self.prefers(step):
            return super().improve(r, step, samples)  # an SFT step of a mixed round: the filter's kept samples
        stage = self.stage(r, "improve", step)
        if not stage.done:
            judgements = self.judge(r, samples)
            pairs, stages = build_pairs(samples, judgements, self.cfg.trainer.pairs, self.prompts, r, step,
                                        self.reward.version)
            stats = pair_stats(judgements, stages, pairs)
            stats["reward_terms"] = read_json(self.stage(r, "improve") / "reward_terms.json")
            stats["judge_cache"] = judge_cache(stats["reward_terms"])
            write_json(stage / "stats.json", stats)
            if len(pairs) < self.cfg.filter.min_keep:
                left = ", ".join(f"{x['stage']} {x['out']}" for x in stages)
                raise NothingKept(
                    f"round {r}: {len(pairs)} preference pairs from {len(samples)} samples, fewer than "
                    f"filter.min_keep={self.cfg.filter.min_keep}. Judgement statuses: {stats['status']}; left after "
                    f"each stage: {left}. See {self.stage(r, 'improve') / 'judgements.jsonl'}. To go on with this pool: "
                    f"rest-loop resume={self.dir} trainer.pairs.min_gap=<smaller> (or trainer.pairs.strategy=all); "
                    "a new run can draw more samples per prompt (sampler.n)")
            write_jsonl(stage / "pairs.jsonl", pairs)
            stage.finish(pairs=len(pairs))
        self.manifest.stage_done(r, stage.path.name, read_json(stage / "stats.json"))
        return read_jsonl(stage / "pairs.jsonl", PreferencePair)

    def train_file(self, step: int) -> str:
        return "pairs.jsonl" if self.prefers(step) else super().train_file(step)

    def training_data(self, r: int, step: int, kept: list) -> list:
        # the pairs as Improve made them; original targets are not pairs (check_dpo)
        return kept if self.prefers(step) else super().training_data(r, step, kept)

    def start_of(self, step: int, previous: Policy) -> str | None:
        """A DPO step after an SFT step of the same round trains that step's policy (SFT, then DPO)."""
        if step > 1 and self.prefers(step) and not self.prefers(step - 1):
            return previous.output
        return super().start_of(step, previous)

    def train(self, step: int, examples: list, out: Path, start: str | None, learning_rate: float) -> dict:
        if not self.prefers(step):
            return super().train(step, examples, out, start, learning_rate)
        cfg = self.cfg.trainer if start is None else dataclasses.replace(self.cfg.trainer, init="previous")
        return dpo(self.base_model, examples, cfg, out, start=start, learning_rate=learning_rate,
                   allow_pickle=self.cfg.model.allow_pickle)


def pair_stats(judgements: list[Judgement], stages: list[dict], pairs: list[PreferencePair]) -> dict:
    """What stats.json says of a preference Improve; `kept` counts pairs (the report's kept column)."""
    scores = [j.score for j in judgements if j.status == "ok"]
    gaps = [p.chosen_score - p.rejected_score for p in pairs]
    return {
        "samples": len(judgements),
        "status": {s: sum(j.status == s for j in judgements) for s in ("ok", "unparsed", "error")},
        "mean_score": sum(scores) / len(scores) if scores else None,
        "histogram": histogram(scores),
        "stages": stages,
        "pairs": len(pairs),
        "kept": len(pairs),
        "keep_rate": 2 * len(pairs) / len(judgements) if judgements else 0.0,  # samples in a pair (best_worst)
        "prompts_with_pairs": len({p.prompt_id for p in pairs}),
        "mean_gap": sum(gaps) / len(gaps) if gaps else None,
        "chosen_mean_score": sum(p.chosen_score for p in pairs) / len(pairs) if pairs else None,
        "rejected_mean_score": sum(p.rejected_score for p in pairs) / len(pairs) if pairs else None,
    }

"""The ReST loop: evaluate the base model, then for each round grow, improve, fine-tune, evaluate.

    round 0:  evaluate(base)                                   the baseline
    round r:  samples = grow(policy, train prompts)            n completions per prompt
              kept    = improve(samples)                       reward, then filter
              policy  = finetune(start, kept)                  start: base (ReST-EM) or previous (ReST)
              evaluate(policy, held-out prompts)

Each stage lives in `runs/<name>/<time>/round_NNN/<stage>/` and ends with a DONE
marker; a resumed run skips every stage that has one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from rest_loop.config import RunConfig
from rest_loop.engine import BASE, Engine, Policy, get_engine
from rest_loop.evaluate import evaluate
from rest_loop.finetune import finetune
from rest_loop.grow import grow
from rest_loop.improve.filters import NothingKept, histogram, select
from rest_loop.improve.rewards import Reward
from rest_loop.manifest import Manifest
from rest_loop.models import resolve_model
from rest_loop.records import Judgement, KeptExample, Prompt, Sample
from rest_loop.report import round_line, table
from rest_loop.store import Stage, read_json, read_jsonl, sweep_temporaries, write_json, write_jsonl

log = logging.getLogger(__name__)


class Run:
    def __init__(self, cfg: RunConfig, raw: DictConfig):
        self.cfg, self.dir = cfg, Path(cfg.paths.run_dir)
        if swept := sweep_temporaries(self.dir):
            log.info("removed %d temporary files left by an interrupted run", swept)
        self.manifest = Manifest.open(self.dir, cfg)
        self.task = instantiate(raw.task)
        self.reward = Reward.from_config(raw.reward)
        self.prompts: dict[str, Prompt] = {p.id: p for p in self.task.train + self.task.heldout}
        self.base_model = resolve_model(cfg.model.source, cfg.model.cache_dir)
        self.manifest.note(task=self.task.describe(), reward=self.reward.version, base_model=self.base_model)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:  # started on first use: a fully resumed run never starts one
        if self._engine is None:
            self._engine = get_engine(self.base_model, self.cfg.model, self.cfg.seed)
            self.manifest.note(engine_startup_s=round(self._engine.startup_s, 1))
        return self._engine

    def run(self) -> float | None:
        cfg = self.cfg
        policy = BASE
        self.evaluate(0, policy)
        for r in range(1, cfg.loop.rounds + 1):
            start = time.perf_counter()
            samples = self.grow(r, policy)
            kept = self.improve(r, samples)
            policy = self.finetune(r, kept, previous=policy)
            self.evaluate(r, policy)
            self.manifest.round_done(r, time.perf_counter() - start)
            print(round_line(self.manifest.rounds[r]), flush=True)
        self.manifest.finish()
        print(table(self.manifest), flush=True)
        return self.manifest.final_metric()

    # Each stage: skip if DONE, else compute, write atomically, mark DONE.

    def stage(self, r: int, name: str) -> Stage:
        return Stage(self.dir / f"round_{r:03d}" / name)

    def grow(self, r: int, policy: Policy) -> list[Sample]:
        stage = self.stage(r, "grow")
        if not stage.done:
            log.info("round %d: grow %d x %d with %s", r, len(self.task.train), self.cfg.sampler.n, policy.name)
            start = time.perf_counter()
            samples = grow(self.engine, policy, self.task.train, self.cfg.sampler, r)
            seconds = time.perf_counter() - start
            write_jsonl(stage / "samples.jsonl", samples)
            tokens = sum(s.num_tokens for s in samples)
            stage.finish(samples=len(samples), tokens=tokens, seconds=round(seconds, 1),
                         tokens_per_s=round(tokens / seconds, 1), policy=policy.name)
        else:
            log.info("round %d: grow already done, reusing %s", r, stage / "samples.jsonl")
        self.manifest.stage_done(r, "grow", read_json(stage / "DONE"))
        return read_jsonl(stage / "samples.jsonl", Sample)

    def improve(self, r: int, samples: list[Sample]) -> list[KeptExample]:
        stage = self.stage(r, "improve")
        if not stage.done:
            f = self.cfg.filter
            log.info("round %d: improve %d samples with reward %s", r, len(samples), self.reward.name)
            judgements = self.reward(self.prompts, samples, retries=f.retries if f.unjudged == "retry" else 0)
            write_jsonl(stage / "judgements.jsonl", judgements)
            chosen, stages = select(samples, judgements, f, round=r, seed=self.cfg.seed)
            kept = [KeptExample(round=r, prompt_id=s.prompt_id, sample_idx=s.sample_idx,
                                messages=self.prompts[s.prompt_id].messages, completion=s.text, score=j.score,
                                policy=s.policy, seed=s.seed, reward=self.reward.version) for s, j in chosen]
            stats = improve_stats(judgements, stages, f.threshold_at(r), kept)
            stats["reward_terms"] = self.reward.last_stats
            write_json(stage / "stats.json", stats)
            if len(kept) < f.min_keep:
                left = ", ".join(f"{x['stage']} {x['out']}" for x in stages)
                raise NothingKept(
                    f"round {r}: the filter kept {len(kept)} of {len(samples)} samples, fewer than filter.min_keep="
                    f"{f.min_keep}. Judgement statuses: {stats['status']}; left after each filter stage: {left}. "
                    f"See {stage / 'judgements.jsonl'}. To go on, lower the threshold: "
                    f"rest-loop resume={self.dir} filter.threshold=<lower>")
            write_jsonl(stage / "kept.jsonl", kept)
            stage.finish(kept=len(kept), keep_rate=stats["keep_rate"])
        self.manifest.stage_done(r, "improve", read_json(stage / "stats.json"))
        return read_jsonl(stage / "kept.jsonl", KeptExample)

    def finetune(self, r: int, kept: list[KeptExample], previous: Policy) -> Policy:
        stage = self.stage(r, "finetune")
        if not stage.done:
            log.info("round %d: fine-tune on %d examples (init=%s)", r, len(kept), self.cfg.trainer.init)
            summary = finetune(self.base_model, kept, self.cfg.trainer, stage.path, previous_adapter=previous.adapter)
            stage.finish(**summary)
        self.manifest.stage_done(r, "finetune", read_json(stage / "DONE"))
        return Policy(f"round_{r:03d}", str(stage / "adapter"), adapter_id=r)

    def evaluate(self, r: int, policy: Policy) -> dict:
        stage = self.stage(r, "eval")
        if not stage.done:
            log.info("round %d: evaluate %s on %d held-out prompts", r, policy.name, len(self.task.heldout))
            metrics = evaluate(self.engine, policy, self.task.heldout, self.reward, self.cfg.loop.eval_max_tokens,
                               r, stage.path)
            write_json(stage / "metrics.json", metrics)
            stage.finish()
        metrics = read_json(stage / "metrics.json")
        self.manifest.stage_done(r, "eval", metrics)
        return metrics


def improve_stats(judgements: list[Judgement], stages: list[dict], threshold: float, kept: list[KeptExample]) -> dict:
    scores = [j.score for j in judgements if j.status == "ok"]
    statuses = {s: sum(j.status == s for j in judgements) for s in ("ok", "unparsed", "error")}
    return {
        "samples": len(judgements),
        "status": statuses,
        "threshold": threshold,
        "mean_score": sum(scores) / len(scores) if scores else None,
        "histogram": histogram(scores),
        "stages": stages,  # per filter stage: in, out and what it used
        "kept": len(kept),
        "keep_rate": len(kept) / len(judgements) if judgements else 0.0,
        "prompts_with_kept": len({k.prompt_id for k in kept}),
    }

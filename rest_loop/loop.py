"""The ReST loop: evaluate the base model, then for each round grow once and improve S times.

    round 0:  evaluate(base)                                        the baseline
    round r:  samples = grow(policy, train prompts)                 n completions per prompt
              for step s in 1..S (loop.improve_steps):              ReST: S > 1, rising thresholds
                  kept   = improve(samples, threshold of step s)    reward, then filter
                  policy = finetune(start, kept + original data)    start: base (ReST-EM) or previous (ReST)
                  evaluate(policy, held-out prompts)
              stop early when the held-out metric stalls (loop.patience)

Each stage lives in `runs/<name>/<time>/round_NNN/<stage>/` and ends with a DONE marker;
a resumed run skips every stage that has one. Step 1's stages are `improve`, `finetune`,
`eval`; later steps' are `improve_2`, `finetune_2`, `eval_2`, ...
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from rest_loop.config import RunConfig, build
from rest_loop.engine import BASE, Engine, Policy, adapter_id, get_engine, in_process_core, on_gpu
from rest_loop.evaluate import evaluate
from rest_loop.finetune import check_method, finetune
from rest_loop.improve.backends import PolicyBackend
from rest_loop.grow import grow
from rest_loop.improve.filters import NothingKept, histogram, select
from rest_loop.improve.rewards import Reward
from rest_loop.manifest import Manifest, stage_name
from rest_loop.metrics import diversity
from rest_loop.models import resolve_model
from rest_loop.pools import Pools
from rest_loop.prefer.winrate import against_previous
from rest_loop.preflight import check_gold, check_references
from rest_loop.records import Judgement, KeptExample, Prompt, Sample
from rest_loop.report import round_line, table, write_csv
from rest_loop.store import Stage, read_json, read_jsonl, sweep_temporaries, write_json, write_jsonl

log = logging.getLogger(__name__)


class Run:
    def __init__(self, cfg: RunConfig, raw: DictConfig):
        self.cfg, self.dir = cfg, Path(cfg.paths.run_dir)
        check_method(cfg.trainer)  # before anything runs: QLoRA needs a GPU, FSDP too
        if swept := sweep_temporaries(self.dir):
            log.info("removed %d temporary files left by an interrupted run", swept)
        self.manifest = Manifest.open(self.dir, cfg)
        self.task = build(raw.task)
        self.reward = Reward.from_config(raw.reward)
        self.eval_reward = Reward.from_config(raw.eval.reward) if raw.eval.reward else None
        self.win_judge = build(raw.eval.win_rate) if raw.eval.get("win_rate") else None  # eval=win_rate
        self.teacher = build(raw.teacher) if raw.get("teacher") else None  # grows teacher.rounds (rest_loop/teacher/)
        self.prompts: dict[str, Prompt] = {p.id: p for p in self.task.train + self.task.heldout}
        check_references(self.reward, self.task)
        check_gold(self.reward, self.task, raw)  # before the engine: a reward that cannot score the gold answers
        self.base_model = resolve_model(cfg.model.source, cfg.model.cache_dir, cfg.model.allow_pickle)
        self.manifest.note(task=self.task.describe(), reward=self.reward.version, base_model=self.base_model)
        self.pools = Pools(cfg.paths.pools, owner=str(self.dir)) if cfg.paths.pools else None
        self._engine: Engine | None = None  # the base model's engine: base and LoRA policies, local judges
        self._tuned: Engine | None = None  # a fully fine-tuned policy's engine (trainer.method=full)
        self.current: Policy | None = None  # the policy the engines last generated for
        self.tuned_at: dict[str, tuple[int, str]] = {}  # policy name -> (round, fine-tune stage) that made it
        self.grown_by: Policy = BASE  # the policy of the latest Grow

    @property
    def engine(self) -> Engine:  # started on first use: a fully resumed run never starts one
        if self._engine is None:
            if self.cfg.trainer.method != "full" and not on_gpu():
                in_process_core()  # deterministic draws on CPU, replicas too; trainer=full needs a second engine
            self._engine = get_engine(self.base_model, self.cfg.model, self.cfg.seed)
            self.manifest.note(engine_startup_s=round(self._engine.startup_s, 1))
        return self._engine

    def run(self) -> float | None:
        cfg = self.cfg
        policy = BASE
        self.evaluate(0, 1, policy)
        for r in range(1, cfg.loop.rounds + 1):
            start = time.perf_counter()
            samples = self.grow(r, policy)
            for step in range(1, cfg.loop.improve_steps + 1):
                kept = self.improve(r, step, samples)
                policy = self.finetune(r, step, kept, previous=policy)
                self.evaluate(r, step, policy)
            self.manifest.round_done(r, time.perf_counter() - start)
            print(round_line(self.manifest.rounds[r]), flush=True)
            if why := self.manifest.stalled(cfg.loop.patience, cfg.loop.min_delta):
                log.info("stopping after round %d: %s", r, why)
                self.manifest.note(stopped_early={"after_round": r, "reason": why})
                break
        self.manifest.finish()
        print(table(self.manifest), flush=True)
        return self.manifest.final_metric()

    def close(self) -> None:
        """Free a fully tuned policy's engine. The base engine stays: the next sweep member in this
        process uses it too."""
        if self._tuned is not None:
            self._tuned.close()
            self._tuned = None

    # Each stage: skip if DONE, else compute, write atomically, mark DONE.

    def stage(self, r: int, name: str, step: int = 1) -> Stage:
        return Stage(self.dir / f"round_{r:03d}" / stage_name(name, step))

    def engine_for(self, policy: Policy) -> Engine:
        return self.engine if policy.model is None else self._tuned

    def grow(self, r: int, policy: Policy) -> list[Sample]:
        teacher = self.teacher if self.teacher is not None and r in self.teacher.rounds else None
        drawn_by = teacher.name if teacher else policy.name

        def make() -> list[Sample]:
            log.info("round %d: grow %d x %d with %s", r, len(self.task.train), self.cfg.sampler.n, drawn_by)
            if teacher is not None:  # the teacher writes this round's samples; the policy learns them
                return teacher.grow(self.task.train, self.cfg.sampler, r, self.pools)
            return grow(self.ready(policy), policy, self.task.train, self.cfg.sampler, r, self.pools)

        def counts(samples: list[Sample]) -> dict:
            tokens = sum(s.num_tokens for s in samples)
            return dict(samples=len(samples), tokens=tokens, mean_tokens=tokens / len(samples),
                        **diversity([s.text for s in samples]))

        return self.grow_stage(r, policy, "samples.jsonl", Sample, make, counts, drawn_by)

    def grow_stage(self, r: int, policy: Policy, file: str, cls: type, make: Callable[[], list],
                   counts: Callable[[list], dict], drawn_by: str | None = None) -> list:
        """A round's Grow: `make()` once, its rows in grow/<file> with `counts(rows)` (which holds `tokens`),
        the time and the pool cache's answer in DONE; read back from there when the stage is done. DONE
        names who drew the rows: `drawn_by` (a teacher's name) where given, else the policy."""
        stage = self.stage(r, "grow")
        self.grown_by = policy  # what a judge=policy judges with, and an agent's step feedback draws from
        if not stage.done:
            start = time.perf_counter()
            rows = make()
            seconds = time.perf_counter() - start
            write_jsonl(stage / file, rows)
            cache = self.cache_events()
            info = counts(rows)
            stage.finish(**info, seconds=round(seconds, 1), policy=drawn_by or policy.name,
                         cache=cache[0] if cache else None,
                         tokens_per_s=None if cache and cache[0]["hit"] else round(info["tokens"] / seconds, 1))
        else:
            log.info("round %d: grow already done, reusing %s", r, stage / file)
        self.manifest.stage_done(r, "grow", stage.info)
        return read_jsonl(stage / file, cls)

    def improve(self, r: int, step: int, samples: list[Sample]) -> list[KeptExample]:
        stage = self.stage(r, "improve", step)
        if not stage.done:
            f = self.cfg.filter
            judgements = self.judge(r, samples)
            chosen, stages = select(samples, judgements, f, round=r, seed=self.cfg.seed, step=step)
            kept = [KeptExample(round=r, step=step, prompt_id=s.prompt_id, sample_idx=s.sample_idx,
                                messages=self.prompts[s.prompt_id].messages, completion=s.text, score=j.score,
                                policy=s.policy, seed=s.seed, reward=self.reward.version) for s, j in chosen]
            stats = improve_stats(judgements, stages, f.threshold_at(r, step), kept)
            stats["reward_terms"] = read_json(self.stage(r, "improve") / "reward_terms.json")
            stats["judge_cache"] = judge_cache(stats["reward_terms"])
            write_json(stage / "stats.json", stats)
            if len(kept) < f.min_keep:
                left = ", ".join(f"{x['stage']} {x['out']}" for x in stages)
                where = f"round {r}" + (f" step {step}" if self.cfg.loop.improve_steps > 1 else "")
                raise NothingKept(
                    f"{where}: the filter kept {len(kept)} of {len(samples)} samples, fewer than "
                    f"filter.min_keep={f.min_keep}. Judgement statuses: {stats['status']}; left after each filter "
                    f"stage: {left}. See {self.stage(r, 'improve') / 'judgements.jsonl'}. To go on, lower the "
                    f"threshold: rest-loop resume={self.dir} {lower_threshold(f, r, step)}")
            write_jsonl(stage / "kept.jsonl", kept)
            stage.finish(kept=len(kept), keep_rate=stats["keep_rate"])
        self.manifest.stage_done(r, stage.path.name, read_json(stage / "stats.json"))
        return read_jsonl(stage / "kept.jsonl", KeptExample)

    def judge(self, r: int, samples: list[Sample]) -> list[Judgement]:
        """Score the round's pool once, in step 1's stage; every Improve step filters these judgements."""
        out = self.stage(r, "improve")
        if not (out / "judgements.jsonl").exists():  # written atomically: present means complete
            f = self.cfg.filter
            for term, _ in self.reward.terms.values():  # judge=policy: the policy that grew the round judges
                if isinstance(getattr(term, "backend", None), PolicyBackend):
                    term.backend.use(self.grown_by)
            log.info("round %d: judge %d samples with reward %s", r, len(samples), self.reward.name)
            judgements = self.reward(self.prompts, samples, retries=f.retries if f.unjudged == "retry" else 0)
            write_json(out / "reward_terms.json", self.reward.last_stats)
            if (asked := judge_cache(self.reward.last_stats))["requests"] + asked["cached"]:
                log.info("round %d: %d judge replies came from the cache, %d requests were sent", r,
                         asked["cached"], asked["requests"])
                self.manifest.count_cache(judge=asked)
            write_jsonl(out / "judgements.jsonl", judgements)
        return read_jsonl(out / "judgements.jsonl", Judgement)

    def original_data(self, r: int, step: int) -> list[KeptExample]:
        """ReST keeps the original dataset D in the mix: a fixed, seeded fraction of the train prompts
        that have a target, the same ones every round."""
        with_target = [p for p in self.task.train if p.target is not None]
        count = round(self.cfg.trainer.mix_original * len(with_target))
        chosen = random.Random(f"{self.cfg.seed}-original").sample(with_target, count)
        return [KeptExample(round=r, step=step, prompt_id=p.id, sample_idx=-1, messages=p.messages,
                            completion=p.target, score=None, policy="original", seed=self.cfg.seed,
                            reward="original", source="original") for p in chosen]

    def train_file(self, step: int) -> str:
        return "train.jsonl"  # finetune/<this>: exactly what the trainer saw, with lineage

    def training_data(self, r: int, step: int, kept: list[KeptExample]) -> list:
        if self.cfg.trainer.mix_original and not any(p.target for p in self.task.train):
            log.warning("trainer.mix_original=%s but task %s has no targets: nothing to mix in",
                        self.cfg.trainer.mix_original, self.task.name)
        return kept + self.original_data(r, step)

    def train(self, step: int, examples: list, out: Path, start: str | None, learning_rate: float) -> dict:
        return finetune(self.base_model, examples, self.cfg.trainer, out, start=start, learning_rate=learning_rate,
                        allow_pickle=self.cfg.model.allow_pickle)

    def start_of(self, step: int, previous: Policy) -> str | None:
        """What step `step`'s fine-tune continues: the previous policy with init=previous, else nothing (the base)."""
        return previous.output if self.cfg.trainer.init == "previous" else None

    def finetune(self, r: int, step: int, kept: list, previous: Policy) -> Policy:
        cfg, k = self.cfg.trainer, (r - 1) * self.cfg.loop.improve_steps + step  # the run's k-th fine-tune
        stage = self.stage(r, "finetune", step)
        name = stage_name(stage.path.parent.name, step)  # the policy: round_001, round_001_2, ...
        if not stage.done:
            examples = self.training_data(r, step, kept)
            write_jsonl(stage / self.train_file(step), examples)
            start = self.start_of(step, previous)
            log.info("round %d step %d: fine-tune (%s, %s, from %s) on %d kept + %d original examples", r, step,
                     cfg.objective_at(step), cfg.method, start or "the base", len(kept), len(examples) - len(kept))
            self.engine_sleeps()
            summary = self.train(step, examples, stage.path, start, cfg.learning_rate_at(k))
            stage.finish(**summary, kept=len(kept), original=len(examples) - len(kept))
        info = stage.info
        self.manifest.stage_done(r, stage.path.name, info)
        output = info["output"]
        policy = (Policy(name, model=output) if cfg.method == "full" else Policy(name, output, adapter_id(output)))
        self.tuned_at[name] = (r, stage.path.name)
        return policy

    def engine_sleeps(self) -> None:
        """On a GPU, free its memory for the trainer (a no-op on CPU). The base engine keeps its weights
        in CPU memory (LoRA policies and local judges need them); a fully tuned one drops them."""
        if self._engine is not None:
            self._engine.sleep(1)
        if self._tuned is not None:
            self._tuned.sleep(2)

    def ready(self, policy: Policy) -> Engine:
        """The engine that generates for `policy`. The first call for a fine-tuned policy is the round
        transition, timed up to its first generated token and recorded in the manifest.

        LoRA: the adapter is hot-swapped into the running engine. Full: the new weights are reloaded in
        place where vLLM can, else a new engine starts. The base engine stays for local judges."""
        if policy == self.current or policy.name not in self.tuned_at:
            self.current = policy
            return self.engine_for(policy)
        start = time.perf_counter()
        if policy.model is None:
            how = "adapter hot-swap"
        elif self._tuned is not None and self._tuned.reload(policy.model):
            how = "weights reloaded in place"
        else:
            if self._tuned is not None:
                self._tuned.close()
            how, self._tuned = "new engine", Engine(policy.model, self.cfg.model, self.cfg.seed)
        engine = self.engine_for(policy)
        engine.generate([engine.chat_prompt(self.task.train[0].messages)],
                        {"n": 1, "max_tokens": 1, "temperature": 0.0}, policy, use_tqdm=False)
        r, stage = self.tuned_at[policy.name]
        self.manifest.transition(r, stage, how, time.perf_counter() - start)
        self.current = policy
        return engine

    def cache_events(self) -> list[dict]:
        """The pool cache's hits and misses since the last call, counted in the manifest."""
        events = self.pools.take() if self.pools else []
        self.manifest.count_cache(pools=events)
        return events

    def evaluate(self, r: int, step: int, policy: Policy) -> dict:
        stage = self.stage(r, "eval", step)
        if not stage.done:
            log.info("round %d: evaluate %s on %d held-out prompts", r, policy.name, len(self.task.heldout))
            metrics = evaluate(self.ready(policy), policy, self.task.heldout, self.task.metric, self.reward,
                               self.cfg.eval, r, stage.path, eval_reward=self.eval_reward, pools=self.pools)
            metrics.update(step=step, cache=self.cache_events())
            if self.win_judge is not None and (before := self.evaluated_before(r, step)) is not None:
                metrics["win_rate"] = against_previous(self.win_judge, self.task.heldout, before, stage.path)
            write_json(stage / "metrics.json", metrics)
            stage.finish()
        metrics = read_json(stage / "metrics.json")
        self.manifest.stage_done(r, stage.path.name, metrics)
        write_csv(self.manifest, self.dir / "metrics.csv")
        return metrics

    def evaluated_before(self, r: int, step: int) -> Path | None:
        """The evaluation stage just before (r, step): the round's previous step, or the last of the round before."""
        if r == 0:
            return None
        return self.stage(r, "eval", step - 1).path if step > 1 else \
            self.stage(r - 1, "eval", self.cfg.loop.improve_steps if r > 1 else 1).path


def lower_threshold(f, round: int, step: int) -> str:
    """The override that lowers the threshold this step used, for the resume advice."""
    if f.step_thresholds is not None:
        values = [str(t) if i != step - 1 else "<lower>" for i, t in enumerate(f.step_thresholds)]
        return f"filter.step_thresholds=[{','.join(values)}]"
    if f.threshold_schedule is not None:
        return f"filter.threshold_schedule=<a list with a lower value for round {round}>"
    return "filter.threshold=<lower>"


def judge_cache(reward_terms: dict) -> dict:
    """Judge replies answered from the reply cache, and requests sent, over a reward's judge terms."""
    usage = [t["usage"] for t in reward_terms.values() if "usage" in t]
    return {"cached": sum(u["cached"] for u in usage), "requests": sum(u["requests"] for u in usage)}


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
        "kept_mean_score": sum(k.score for k in kept) / len(kept) if kept else None,
    }

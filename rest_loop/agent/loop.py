"""ReST meets ReAct: the same rounds as rest_loop.loop, with trajectories where completions were.

    round 0:  evaluate(base agent)                               greedy trajectories on held-out questions
    round r:  trajectories = grow(policy, env, train questions)  n step-synchronous rollouts per question
              kept   = improve(trajectories)                     reward on the final answers, then the filter
              policy = finetune(start, examples(kept))           per step, or whole trajectories, as tokens
              evaluate(policy)

The run is chosen by config: a run with an `env` (conf/env/) and an `agent` (conf/agent/) is an
AgentRun. Its stages write `grow/trajectories.jsonl`, `improve/judgements.jsonl` (one per
trajectory, scored on its final answer), `improve/kept.jsonl` (the token examples with lineage),
`finetune/train.jsonl` and `eval/completions.jsonl` (the held-out trajectories with their scores).
With step feedback (`agent.step_feedback.k`), `improve/step_feedback.jsonl` holds each kept step's own
turn, its k alternatives and the judge's choice.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from rest_loop.agent import evaluate as agent_eval
from rest_loop.agent.feedback import describe as describe_feedback, step_examples
from rest_loop.agent.grow import answer_sample, grow, training_examples
from rest_loop.agent.records import TokenExample, Trajectory
from rest_loop.agent.rollout import describe
from rest_loop.config import ConfigError, RunConfig
from rest_loop.engine import Policy, draw_seed
from rest_loop.improve.filters import NothingKept, select
from rest_loop.loop import Run, build, improve_stats, judge_cache, lower_threshold
from rest_loop.report import write_csv
from rest_loop.store import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)
MODES = ("step", "trajectory")


class AgentRun(Run):
    def __init__(self, cfg: RunConfig, raw: DictConfig):
        if cfg.trainer.prefers():
            raise ConfigError("trainer.objective=dpo: an agent's rounds fine-tune on its trajectories with SFT; "
                              "preference pairs of trajectories are not built yet (nor dpo in trainer.step_objectives)")
        if raw.eval.get("win_rate"):
            raise ConfigError("eval.win_rate: a pairwise judge of an agent's trajectories is not built yet; "
                              "use eval=default with an agent")
        super().__init__(cfg, raw)
        if raw.agent is None:
            raise ConfigError("env is set but agent is not: choose an action format, e.g. agent=react")
        self.env = build(raw.env)
        self.fmt = build(raw.agent.format)
        self.train_on = raw.agent.train_on
        if self.train_on not in MODES:
            raise ConfigError(f"agent.train_on={self.train_on!r}: must be one of {', '.join(MODES)}")
        feedback = raw.agent.get("step_feedback")
        self.feedback = build(feedback) if feedback is not None and feedback.k > 0 else None
        if self.feedback is not None and self.train_on != "step":
            raise ConfigError(f"agent.step_feedback.k={feedback.k} chooses a target per step: it needs "
                              f"agent.train_on=step, not {self.train_on!r}")
        self.manifest.note(env=self.env.identity(), agent_format=self.fmt.version(), train_on=self.train_on,
                           step_feedback=self.feedback.version if self.feedback else None)

    def grow(self, r: int, policy: Policy) -> list[Trajectory]:
        def make() -> list[Trajectory]:
            log.info("round %d: roll out %d x %d trajectories with %s", r, len(self.task.train), self.cfg.sampler.n,
                     policy.name)
            return grow(self.ready(policy), policy, self.env, self.fmt, self.task.train, self.cfg.sampler, r,
                        self.pools)

        return self.grow_stage(r, policy, "trajectories.jsonl", Trajectory, make, describe)

    def improve(self, r: int, step: int, trajectories: list[Trajectory]) -> list[TokenExample]:
        stage = self.stage(r, "improve", step)
        if not stage.done:
            f = self.cfg.filter
            answers = [answer_sample(t) for t in trajectories]
            judgements = self.judge(r, answers)
            chosen, stages = select(answers, judgements, f, round=r, seed=self.cfg.seed, step=step)
            by_key = {(t.prompt_id, t.sample_idx): t for t in trajectories}
            kept = [(by_key[s.prompt_id, s.sample_idx], j.score) for s, j in chosen]
            if self.feedback is None or not kept:
                examples = training_examples(kept, self.train_on, self.reward.version, step,
                                             self.cfg.trainer.max_length)
            else:  # each kept step's target is the best of its own turn and k alternatives from its history
                policy = self.grown_by
                log.info("round %d: step feedback on the %d steps of %d kept trajectories (k=%d)", r,
                         sum(len(t.steps) for t, _ in kept), len(kept), self.feedback.k)
                choices = self.feedback(self.ready(policy), policy, self.fmt, self.env.specs(), self.cfg.sampler, kept,
                                        self.prompts, seed=draw_seed(self.cfg.seed, r, step, "step_feedback"))
                write_jsonl(stage / "step_feedback.jsonl", choices)
                examples = step_examples(choices, by_key, f"{self.reward.version}+{self.feedback.version}", step,
                                         self.cfg.trainer.max_length)
            stats = improve_stats(judgements, stages, f.threshold_at(r, step), examples)
            stats.update(kept_trajectories=len(kept), prompts_with_kept=len({t.prompt_id for t, _ in kept}),
                         keep_rate=len(kept) / len(trajectories) if trajectories else 0.0, train_on=self.train_on,
                         examples=len(examples))
            stats["reward_terms"] = read_json(self.stage(r, "improve") / "reward_terms.json")
            stats["judge_cache"] = judge_cache(stats["reward_terms"])
            if self.feedback is not None and kept:
                stats["step_feedback"] = describe_feedback(choices, self.feedback.last_stats)
            write_json(stage / "stats.json", stats)
            if len(kept) < f.min_keep or not examples:
                raise NothingKept(
                    f"round {r}: the filter kept {len(kept)} of {len(trajectories)} trajectories "
                    f"({len(examples)} training examples), fewer than filter.min_keep={f.min_keep}. Judgement "
                    f"statuses: {stats['status']}. See {self.stage(r, 'improve') / 'judgements.jsonl'}. To go on, "
                    f"lower the threshold: rest-loop resume={self.dir} {lower_threshold(f, r, step)}")
            write_jsonl(stage / "kept.jsonl", examples)
            stage.finish(kept=len(kept), examples=len(examples), keep_rate=stats["keep_rate"])
        self.manifest.stage_done(r, stage.path.name, read_json(stage / "stats.json"))
        return read_jsonl(stage / "kept.jsonl", TokenExample)

    def evaluate(self, r: int, step: int, policy: Policy) -> dict:
        stage = self.stage(r, "eval", step)
        if not stage.done:
            log.info("round %d: evaluate %s on %d held-out questions", r, policy.name, len(self.task.heldout))
            metrics = agent_eval.evaluate(self.ready(policy), policy, self.env, self.fmt, self.task.heldout,
                                          self.task.metric, self.cfg.eval, r, stage.path, pools=self.pools)
            metrics.update(step=step, cache=self.cache_events())
            write_json(stage / "metrics.json", metrics)
            stage.finish()
        metrics = read_json(stage / "metrics.json")
        self.manifest.stage_done(r, stage.path.name, metrics)
        write_csv(self.manifest, self.dir / "metrics.csv")
        return metrics


"""Step-level AI feedback (ReST meets ReAct): for each step of a kept trajectory, the best of K+1 next steps.

    agent.step_feedback.k=3      # the trajectory's own step and 3 alternatives, ranked together

For every step of every kept trajectory, K alternatives are drawn from the same history (the question's
prompt ids, then the earlier steps' tokens and observations, exactly as the policy read them), with the
rollout's sampling parameters, constrained decoding included. The step's own turn and the alternatives
that parse are ranked by a judge (prompts/judge/step_ranking.j2: the question, the history so far and
the candidate next steps) through rest_loop.improve.ranking, so the shuffle, its seed, the statuses and
the position-bias numbers are the ranking judge's. The winner's tokens, exactly as generated, become that
step's fine-tuning target, with the history as its prompt (`step_examples`).

The observation that follows an alternative is never seen (it is not executed): each step is judged
from the trajectory's own history, and later steps keep the trajectory's own continuation.

An alternative that does not parse is never a candidate (nor a target); candidates with the same tokens
are ranked once, the earliest standing for the rest (the trajectory's own step wins ties). When only one
candidate parses there is nothing to rank ("single"). When the judge cannot rank (its reply does not
parse after the retries, or the request failed) the step keeps its own turn as the target and the
record says so: status unparsed or error, chosen 0, never a made-up winner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rest_loop.agent.actions import Format, first_parameter
from rest_loop.agent.judge import step_view
from rest_loop.agent.records import TokenExample, Trajectory
from rest_loop.agent.rollout import step_params, vllm_params
from rest_loop.config import ConfigError, SamplerConfig
from rest_loop.engine import Policy
from rest_loop.improve.backends import Request
from rest_loop.improve.ranking import rank, ranking_request, ranking_stats
from rest_loop.improve.verifiers import Result
from rest_loop.records import Prompt
from rest_loop.templates import Template


@dataclass
class Candidate:
    """One candidate next step: the trajectory's own (idx 0) or an alternative drawn from its history."""

    idx: int  # 0: the trajectory's own step; 1..k: the alternatives, in draw order
    text: str
    token_ids: list[int]  # exactly as generated: the target if it wins
    parse: str  # ok | unparsed (an unparsed candidate is never ranked)
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    duplicate_of: int | None = None  # the earlier candidate with the same tokens, which stood for it
    score: float | None = None  # its place in the ranking (1.0 best), when the judge ranked


@dataclass
class StepChoice:
    """Which candidate became one step's target, and why."""

    round: int
    prompt_id: str
    sample_idx: int
    turn: int  # the step of the trajectory
    candidates: list[Candidate]
    chosen: int | None  # the candidate whose tokens are the target; None: no candidate parsed, no target
    status: str  # ok: the judge ranked; single: one candidate parsed; none: none did; unparsed/error: the judge failed
    reason: str = ""
    judge: Any = None  # the judge's raw output: shown order, shuffle seed, reply texts, ranking
    score: float | None = None  # the kept trajectory's score

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "StepChoice":
        return cls(**{**row, "candidates": [Candidate(**c) for c in row["candidates"]]})


@dataclass
class _Shown:
    """A candidate as rest_loop.improve.ranking sees it: grouped by prompt_id (one step), numbered by sample_idx."""

    prompt_id: str
    sample_idx: int
    candidate: Candidate


class StepFeedback:
    """Built from `agent.step_feedback` (conf/agent/*.yaml) when its k > 0."""

    def __init__(self, k: int, template: str, prompts_dir: str, backend, second_pass: bool = False, seed: int = 0,
                 max_tokens: int = 512, temperature: float = 0.0, retry_temperature: float = 0.7, retries: int = 2,
                 use_reference: bool = True, constrain: bool = False, max_observation_chars: int | None = 600):
        if not 1 <= k <= 8:
            raise ConfigError(f"agent.step_feedback.k={k}: must be in 1..8 (the step's own turn and k alternatives "
                              "are ranked together, numbered with one digit); 0 turns step feedback off")
        if retries < 0:
            raise ConfigError(f"agent.step_feedback.retries={retries}: must be >= 0")
        self.k, self.template, self.backend = k, Template(prompts_dir, template), backend
        self.second_pass, self.seed, self.retries = second_pass, seed, retries
        self.max_tokens, self.temperature, self.retry_temperature = max_tokens, temperature, retry_temperature
        self.use_reference, self.constrain, self.max_chars = use_reference, constrain, max_observation_chars
        self.version = f"step_ranking:{self.template.version}:k{k}"
        self.last_stats: dict[str, Any] = {}

    def __call__(self, engine, policy: Policy, fmt: Format, specs: list[dict], sampler: SamplerConfig,
                 kept: list[tuple[Trajectory, float | None]], prompts: dict[str, Prompt],
                 seed: int) -> list[StepChoice]:
        """One StepChoice per step of each kept trajectory, in trajectory then step order."""
        steps = [(t, turn, score) for t, score in kept for turn in range(len(t.steps))]
        drawn = self.alternatives(engine, policy, fmt, specs, sampler, [(t, turn) for t, turn, _ in steps], seed)
        choices = [StepChoice(t.round, t.prompt_id, t.sample_idx, turn, candidates, None, "none", score=score)
                   for (t, turn, score), candidates in zip(steps, drawn)]
        self.judge(choices, {(t.prompt_id, t.sample_idx): t for t, _ in kept}, prompts)
        return choices

    def alternatives(self, engine, policy: Policy, fmt: Format, specs: list[dict], sampler: SamplerConfig,
                     steps: list[tuple[Trajectory, int]], seed: int) -> list[list[Candidate]]:
        """Per step, its own turn then k alternatives drawn from its history in one engine call: each history
        k times with n=1, as the rollout draws (the prefix cache reads the shared history once)."""
        params = {s["function"]["name"]: first_parameter(s) for s in specs}
        sampling = vllm_params(step_params(sampler, fmt, specs))
        histories = [t.history(turn) for t, turn in steps for _ in range(self.k)]
        outs = (engine.generate(histories, sampling, policy, use_tqdm=False, seed=seed, fresh_cache=True)
                if histories else [])
        out = []
        for j, (t, turn) in enumerate(steps):
            own = t.steps[turn]
            candidates = [Candidate(0, own.text, own.token_ids, own.parse, own.tool, own.arguments, own.finish_reason)]
            for i, o in enumerate(outs[j * self.k:(j + 1) * self.k]):
                c = o[0]
                text = fmt.turn_text(c.text)
                action = fmt.parse(text, params)
                candidates.append(Candidate(i + 1, text, list(c.token_ids), action.status, action.tool,
                                            action.arguments, c.finish_reason))
            seen: dict[tuple, int] = {}
            for c in candidates:
                first = seen.setdefault(tuple(c.token_ids), c.idx)
                c.duplicate_of = None if first == c.idx else first
            out.append(candidates)
        return out

    def request(self, prompt: Prompt, shown: list[_Shown], attempt: int, context: tuple[Trajectory, int]) -> Request:
        t, turn = context
        history = [step_view(s, i + 1, self.max_chars) for i, s in enumerate(t.steps[:turn])]
        candidates = [{"text": c.text.strip(), "tool": c.tool, "arguments": json.dumps(c.arguments, ensure_ascii=False)}
                      for c in (s.candidate for s in shown)]
        content = self.template.render(input=prompt.input, k=len(shown), history=history, candidates=candidates,
                                       reference=prompt.reference if self.use_reference else None)
        return ranking_request(self, content, len(shown), attempt)

    def judge(self, choices: list[StepChoice], trajectories: dict, prompts: dict[str, Prompt]) -> None:
        """Rank each step's distinct parsable candidates and set its choice; retry what the judge left unranked."""
        contexts, shown = {}, []
        for n, choice in enumerate(choices):
            ranked = [c for c in choice.candidates if c.parse == "ok" and c.duplicate_of is None]
            if len(ranked) < 2:
                choice.chosen = ranked[0].idx if ranked else None
                choice.status = "single" if ranked else "none"
                choice.reason = "one candidate parsed: nothing to rank" if ranked else "no candidate parsed"
                continue
            key = f"{choice.prompt_id}/{choice.sample_idx}/{choice.turn}"
            contexts[key] = (trajectories[choice.prompt_id, choice.sample_idx], choice.turn)
            shown += [(n, _Shown(key, c.idx, c)) for c in ranked]
        before = vars(self.backend.usage).copy()
        ask_about = list(range(len(shown)))
        results: list[Result | None] = [None] * len(shown)
        for attempt in range(self.retries + 1):
            if not ask_about:
                break
            ss = [shown[i][1] for i in ask_about]
            ps = [prompts[choices[shown[i][0]].prompt_id] for i in ask_about]
            got = rank(ps, ss, lambda p, group, a: self.request(p, group, a, contexts[group[0].prompt_id]),
                       self.backend, self.k + 1, self.seed, self.second_pass, attempt)
            for i, r in zip(ask_about, got):
                results[i] = r
            ask_about = [i for i in ask_about if results[i].status != "ok"]
        self.last_stats = ranking_stats([r for r in results if r is not None])
        self.last_stats["usage"] = {k: round(v - before[k], 3) for k, v in vars(self.backend.usage).items()}
        by_choice: dict[int, list[tuple[Candidate, Result]]] = {}
        for (n, s), r in zip(shown, results):
            by_choice.setdefault(n, []).append((s.candidate, r))
        for n, ranked in by_choice.items():
            choice, first = choices[n], ranked[0][1]
            choice.status, choice.reason, choice.judge = first.status, first.reason, first.raw
            for c, r in ranked:
                c.score = r.score
            if first.status == "ok":  # the highest place; on a tie (two passes that disagree) the earlier candidate
                choice.chosen = max(ranked, key=lambda cr: (cr[1].score, -cr[0].idx))[0].idx
                choice.reason = f"candidate {choice.chosen} ranked best of {len(ranked)}"
            else:
                own = choice.candidates[0]
                choice.chosen = 0 if own.parse == "ok" else None
                choice.reason = f"the judge could not rank ({first.reason}): " + (
                    "the step keeps its own turn" if choice.chosen == 0 else "no target")


def step_examples(choices: list[StepChoice], trajectories: dict, reward: str, step: int = 1,
                  max_length: int | None = None) -> list[TokenExample]:
    """One TokenExample per step with a chosen candidate: the trajectory's history up to that step as the
    prompt (masked), the chosen candidate's tokens, exactly as generated, as the target."""
    out = []
    for c in choices:
        if c.chosen is None:
            continue
        t = trajectories[c.prompt_id, c.sample_idx]
        history, target = t.history(c.turn), c.candidates[c.chosen].token_ids
        out.append(TokenExample(round=t.round, prompt_id=t.prompt_id, sample_idx=t.sample_idx, turn=c.turn,
                                input_ids=history + target, mask=[0] * len(history) + [1] * len(target),
                                score=c.score, policy=t.policy, seed=t.seed, reward=reward, step=step,
                                source="step_feedback" if c.chosen != 0 else "grown"))
    too_long = [e for e in out if max_length and len(e.input_ids) > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} step-feedback examples are longer than trainer.max_length={max_length} "
                         f"(longest {max(len(e.input_ids) for e in too_long)} tokens): raise trainer.max_length")
    return out


def describe(choices: list[StepChoice], judge_stats: dict | None = None) -> dict:
    """Counts for stats.json: how the steps were decided, how often an alternative won, the judge's numbers."""
    statuses: dict[str, int] = {}
    for c in choices:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    ranked = [c for c in choices if c.status == "ok"]
    return {
        "steps": len(choices),
        "status": statuses,
        "alternatives_won": sum(c.chosen not in (None, 0) for c in choices),
        "own_step_won": sum(c.chosen == 0 for c in ranked),
        "own_step_kept_unjudged": sum(c.chosen == 0 for c in choices if c.status in ("unparsed", "error")),
        "no_target": sum(c.chosen is None for c in choices),
        "alternatives": sum(len(c.candidates) - 1 for c in choices),
        "alternatives_parsed": sum(x.parse == "ok" for c in choices for x in c.candidates[1:]),
        "duplicates": sum(x.duplicate_of is not None for c in choices for x in c.candidates),
        "judge": judge_stats or {},
    }

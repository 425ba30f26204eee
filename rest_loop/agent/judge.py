"""Judges that read whole trajectories: a ranking of one question's K trajectories, and pointwise checks.

    reward=trajectory_ranking filter=best_of_n      # the paper's ranker: the top trajectory per question

`TrajectoryRankingJudge` is ReST meets ReAct's ranker over agent rollouts. The judge sees the question
and K trajectories at once (each turn's text, the tool it called with its arguments, the observation,
then the final answer or why there was none), numbered in a seeded shuffled order, and prints an
explanation, `Answer: #X` and `Ranking: #X > #Y > ...`. The grouping, the shuffle and its recorded
seed, the parsing, the scores (1.0 best, 0.0 worst), the statuses and the second pass's position-bias
numbers are rest_loop.improve.ranking's, shared with the single-turn ranking judge.

Leading steps that every trajectory of a group shares are shown once, before the candidates, as OpenPipe
ART's RULER does; each candidate then shows only its own steps. When the trajectories are identical
throughout nothing is factored out (RULER's rule: there would be nothing left to compare), and each is
shown whole.

`TrajectoryCheck` is a pointwise judge over TrajectorySamples whose template also reads the trajectory
(its steps and observations): the paper's relevance self-check (prompts/judge/relevance.j2) and
grounding self-check (prompts/judge/grounding.j2). Use one as a reward term, or as a gate before the
ranking (a trajectory that fails it is not ranked):

    reward.terms.grounding.gate=0.5

    >>> a = Trajectory(1, "q", 0, "base", 0, steps=[Step("Action: search[x]", [1], "stop", "ok", "search",
    ...                {"query": "x"}, observation="x is 4")], answer=None)
    >>> b = Trajectory(1, "q", 1, "base", 0, steps=[*a.steps, Step("Action: finish[4]", [2], "stop", "ok",
    ...                "finish", {"answer": "4"})], answer="4")
    >>> shared_prefix([a, b])
    1
"""

from __future__ import annotations

import json
from typing import Any

from rest_loop.agent.records import Step, Trajectory
from rest_loop.config import ConfigError
from rest_loop.improve.backends import Request, ask
from rest_loop.improve.judge import PointwiseJudge, RationaleJudge, failed, judge_stats
from rest_loop.improve.ranking import rank, ranking_request, ranking_stats
from rest_loop.improve.verifiers import Result
from rest_loop.records import Prompt, Sample
from rest_loop.templates import Template

STOPS = {  # why a trajectory has no final answer, as the judge is told
    "max_steps": "it ran out of steps",
    "no_action": "its last turn held no action that could be read",
    "max_tokens": "it ran out of tokens",
    "context": "its history outgrew the model's context",
}


def clip(text: str | None, n: int | None) -> str | None:
    if text is None or n is None or len(text) <= n:
        return text
    return f"{text[:n]} [cut: {len(text)} characters]"


def step_view(step: Step, number: int, max_chars: int | None = None) -> dict[str, Any]:
    """What a judge template is shown of one turn."""
    return {"number": number, "text": step.text.strip(), "parsed": step.parse == "ok", "tool": step.tool,
            "arguments": json.dumps(step.arguments, ensure_ascii=False) if step.tool else "",
            "observation": clip(step.observation, max_chars), "tool_status": step.tool_status}


def same_step(a: Step, b: Step) -> bool:
    """Two turns the judge could not tell apart: the same text, action and observation."""
    return (a.text, a.tool, a.arguments, a.observation) == (b.text, b.tool, b.arguments, b.observation)


def identical(trajectories: list[Trajectory]) -> bool:
    first = trajectories[0]
    return all(t.answer == first.answer and len(t.steps) == len(first.steps)
               and all(same_step(x, y) for x, y in zip(t.steps, first.steps)) for t in trajectories[1:])


def shared_prefix(trajectories: list[Trajectory]) -> int:
    """How many leading steps all the trajectories share; 0 when they are identical throughout."""
    if len(trajectories) < 2 or identical(trajectories):
        return 0
    n = 0
    while all(len(t.steps) > n and same_step(t.steps[n], trajectories[0].steps[n]) for t in trajectories):
        n += 1
    return n


def outcome(t: Trajectory) -> dict[str, Any]:
    return {"answer": t.answer, "why_none": None if t.answer is not None else STOPS.get(t.stop, t.stop)}


def trajectories_view(trajectories: list[Trajectory], max_chars: int | None = None) -> dict[str, Any]:
    """The template's variables for K trajectories: the steps they share, then each one's own steps and
    outcome. Steps are numbered from 1 across the shared part and each candidate's part."""
    n = shared_prefix(trajectories)
    shared = [step_view(s, i + 1, max_chars) for i, s in enumerate(trajectories[0].steps[:n])]
    candidates = [{"steps": [step_view(s, n + i + 1, max_chars) for i, s in enumerate(t.steps[n:])], **outcome(t)}
                  for t in trajectories]
    return {"shared": shared, "candidates": candidates, "identical": len(trajectories) > 1 and identical(trajectories)}


def trajectory_of(sample: Sample) -> Trajectory:
    t = getattr(sample, "trajectory", None)
    if t is None:
        raise ConfigError("a trajectory judge scores an agent's trajectories (env=... agent=...), but it was given "
                          "plain samples: use reward=judge_ranking for single-turn completions")
    return t


class TrajectoryRankingJudge:
    """K trajectories of one question ranked at once, best first (see the module docstring)."""

    name = "judge_trajectory_ranking"
    retryable = True

    def __init__(self, template: str, prompts_dir: str, backend, group_size: int = 4, second_pass: bool = False,
                 seed: int = 0, max_tokens: int = 512, temperature: float = 0.0, retry_temperature: float = 0.7,
                 use_reference: bool = True, constrain: bool = False, max_observation_chars: int | None = 600):
        if not 2 <= group_size <= 9:
            raise ConfigError(f"reward judge: group_size={group_size} must be in 2..9 (one-digit candidate numbers)")
        self.template, self.backend = Template(prompts_dir, template), backend
        self.group_size, self.second_pass, self.seed = group_size, second_pass, seed
        self.max_tokens, self.temperature, self.retry_temperature = max_tokens, temperature, retry_temperature
        self.use_reference, self.constrain, self.max_chars = use_reference, constrain, max_observation_chars
        self.version = f"trajectory_ranking:{self.template.version}"

    def request(self, prompt: Prompt, shown: list[Sample], attempt: int) -> Request:
        view = trajectories_view([trajectory_of(s) for s in shown], self.max_chars)
        content = self.template.render(input=prompt.input, k=len(shown), **view,
                                       reference=prompt.reference if self.use_reference else None)
        return ranking_request(self, content, len(shown), attempt)

    def __call__(self, prompts: list[Prompt], samples: list[Sample], attempt: int = 0) -> list[Result]:
        results = rank(prompts, samples, self.request, self.backend, self.group_size, self.seed, self.second_pass,
                       attempt)
        by_key = {(s.prompt_id, s.sample_idx): trajectory_of(s) for s in samples}
        for s, r in zip(samples, results):
            if isinstance(r.raw, dict) and "shown" in r.raw and "shared_steps" not in r.raw:  # once per group
                group = [by_key[s.prompt_id, i] for i in r.raw["shown"]]
                r.raw.update(shared_steps=shared_prefix(group), identical=identical(group))
        return results

    def stats(self, results: list[Result]) -> dict:
        out = ranking_stats(results)
        groups = {r.raw["shuffle_seed"]: r.raw for r in results if isinstance(r.raw, dict) and "shared_steps" in r.raw}
        out["groups_identical"] = sum(g["identical"] for g in groups.values())
        out["groups_with_shared_steps"] = sum(g["shared_steps"] > 0 for g in groups.values())
        return out


class TrajectoryCheck:
    """A pointwise judge of one trajectory: its template reads `input`, `completion` (the final answer),
    `reference`, `min_rating`, `max_rating`, and also `steps` (each turn, as the ranking judge shows it) and
    `observations` (the tools' replies, in order). `mode` is how the rating is read: `rationale` (the judge
    explains, then writes `Rating: N`) or `pointwise` (one token, the expected rating under its
    probabilities), exactly as RationaleJudge and PointwiseJudge read theirs.

    A trajectory that never gave a final answer is neither relevant nor grounded: it scores 0.0 without a
    judge call."""

    name = "judge_trajectory_check"

    def __init__(self, template: str, prompts_dir: str, backend, mode: str = "rationale", min_rating: int = 1,
                 max_rating: int = 9, max_tokens: int = 256, temperature: float = 0.0, retry_temperature: float = 0.7,
                 min_rating_mass: float = 0.5, top_logprobs: int = 20, use_reference: bool = False,
                 constrain: bool = False, max_observation_chars: int | None = 600):
        if mode == "rationale":
            self.inner = RationaleJudge(template, prompts_dir, backend, min_rating, max_rating, max_tokens,
                                        temperature, retry_temperature, use_reference, constrain)
        elif mode == "pointwise":
            self.inner = PointwiseJudge(template, prompts_dir, backend, min_rating, max_rating, min_rating_mass,
                                        top_logprobs, use_reference)
        else:
            raise ConfigError(f"reward judge: mode={mode!r} must be 'rationale' or 'pointwise'")
        self.mode, self.backend, self.retryable = mode, backend, self.inner.retryable
        self.low, self.high, self.use_reference = min_rating, max_rating, use_reference
        self.max_chars = max_observation_chars
        self.version = f"trajectory_check:{self.inner.version}"

    def request(self, prompt: Prompt, sample: Sample, attempt: int) -> Request:
        t = trajectory_of(sample)
        content = self.inner.template.render(
            input=prompt.input, completion=sample.text, min_rating=self.low, max_rating=self.high,
            reference=prompt.reference if self.use_reference else None,
            steps=[step_view(s, i + 1, self.max_chars) for i, s in enumerate(t.steps)],
            observations=[clip(s.observation, self.max_chars) for s in t.steps if s.observation is not None])
        messages = [{"role": "user", "content": content}]
        if self.mode == "pointwise":
            return Request(messages, max_tokens=1, top_logprobs=self.inner.top_logprobs, attempt=attempt)
        inner = self.inner
        return Request(messages, max_tokens=inner.max_tokens, regex=inner.regex, attempt=attempt,
                       temperature=inner.temperature if attempt == 0 else inner.retry_temperature)

    def __call__(self, prompts: list[Prompt], samples: list[Sample], attempt: int = 0) -> list[Result]:
        results: list[Result | None] = [None] * len(samples)
        asked = []
        for i, s in enumerate(samples):
            if trajectory_of(s).answer is None:
                results[i] = Result(0.0, "ok", "no final answer")
            else:
                asked.append(i)
        replies = ask(self.backend, [self.request(prompts[i], samples[i], attempt) for i in asked])
        for i, reply in zip(asked, replies):
            results[i] = failed(reply) or (self.inner.score(reply.top_logprobs or {}) if self.mode == "pointwise"
                                           else self.inner.parse(reply))
        return results  # type: ignore[return-value]

    def stats(self, results: list[Result]) -> dict:
        return judge_stats(results)

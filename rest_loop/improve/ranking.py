"""The ranking judge of ReST meets ReAct: K candidates at once, best first.

The judge sees the task input and K completions of the same prompt, numbered in a
shuffled order (the seed is recorded), and prints its reasoning, `Answer: #X` and
`Ranking: #X > #Y > ...`. A sample's score is its place in the ranking, 1.0 for
the best and 0.0 for the worst; top-1 per prompt (`filter.top_k=1`) makes the best
the target, as in the paper. A prompt's completions are ranked in near-equal
groups of at most `group_size`.

With `second_pass`, each group is ranked again in reversed order. The score is the
mean of both places; whether the two passes agree on the best, and the Kendall tau
between them, are recorded per sample and summarised in stats.json.

A ranking that is not an order of exactly the K candidates, or an `Answer` that is
not the ranking's first, is "unparsed": no score for anyone in that group.

    >>> parse_ranking("Both fine.\\nAnswer: #2\\nRanking: #2 > #3 > #1", 3)
    ([2, 3, 1], None)
    >>> parse_ranking("Answer: #1\\nRanking: #2 > #1", 3)[1]
    'ranking [2, 1] is not an order of candidates #1..#3'
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import defaultdict
from typing import Callable

from rest_loop.config import ConfigError
from rest_loop.improve.backends import Request, ask
from rest_loop.improve.judge import failed, judge_stats
from rest_loop.improve.verifiers import Result
from rest_loop.records import Prompt, Sample
from rest_loop.templates import Template

RANKING_LINE = re.compile(r"ranking\**\s*[:=]\**\s*(.+)", re.IGNORECASE)
ANSWER_LINE = re.compile(r"answer\**\s*[:=]\**\s*#?\s*(\d+)", re.IGNORECASE)


def parse_ranking(text: str, k: int) -> tuple[list[int] | None, str | None]:
    """The 1-based candidate numbers best first, or None and why not."""
    lines = RANKING_LINE.findall(text or "")
    if not lines:
        return None, "no 'Ranking: #X > #Y ...' line"
    order = [int(x) for x in re.findall(r"\d+", lines[-1])]
    if sorted(order) != list(range(1, k + 1)):
        return None, f"ranking {order} is not an order of candidates #1..#{k}"
    answers = ANSWER_LINE.findall(text)
    if answers and int(answers[-1]) != order[0]:
        return None, f"'Answer: #{answers[-1]}' is not the ranking's first, #{order[0]}"
    return order, None


def split(indices: list[int], size: int) -> list[list[int]]:
    """Near-equal groups of at most `size`: 6 by 4 gives 3 + 3, never 4 + 2."""
    groups = math.ceil(len(indices) / size)
    return [indices[g::groups] for g in range(groups)] if groups > 1 else [indices]


def ranking_request(judge, content: str, k: int, attempt: int) -> Request:
    """A ranking judge's request for k candidates: `judge`'s max_tokens, its answer format forced when it
    constrains, its retry temperature after the first attempt."""
    return Request([{"role": "user", "content": content}], max_tokens=judge.max_tokens,
                   regex=format_regex(k) if judge.constrain else None, attempt=attempt,
                   temperature=judge.temperature if attempt == 0 else judge.retry_temperature)


def format_regex(k: int) -> str:
    """The answer format as a regex. Up to 5 candidates every consistent answer is spelled out
    (120 alternatives), so a constrained judge cannot repeat a number or contradict itself; above
    that only the shape is forced and a malformed ranking is still unparsed.

    >>> print(format_regex(2))
    Explanation: [^\\n]{1,400}\\n(Answer: #1\\nRanking: #1 > #2|Answer: #2\\nRanking: #2 > #1)
    """
    if k <= 5:
        orders = [f"Answer: #{o[0]}\\nRanking: " + " > ".join(f"#{c}" for c in o)
                  for o in itertools.permutations(range(1, k + 1))]
        return r"Explanation: [^\n]{1,400}\n(" + "|".join(orders) + ")"
    return rf"Explanation: [^\n]{{1,400}}\nAnswer: #[1-{k}]\nRanking: #[1-{k}]( > #[1-{k}]){{{k - 1}}}"


def kendall_tau(a: list[int], b: list[int]) -> float:
    pos = {x: i for i, x in enumerate(b)}
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    agree = sum(pos[a[i]] < pos[a[j]] for i, j in pairs)
    return (2 * agree - len(pairs)) / len(pairs)


class RankingJudge:
    name = "judge_ranking"
    retryable = True

    def __init__(self, template: str, prompts_dir: str, backend, group_size: int = 4, second_pass: bool = False,
                 seed: int = 0, max_tokens: int = 512, temperature: float = 0.0, retry_temperature: float = 0.7,
                 use_reference: bool = True, constrain: bool = False):
        if not 2 <= group_size <= 9:
            raise ConfigError(f"reward judge: group_size={group_size} must be in 2..9 (one-digit candidate numbers)")
        self.constrain = constrain
        self.template, self.backend = Template(prompts_dir, template), backend
        self.group_size, self.second_pass, self.seed = group_size, second_pass, seed
        self.max_tokens, self.temperature, self.retry_temperature = max_tokens, temperature, retry_temperature
        self.use_reference = use_reference
        self.version = f"ranking:{self.template.version}"

    def request(self, prompt: Prompt, texts: list[str], attempt: int) -> Request:
        content = self.template.render(input=prompt.input, candidates=texts, k=len(texts),
                                       reference=prompt.reference if self.use_reference else None)
        return ranking_request(self, content, len(texts), attempt)

    def __call__(self, prompts: list[Prompt], samples: list[Sample], attempt: int = 0) -> list[Result]:
        return rank(prompts, samples, lambda p, shown, a: self.request(p, [s.text for s in shown], a), self.backend,
                    self.group_size, self.seed, self.second_pass, attempt)

    def stats(self, results: list[Result]) -> dict:
        return ranking_stats(results)


def rank(prompts: list[Prompt], samples: list, render: Callable[[Prompt, list, int], Request], backend,
         group_size: int, seed, second_pass: bool, attempt: int = 0) -> list[Result]:
    """Rank each prompt's samples in groups of at most `group_size`, shown in a seeded shuffled order.

    `render(prompt, shown, attempt)` is the judge's request for one group, its samples in display
    order; a sample needs `prompt_id`, `sample_idx` and whatever `render` reads (a ranking judge's
    text, an agent judge's trajectory). The ranking judges share this, so their shuffles, statuses
    and position-bias records are the same."""
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_prompt[s.prompt_id].append(i)
    results: list[Result | None] = [None] * len(samples)
    groups, requests = [], []
    for indices in by_prompt.values():
        if len(indices) == 1:
            results[indices[0]] = Result(None, "error", "one candidate for this prompt: nothing to rank against")
            continue
        for group in split(indices, group_size):
            shown = sorted(group, key=lambda i: samples[i].sample_idx)
            idxs = ",".join(str(samples[i].sample_idx) for i in shown)
            key = f"{seed}:{samples[shown[0]].prompt_id}:{idxs}:{attempt}"
            random.Random(key).shuffle(shown)
            passes = [shown, shown[::-1]] if second_pass else [shown]
            groups.append((shown, key))
            requests += [render(prompts[shown[0]], [samples[i] for i in order], attempt) for order in passes]
    replies = iter(ask(backend, requests))
    for shown, key in groups:
        passes = [(shown, next(replies))] + ([(shown[::-1], next(replies))] if second_pass else [])
        for i, result in score_group(samples, passes, key, second_pass).items():
            results[i] = result
    return results  # type: ignore[return-value]


def score_group(samples: list, passes: list, seed: str, second_pass: bool) -> dict[int, Result]:
    """Results for one group from its (display order, reply) passes."""
    k = len(passes[0][0])
    rankings, texts = [], []
    for order, reply in passes:
        texts.append(reply.text)
        if (bad := failed(reply)) is not None:
            return {i: bad for i in order}
        ranked, why = parse_ranking(reply.text, k)
        rankings.append([order[c - 1] for c in ranked] if ranked else None)
        if ranked is None and len(rankings) == 1:  # the first pass decides; a failed second pass is recorded
            raw = {"shown": [samples[i].sample_idx for i in order], "shuffle_seed": seed, "text": reply.text}
            return {i: Result(None, "unparsed", why, raw) for i in order}
    shown = passes[0][0]
    raw = {"shown": [samples[i].sample_idx for i in shown], "shuffle_seed": seed, "texts": texts,
           "ranking": [samples[i].sample_idx for i in rankings[0]], "first_shown_won": rankings[0][0] == shown[0]}
    if second_pass:
        second = rankings[1]
        raw["second_ranking"] = [samples[i].sample_idx for i in second] if second else None
        if second:
            raw.update(agree_best=second[0] == rankings[0][0], kendall_tau=kendall_tau(rankings[0], second))
    usable = [r for r in rankings if r is not None]
    out = {}
    for i in shown:
        places = [r.index(i) for r in usable]
        score = sum((k - 1 - p) / (k - 1) for p in places) / len(places)
        reason = "ranked " + ", ".join(f"{p + 1} of {k}" for p in places)
        out[i] = Result(score, "ok", reason, raw)
    return out


def ranking_stats(results: list[Result]) -> dict:
    """Position bias: how often the first-shown candidate wins (1/K if none), and pass agreement."""
    groups = {r.raw["shuffle_seed"]: r.raw for r in results if r.status == "ok" and r.raw}
    out = judge_stats(results)
    out["groups_ranked"] = len(groups)
    if groups:
        out["first_shown_won"] = sum(g["first_shown_won"] for g in groups.values()) / len(groups)
        out["first_shown_won_if_no_bias"] = sum(1 / len(g["shown"]) for g in groups.values()) / len(groups)
        both = [g for g in groups.values() if "agree_best" in g]
        if both:
            out["second_pass_agree_best"] = sum(g["agree_best"] for g in both) / len(both)
            out["second_pass_kendall_tau"] = sum(g["kendall_tau"] for g in both) / len(both)
    return out

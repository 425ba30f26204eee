"""The prompt-based reward model: an LLM judge driven by a Jinja template in `prompts/judge/`.

Two pointwise modes (the ranking mode is in `ranking.py`), both reward terms with
the shared signature `judge(prompts, samples, attempt=0) -> [Result]`:

- `PointwiseJudge`, one pass (G-Eval style): one token is generated and the score
  is the expected rating under the judge's probabilities of the rating tokens.
  Too little probability on the ratings: "unparsed", no score.
- `RationaleJudge`: the judge explains, then writes `Rating: N` (or the template's `label`,
  e.g. Self-Rewarding's `Score: N`); the last such line is parsed. No line, or a rating out of
  range: "unparsed", no score. With `samples: k` it is asked k times at `temperature` and the
  score is the mean of the ratings it gave (Self-Rewarding averages 3); none: "unparsed".

`constrain: true` makes a generating judge answer in the template's format (a regex
enforced by vLLM's structured outputs, locally or on a vLLM server): small judges
that cannot keep to a format otherwise (SmolLM2-135M ranks 0 of 20 groups in the
format unconstrained) then always produce a parsable answer. It guarantees the
format, not the judgement.

A template sees `input`, `completion`, `reference` (None when the task has none or
`use_reference` is off), `min_rating` and `max_rating`. The backend (`backends.py`)
is the local vLLM engine or an OpenAI-compatible endpoint; answers are cached.
"""

from __future__ import annotations

import math
import re

from rest_loop.config import ConfigError
from rest_loop.improve.backends import Reply, Request, ask
from rest_loop.improve.verifiers import Result
from rest_loop.records import Prompt, Sample
from rest_loop.templates import Template

def rating_line(label: str) -> re.Pattern:
    """`Rating: 7`, `**Rating:** 7`, `rating = 7`, ... for the label the template asks for."""
    return re.compile(rf"{re.escape(label)}\**\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def check_ratings(min_rating: int, max_rating: int) -> None:
    if not 0 <= min_rating < max_rating <= 9:
        raise ConfigError(f"reward judge: ratings {min_rating}..{max_rating} must be single digits, min < max")


def rating_messages(template: Template, prompt: Prompt, sample: Sample, use_reference: bool, low, high) -> list:
    """The chat a pointwise judge is asked: its template rendered with the sample, as one user turn."""
    text = template.render(input=prompt.input, completion=sample.text, min_rating=low, max_rating=high,
                           reference=prompt.reference if use_reference else None)
    return [{"role": "user", "content": text}]


def failed(reply: Reply) -> Result | None:
    """The judgement of a request that got no answer."""
    return Result(None, "error", reply.error) if reply.error is not None else None


def judge_stats(results: list[Result]) -> dict:
    return {"status": {s: sum(r.status == s for r in results) for s in ("ok", "unparsed", "error")}}


class PointwiseJudge:
    name = "judge_pointwise"
    retryable = False  # the rating probabilities of one prompt do not change when asked again

    def __init__(self, template: str, prompts_dir: str, backend, min_rating: int = 1, max_rating: int = 9,
                 min_rating_mass: float = 0.5, top_logprobs: int = 20, use_reference: bool = True):
        check_ratings(min_rating, max_rating)
        if not 0 < min_rating_mass <= 1:
            raise ConfigError(f"reward judge: min_rating_mass={min_rating_mass} must be in (0, 1]")
        self.template, self.backend = Template(prompts_dir, template), backend
        self.ratings = [str(r) for r in range(min_rating, max_rating + 1)]
        self.min_mass, self.top_logprobs, self.use_reference = min_rating_mass, top_logprobs, use_reference
        self.version = f"pointwise:{self.template.version}"

    def __call__(self, prompts: list[Prompt], samples: list[Sample], attempt: int = 0) -> list[Result]:
        low, high = self.ratings[0], self.ratings[-1]
        requests = [Request(rating_messages(self.template, p, s, self.use_reference, low, high), max_tokens=1,
                            top_logprobs=self.top_logprobs, attempt=attempt) for p, s in zip(prompts, samples)]
        return [failed(reply) or self.score(reply.top_logprobs or {}) for reply in ask(self.backend, requests)]

    def score(self, top: dict[str, float]) -> Result:
        probs = {r: 0.0 for r in self.ratings}
        for token, logprob in top.items():
            if token.strip() in probs:
                probs[token.strip()] += math.exp(logprob)
        mass = sum(probs.values())
        raw = {"top": dict(sorted(top.items(), key=lambda kv: -kv[1])[:5]), "rating_probs": probs}
        if mass < self.min_mass:
            return Result(None, "unparsed", f"only {mass:.0%} of the judge's probability is on ratings "
                                            f"{self.ratings[0]}-{self.ratings[-1]}", raw)
        expected = sum(int(r) * p for r, p in probs.items()) / mass
        low, high = int(self.ratings[0]), int(self.ratings[-1])
        return Result((expected - low) / (high - low), "ok", f"expected rating {expected:.2f}", raw)

    def stats(self, results: list[Result]) -> dict:
        return judge_stats(results)


class RationaleJudge:
    name = "judge_rationale"
    retryable = True  # a sampled re-ask (retry_temperature) can produce the missing rating line

    def __init__(self, template: str, prompts_dir: str, backend, min_rating: int = 1, max_rating: int = 9,
                 max_tokens: int = 256, temperature: float = 0.0, retry_temperature: float = 0.7,
                 use_reference: bool = True, constrain: bool = False, label: str = "Rating", samples: int = 1):
        check_ratings(min_rating, max_rating)
        if samples < 1 or (samples > 1 and temperature <= 0):
            raise ConfigError(f"reward judge: samples={samples} needs samples >= 1, and temperature > 0 when > 1 "
                              f"(greedy judgements would all be the same); temperature={temperature}")
        if not re.fullmatch(r"\w+", label):
            raise ConfigError(f"reward judge: label={label!r} must be one word, e.g. Rating or Score")
        self.template, self.backend = Template(prompts_dir, template), backend
        self.low, self.high, self.label, self.samples = min_rating, max_rating, label, samples
        self.line = rating_line(label)
        # an explanation line of at most 400 characters (well inside max_tokens), then the rating line
        self.regex = rf"[^\n]{{1,400}}\n{label}: [{min_rating}-{max_rating}]" if constrain else None
        self.max_tokens, self.temperature, self.retry_temperature = max_tokens, temperature, retry_temperature
        self.use_reference = use_reference
        extra = (f":{label}" if label != "Rating" else "") + (f":x{samples}@{temperature}" if samples > 1 else "")
        self.version = f"rationale:{self.template.version}{extra}"

    def __call__(self, prompts: list[Prompt], samples: list[Sample], attempt: int = 0) -> list[Result]:
        temperature = self.temperature if attempt == 0 else self.retry_temperature
        requests = [Request(rating_messages(self.template, p, s, self.use_reference, self.low, self.high),
                            max_tokens=self.max_tokens, temperature=temperature, regex=self.regex, attempt=attempt,
                            draw=k)
                    for p, s in zip(prompts, samples) for k in range(self.samples)]
        replies = ask(self.backend, requests)
        return [self.combine([failed(r) or self.parse(r) for r in replies[i:i + self.samples]])
                for i in range(0, len(replies), self.samples)]

    def combine(self, results: list[Result]) -> Result:
        """One sample's judgement from its k draws: the mean of the ratings that parsed."""
        if len(results) == 1:
            return results[0]
        ok = [r for r in results if r.status == "ok"]
        raw = {"draws": [{"score": r.score, "status": r.status, "reason": r.reason, "raw": r.raw} for r in results]}
        if not ok:
            status = "error" if all(r.status == "error" for r in results) else "unparsed"
            return Result(None, status, f"none of {len(results)} judgements gave a rating: {results[0].reason}", raw)
        mean = sum(r.score for r in ok) / len(ok)
        return Result(mean, "ok", f"mean of {len(ok)} of {len(results)} ratings", raw)

    def parse(self, reply: Reply) -> Result:
        raw = {"text": reply.text, "finish_reason": reply.finish_reason}
        found = self.line.findall(reply.text or "")
        if not found:
            cut = " (the answer was cut off at max_tokens)" if reply.finish_reason == "length" else ""
            return Result(None, "unparsed", f"no '{self.label}: N' line{cut}", raw)
        rating = float(found[-1])
        if rating != int(rating) or not self.low <= rating <= self.high:
            return Result(None, "unparsed", f"rating {found[-1]} is not an integer in {self.low}..{self.high}", raw)
        return Result((rating - self.low) / (self.high - self.low), "ok", f"rating {int(rating)}", raw)

    def stats(self, results: list[Result]) -> dict:
        return judge_stats(results)

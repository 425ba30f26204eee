"""The prompt-based reward model: an LLM judge driven by a Jinja template in `prompts/judge/`.

Pointwise, one pass (G-Eval style): the judge sees the task input, the completion
and the reference where there is one, and we read its next-token distribution
over the rating tokens. The score is the expected rating rescaled to [0, 1]. When
the judge puts too little probability on any rating, the judgement is
"unparsed": it gets no score rather than a fake one.
"""

from __future__ import annotations

import math
from typing import Any

from rest_loop.config import ModelConfig
from rest_loop.engine import Engine, get_engine
from rest_loop.improve.verifiers import Result
from rest_loop.models import resolve_model
from rest_loop.records import Prompt, Sample
from rest_loop.templates import Template


class PointwiseJudge:
    name = "judge"

    def __init__(self, template: str, prompts_dir: str, model: Any, seed: int = 0,
                 min_rating: int = 1, max_rating: int = 9, min_rating_mass: float = 0.5, top_logprobs: int = 20):
        if not 0 <= min_rating < max_rating <= 9:
            raise ValueError(f"reward judge: ratings {min_rating}..{max_rating} must be single digits, min < max")
        if not 0 < min_rating_mass <= 1:
            raise ValueError(f"reward judge: min_rating_mass={min_rating_mass} must be in (0, 1]")
        self.template = Template(prompts_dir, template)
        self.model = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        self.seed = seed
        self.ratings = [str(r) for r in range(min_rating, max_rating + 1)]
        self.min_mass, self.top_logprobs = min_rating_mass, top_logprobs
        self.version = self.template.version

    def engine(self) -> Engine:
        return get_engine(resolve_model(self.model.source, self.model.cache_dir), self.model, self.seed)

    def render(self, engine: Engine, prompt: Prompt, sample: Sample) -> str:
        text = self.template.render(input=prompt.input, completion=sample.text, reference=prompt.reference,
                                    min_rating=self.ratings[0], max_rating=self.ratings[-1])
        return engine.chat_prompt([{"role": "user", "content": text}])

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        engine = self.engine()
        tops = engine.next_token_logprobs([self.render(engine, p, s) for p, s in zip(prompts, samples)],
                                          k=self.top_logprobs)
        return [self.score(top) for top in tops]

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

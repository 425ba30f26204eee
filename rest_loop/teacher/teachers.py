"""The two teachers: another local model on the vLLM engine, or an OpenAI-compatible endpoint.

Both draw `sampler.n` samples per train prompt and hand them to the pool cache as a policy's
Grow does, so a repeated run or a resume asks nothing twice:

    samples = teacher.grow(prompts, sampler, round=1, pools=pools)

The local teacher is the policy's own Grow (rest_loop.grow) with another model's engine, so its
pools are keyed by its weights. The endpoint teacher sends each sample as its own request through
the judge's client (rest_loop.improve.backends): the same retries, budget, key handling and reply
cache. A budget stop raises JudgeStopped with every answer so far cached; `rest-loop resume=<run
dir>` asks only the rest.
"""

from __future__ import annotations

import hashlib
import json

from rest_loop.config import ConfigError, ModelConfig, SamplerConfig, check
from rest_loop.engine import Policy, get_engine
from rest_loop.grow import grow
from rest_loop.improve.backends import JudgeStopped, OpenAIBackend, Request, ask
from rest_loop.models import resolve_model
from rest_loop.pools import Pools
from rest_loop.records import Prompt, Sample


class LocalTeacher:
    """Another model on this process's vLLM machinery (its own engine, or the policy's if it is the same model)."""

    def __init__(self, model: ModelConfig | dict, rounds: list[int], seed: int = 0):
        try:
            self.model = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        except ConfigError as e:  # ModelConfig names its keys model.*: here they are teacher.model.*
            raise ConfigError(f"teacher.{e}") from None
        self.rounds, self.seed = list(rounds), seed
        self.policy = Policy(f"teacher:{self.model.source}")  # the base weights of the teacher: no adapter
        self.name = self.policy.name

    def grow(self, prompts: list[Prompt], sampler: SamplerConfig, round: int,
             pools: Pools | None = None) -> list[Sample]:
        engine = get_engine(resolve_model(self.model.source, self.model.cache_dir, self.model.allow_pickle),
                            self.model, self.seed)
        return grow(engine, self.policy, prompts, sampler, round, pools)


class EndpointTeacher:
    """An OpenAI-compatible chat endpoint; `client` holds OpenAIBackend's settings (conf/teacher/openai.yaml).

    The endpoint is sent the prompt's chat messages, the sampler's temperature and max_tokens, one
    request per sample (`Request.draw` numbers them, so each is its own cache entry); top_p and top_k
    are not sent."""

    def __init__(self, rounds: list[int], seed: int = 0, **client):
        check("teacher.model", bool(client.get("model")), "name the endpoint's model", client.get("model"))
        self.backend = OpenAIBackend(**client, key="teacher")
        self.rounds, self.seed = list(rounds), seed
        self.name = f"teacher:{self.backend.model}"

    def grow(self, prompts: list[Prompt], sampler: SamplerConfig, round: int,
             pools: Pools | None = None) -> list[Sample]:
        params = {"n": sampler.n, "temperature": sampler.temperature, "max_tokens": sampler.max_tokens}  # as sent
        drawn = [(p, i) for p in prompts for i in range(sampler.n)]

        def make() -> list[Sample]:
            replies = ask(self.backend, [Request(p.messages, max_tokens=sampler.max_tokens,
                                                 temperature=sampler.temperature, draw=i) for p, i in drawn])
            failed = [r.error for r in replies if r.error is not None]
            if failed:  # a pool with holes would be cached as if whole: stop, and let a resume re-ask these
                raise JudgeStopped(f"teacher {self.backend.model} at {self.backend.base_url}: {len(failed)} of "
                                   f"{len(replies)} requests failed (first: {failed[0]}); the answered ones are cached")
            return [Sample(round=round, prompt_id=p.id, sample_idx=i, text=r.text, num_tokens=r.tokens or 0,
                           policy=self.name, seed=self.seed, sampling=params, finish_reason=r.finish_reason)
                    for (p, i), r in zip(drawn, replies)]

        if pools is None:
            return make()
        return pools.fetch(self.pool_inputs(prompts, params), make, round, self.name)

    def pool_inputs(self, prompts: list[Prompt], params: dict) -> dict:
        """What decides the pool: the endpoint's model (never a policy's weights), the messages and the sampling."""
        messages = json.dumps([[p.id, p.messages] for p in prompts], ensure_ascii=False)
        return {"teacher": self.backend.identity, "prompts": hashlib.sha256(messages.encode()).hexdigest(),
                "num_prompts": len(prompts), "sampling": params}

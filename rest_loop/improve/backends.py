"""Where a judge's prompts go: the local vLLM engine, or any OpenAI-compatible endpoint.

Both backends take chat `Request`s and give back one `Reply` each, in order:

    replies = ask(backend, [Request(messages, max_tokens=1, top_logprobs=20), ...])

`ask` answers from the on-disk cache first and sends only the rest; each answer is
cached as it arrives, so a crash or a stop loses only requests in flight. A reply
with `error` set is a request that failed for that sample (the judgement becomes
"error"); it is never cached. When the judge cannot go on at all (the endpoint is
down after every retry, the key is refused, the budget is spent) `ask` raises
`JudgeStopped`: the run stops cleanly and `rest-loop resume=<run dir>` re-asks only
what was not answered.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from rest_loop.config import ConfigError, ModelConfig
from rest_loop.engine import BASE, Policy, get_engine, logaddexp
from rest_loop.improve.cache import ReplyCache, cache_key

log = logging.getLogger(__name__)


class JudgeStopped(RuntimeError):
    """The judge cannot go on; what it answered is cached and a resume continues from there."""


@dataclass
class Request:
    messages: list[dict[str, str]]
    max_tokens: int = 1
    temperature: float = 0.0
    top_logprobs: int = 0  # > 0: also return the first token's top alternatives
    regex: str | None = None  # constrain the answer to this pattern (vLLM's structured outputs)
    attempt: int = 0  # re-asking an unparsed answer is a new request with its own cache entry
    draw: int = 0  # the k-th of several sampled judgements of one sample: each its own request and cache entry


@dataclass
class Reply:
    text: str | None = None
    top_logprobs: dict[str, float] | None = None  # first token: {decoded text: logprob}
    finish_reason: str | None = None
    tokens: int | None = None  # completion tokens, where the backend says (a teacher's sample records them)
    error: str | None = None  # the request failed; no answer, never cached
    cached: bool = False


@dataclass
class Usage:
    """What the judge cost in this process: written to improve/stats.json."""

    requests: int = 0  # sent, retries included
    answered: int = 0
    cached: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def ask(backend, requests: list[Request]) -> list[Reply]:
    """Answer `requests` from the cache, send the rest once each, cache each answer as it arrives."""
    replies: list[Reply | None] = [None] * len(requests)
    keys = [cache_key(backend.identity, asdict(r)) for r in requests]
    todo: dict[str, list[int]] = {}  # identical requests (repeated completions) are sent once
    for i, key in enumerate(keys):
        hit = backend.cache.get(key) if backend.cache else None
        if hit is not None:
            replies[i] = Reply(**hit, cached=True)
        else:
            todo.setdefault(key, []).append(i)
    backend.usage.cached += sum(r is not None for r in replies)
    unique = list(todo)

    def on_reply(j: int, reply: Reply) -> None:
        for i in todo[unique[j]]:
            replies[i] = reply
        if reply.error is None and backend.cache is not None:
            backend.cache.put(unique[j], {k: v for k, v in asdict(reply).items() if k != "cached"})

    if unique:
        start = time.perf_counter()
        try:
            backend.send([requests[todo[key][0]] for key in unique], on_reply)
        finally:
            backend.usage.seconds += time.perf_counter() - start
    return replies  # type: ignore[return-value]


class LocalBackend:
    """The judge runs in this process's vLLM engine (shared with the policy when it is the same model).

    It judges with the base weights, never the round's adapter: the reward model stays fixed."""

    def __init__(self, model: ModelConfig | dict, seed: int = 0, cache: str | None = None, chunk: int = 256):
        self.model = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        self.seed, self.chunk = seed, chunk  # answers are cached after each chunk
        self.identity = {"backend": "vllm", "model": self.model.source, "seed": seed, "dtype": self.model.dtype}
        self.cache = ReplyCache(cache) if cache else None
        self.usage = Usage()

    def send(self, requests: list[Request], on_reply: Callable[[int, Reply], None]) -> None:
        from rest_loop.models import resolve_model

        engine = get_engine(resolve_model(self.model.source, self.model.cache_dir, self.model.allow_pickle), self.model, self.seed)
        policy = self.policy()
        with tqdm(total=len(requests), desc="judge (local vLLM)", unit="req") as bar:
            for start in range(0, len(requests), self.chunk):
                batch = requests[start:start + self.chunk]
                # vLLM takes one SamplingParams per call: group the batch by its params
                groups: dict[tuple, list[int]] = {}
                for i, r in enumerate(batch):
                    groups.setdefault((r.max_tokens, r.temperature, r.top_logprobs, r.regex), []).append(i)
                for (max_tokens, temperature, k, regex), idx in groups.items():
                    params = {"n": 1, "max_tokens": max_tokens, "temperature": temperature}
                    if k:
                        params["logprobs"] = k
                    if regex:
                        from vllm.sampling_params import StructuredOutputsParams

                        params["structured_outputs"] = StructuredOutputsParams(regex=regex)
                    prompts = [engine.chat_prompt(batch[i].messages) for i in idx]
                    outs = engine.generate(prompts, params, policy, use_tqdm=False)
                    for i, out in zip(idx, outs):
                        c = out[0]
                        self.usage.requests += 1
                        self.usage.answered += 1
                        self.usage.completion_tokens += len(c.token_ids)
                        on_reply(start + i, Reply(c.text, c.top_logprobs, c.finish_reason, len(c.token_ids)))
                bar.update(len(batch))


    def policy(self) -> Policy:
        return BASE


class PolicyBackend(LocalBackend):
    """The policy judges its own samples (Self-Rewarding LMs): the local engine with the adapter of the policy
    that grew the round, which the loop sets with `use(policy)` before it judges. The reply cache keys on that
    adapter, so one round's judgements are never another's."""

    def __init__(self, model: ModelConfig | dict, seed: int = 0, cache: str | None = None, chunk: int = 256):
        super().__init__(model, seed, cache, chunk)
        self.base_identity, self.judging = dict(self.identity), BASE

    def use(self, policy: Policy) -> None:
        if policy.model is not None:
            raise ConfigError("judge=policy: the policy judges through the base engine with its LoRA adapter; a "
                              "fully fine-tuned policy (trainer.method=full) has its own engine: use trainer=lora")
        self.judging = policy
        from rest_loop.pools import folder_digest

        weights = policy.output
        self.identity = {**self.base_identity, "policy": policy.name,
                         "weights": folder_digest(weights) if weights else None}  # what judges, by content

    def policy(self) -> Policy:
        return self.judging


@dataclass
class _Budget:
    requests: int | None
    tokens: int | None
    key: str = "judge"  # where the budget is set: judge or teacher
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spent(self, usage: Usage) -> str | None:
        if self.requests is not None and usage.requests >= self.requests:
            return f"request budget spent ({usage.requests} of {self.key}.budget_requests={self.requests})"
        tokens = usage.prompt_tokens + usage.completion_tokens
        if self.tokens is not None and tokens >= self.tokens:
            return f"token budget spent ({tokens} of {self.key}.budget_tokens={self.tokens})"
        return None


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (OpenAI, `vllm serve`, a proxy), through the `openai` client.

    The API key is read from the environment variable named by `api_key_env`, never from the
    config. Requests run `max_concurrency` at a time, each with a `timeout`; 429s, 5xx,
    timeouts, dropped connections and unreadable responses are retried `max_retries` times
    with exponential backoff (honouring Retry-After). `budget_requests` (retries count) and
    `budget_tokens` bound what one process may spend; requests in flight may overshoot the
    token budget a little. `key` is the config key the settings live under (judge, or teacher
    for Grow's teacher), so that a message names the setting to change.
    """

    TRANSIENT = ("APITimeoutError", "APIConnectionError", "RateLimitError", "InternalServerError")
    FATAL = ("AuthenticationError", "PermissionDeniedError", "NotFoundError")  # no retry will help
    FIX = {  # what to change when that error stopped the judge or teacher
        "APITimeoutError": "no answer within {key}.timeout={timeout:g} s: raise {key}.timeout or lower "
                           "{key}.max_concurrency",
        "APIConnectionError": "nothing answers at {key}.base_url={base_url}: start the server or fix the URL",
        "RateLimitError": "the endpoint keeps refusing with 429: lower {key}.max_concurrency or raise {key}.backoff",
        "InternalServerError": "the endpoint keeps failing: check the server, or wait longer with {key}.max_retries",
        "AuthenticationError": "the key was refused: check the environment variable {key}.api_key_env={api_key_env}",
        "PermissionDeniedError": "the key may not use this model: check {key}.model={model} and the key",
        "NotFoundError": "no such model or route: check {key}.model={model} and {key}.base_url={base_url}",
    }

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0,
                 max_backoff: float = 30.0, budget_requests: int | None = None,
                 budget_tokens: int | None = None, cache: str | None = None, key: str = "judge"):
        import openai

        if max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError(f"{key}: max_concurrency >= 1, max_retries >= 0 and timeout > 0 are required")
        api_key = "EMPTY"  # vllm serve without --api-key accepts any key
        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
            if not api_key:
                raise ConfigError(f"{key}.api_key_env={api_key_env!r}: that environment variable is not set "
                                 f"(set it, or set {key}.api_key_env=null for a server without a key)")
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.model, self.base_url = model, base_url
        self.max_concurrency, self.max_retries, self.timeout = max_concurrency, max_retries, timeout
        self.api_key_env, self.key = api_key_env, key
        self.backoff, self.max_backoff = backoff, max_backoff
        self.budget = _Budget(budget_requests, budget_tokens, key)
        self.identity = {"backend": "openai", "model": model}  # not the URL: the same model elsewhere answers alike
        self.cache = ReplyCache(cache) if cache else None
        self.usage = Usage()
        self._stop: str | None = None

    def send(self, requests: list[Request], on_reply: Callable[[int, Reply], None]) -> None:
        self._stop = None
        with tqdm(total=len(requests), desc=f"{self.key} ({self.model})", unit="req") as bar:
            def work(i: int) -> None:
                if self._stop is None:
                    reply = self._one(requests[i])
                    if reply is not None:
                        on_reply(i, reply)
                bar.update(1)

            with ThreadPoolExecutor(self.max_concurrency) as pool:
                list(pool.map(work, range(len(requests))))
        if self._stop is not None:
            raise JudgeStopped(f"{self.key} {self.model} at {self.base_url}: {self._stop}")

    def _one(self, request: Request) -> Reply | None:
        """One request with retries; None when the whole judge must stop (self._stop says why)."""
        import openai

        kwargs: dict[str, Any] = dict(model=self.model, messages=request.messages, max_tokens=request.max_tokens,
                                      temperature=request.temperature)
        if request.top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=request.top_logprobs)
        if request.regex:  # a vLLM server's structured outputs; other servers refuse it (HTTP 400)
            kwargs["extra_body"] = {"structured_outputs": {"regex": request.regex}}
        for attempt in range(self.max_retries + 1):
            with self.budget.lock:
                if self._stop is None:
                    self._stop = self.budget.spent(self.usage)
                if self._stop is not None:
                    return None
                self.usage.requests += 1
                self.usage.retries += attempt > 0
            try:
                response = self.client.chat.completions.create(**kwargs)
                reply = parse_response(response)
            except openai.APIStatusError as e:
                name, why, retry_after = type(e).__name__, f"HTTP {e.status_code}: {e.message}", _retry_after(e)
            except openai.APIError as e:  # timeouts, refused connections, unreadable bodies
                name, why, retry_after = type(e).__name__, f"{type(e).__name__}: {e}", None
            except ValueError as e:  # a 200 whose JSON is broken or lacks choices
                name, why, retry_after = "malformed", f"unreadable response: {e}", None
            else:
                with self.budget.lock:
                    self.usage.answered += 1
                    if response.usage is not None:
                        self.usage.prompt_tokens += response.usage.prompt_tokens or 0
                        self.usage.completion_tokens += response.usage.completion_tokens or 0
                return reply
            if name in self.FATAL:
                self._stop = f"{why}; {self.fix(name)}"
                return None
            transient = name in self.TRANSIENT or name == "malformed"
            if not transient or attempt == self.max_retries:
                break
            delay = retry_after if retry_after is not None else min(self.max_backoff, self.backoff * 2 ** attempt)
            log.debug("%s request failed (%s); retry %d in %.2f s", self.key, why, attempt + 1, delay)
            time.sleep(delay * (0.5 + random.random() / 2) if retry_after is None else delay)
        if name in self.TRANSIENT:  # still unreachable or overloaded after every retry: stop, resume later
            self._stop = f"{why} (after {self.max_retries} retries); {self.fix(name)}"
            return None
        with self.budget.lock:
            self.usage.errors += 1
        return Reply(error=why)

    def fix(self, name: str) -> str:
        return self.FIX[name].format(timeout=self.timeout, base_url=self.base_url, api_key_env=self.api_key_env,
                                     model=self.model, key=self.key)


def parse_response(response) -> Reply:
    if not getattr(response, "choices", None):
        raise ValueError("no choices in the response")
    choice = response.choices[0]
    top = None
    content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
    if content:
        top = {}
        for alt in content[0].top_logprobs or []:
            # two token ids can decode to the same text: add their probability mass
            top[alt.token] = logaddexp(top[alt.token], alt.logprob) if alt.token in top else alt.logprob
    tokens = getattr(response.usage, "completion_tokens", None)  # of all choices; we ask for one
    return Reply(choice.message.content or "", top, choice.finish_reason, tokens)


def _retry_after(e) -> float | None:
    try:
        return float(e.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None

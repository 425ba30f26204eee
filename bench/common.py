"""What every benchmark shares: the model, the demo's prompts and sampler, timing, and the BENCH line.

A benchmark runs our code and a peer on the same input in one invocation, alternating their
repetitions (A B B A ...) so that drift on a noisy machine falls on both, and reports medians
and the ratio ours/peer. Ratios are the result; absolute times are context.

The last line a benchmark prints is `BENCH <compact JSON>`; `bench/run_all.py` keeps those lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ on the path, not the project
    sys.path.insert(0, str(ROOT))

CONF = ROOT / "conf"
PROMPTS = ROOT / "prompts"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1-3 minutes: for development")
    p.add_argument("--reps", type=int, default=None, help="repetitions of each side (default: per benchmark)")
    return p


# --- the model and the demo's inputs ------------------------------------------------------------------

def model_path() -> str:
    """The demo's model as a local HF folder (the embedded GGUF, converted once into the model cache)."""
    from rest_loop.models import resolve_model

    model = demo_config().model
    return resolve_model(model.source, Path(model.cache_dir).expanduser())


def yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


BLOCK_SIZE: list[int | None] = [None]  # what --block-size asks for; None: the config's


@functools.cache
def demo_config():
    """The demo's whole config as `rest-loop experiment=demo` composes it: checked and typed (RunConfig)."""
    from hydra import compose, initialize_config_dir

    from rest_loop.config import validate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("config", overrides=["experiment=demo", "paths.run_dir=unused"]))


def model_config():
    """The demo's ModelConfig (conf/model/smollm2_135m.yaml: its explicit 3 GiB KV cache, max_model_len)
    on the converted model folder, with the KV block size of --block-size where a script was given one."""
    block = {"block_size": BLOCK_SIZE[0]} if BLOCK_SIZE[0] else {}
    return dataclasses.replace(demo_config().model, source=model_path(), **block)


def demo_sampler(**overrides):
    """The demo's Grow sampler (conf/sampler/default.yaml with conf/experiment/demo.yaml on top)."""
    return dataclasses.replace(demo_config().sampler, **overrides)


def demo_trainer(**overrides):
    """The demo's TrainerConfig (conf/trainer/lora.yaml with the demo's overrides, seed 0)."""
    return dataclasses.replace(demo_config().trainer, **overrides)


def arithmetic_prompts(n: int):
    """The demo's first `n` train prompts (the held-out 100 are drawn first, as in the demo)."""
    from rest_loop.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask(n_train=n, n_heldout=100, seed=0, prompts_dir=str(PROMPTS)).train


def engine():
    """Our engine (rest_loop.engine.get_engine) on the embedded model, seed 0, as the loop builds it:
    on CPU with vLLM's engine core in this process (rest_loop.loop.Run.engine)."""
    from rest_loop.engine import get_engine, in_process_core, on_gpu

    if not on_gpu():
        in_process_core()
    return get_engine(model_path(), model_config(), seed=0)


# --- timing -------------------------------------------------------------------------------------------

@contextmanager
def timed(into: list[float]):
    start = time.perf_counter()
    try:
        yield
    finally:
        into.append(time.perf_counter() - start)


def alternate(sides: dict[str, Callable[[], Any]], reps: int) -> dict[str, list]:
    """Run each side `reps` times, order reversed every other repetition (A B, B A, A B, ...),
    so that a slow spell on the machine falls on both. Returns each side's results in order."""
    names = list(sides)
    out: dict[str, list] = {n: [] for n in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            out[name].append(sides[name]())
    return out


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paired_ratio(ours: list[float], peer: list[float]) -> float | None:
    """The median over repetitions of ours[i] / peer[i]: robust to drift between repetitions."""
    return median([a / b for a, b in zip(ours, peer) if b])


def ratio_entry(value: float | None, target: str | None = None) -> dict:
    """A ratio with its target (e.g. '>=0.95') and whether it was met; run_all tabulates these."""
    met = None
    if value is not None and target:
        op, bound = (target[:2], float(target[2:])) if target[:2] in (">=", "<=") else (None, None)
        met = value >= bound if op == ">=" else value <= bound if op == "<=" else None
    return {"value": None if value is None else round(value, 4), "target": target, "met": met}


# --- prefill accounting ----------------------------------------------------------------------------------

class PrefillCounter:
    """Prompt tokens submitted to vLLM vs prefilled by compute vs read from the prefix cache.

    vLLM's engine core sends each request's PrefillStats with its first output; the frontend's
    OutputProcessor reads them. RequestOutput.num_cached_tokens keeps only one child's count when
    n > 1, so this wraps OutputProcessor.process_outputs and sums over every (child) request."""

    def __init__(self):
        self.submitted = self.computed = self.cached = self.requests = 0

    def __enter__(self):
        from vllm.v1.engine.output_processor import OutputProcessor

        self._cls, self._orig = OutputProcessor, OutputProcessor.process_outputs
        counter = self

        def process_outputs(proc, engine_core_outputs, *args, **kwargs):
            for o in engine_core_outputs:
                s = getattr(o, "prefill_stats", None)
                if s is not None:
                    counter.requests += 1
                    counter.submitted += s.num_prompt_tokens
                    counter.computed += s.num_computed_tokens
                    counter.cached += s.num_cached_tokens
            return counter._orig(proc, engine_core_outputs, *args, **kwargs)

        OutputProcessor.process_outputs = process_outputs
        return self

    def __exit__(self, *exc):
        self._cls.process_outputs = self._orig

    def summary(self) -> dict:
        return {"requests": self.requests, "submitted": self.submitted, "computed": self.computed,
                "cached": self.cached,
                "computed_fraction": round(self.computed / self.submitted, 4) if self.submitted else None}


# --- memory of a process tree ------------------------------------------------------------------------

class TreeRSS:
    """Peak of the summed RSS of a process and all its descendants, sampled every `every` seconds
    (vLLM runs its engine core in a child process; RUSAGE_CHILDREN would report only the largest one)."""

    def __init__(self, pid: int, every: float = 0.25):
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 3)


def run_side(script: str, side: str, tmp: Path, *flags: str) -> dict:
    """Run one side of a benchmark in a fresh process (`script --child SIDE --result FILE ...flags`); its wall
    time and its own peak RSS (wait4) join the result the child wrote."""
    result = tmp / f"{side}.json"
    cmd = [sys.executable, script, "--child", side, "--result", str(result), *flags]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sys.stderr)  # its logs and bars to stderr: stdout stays readable
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{side} failed with exit code {code}: {' '.join(cmd)}")
    out = json.loads(result.read_text())
    out.update(wall_s=time.perf_counter() - start, peak_rss_gib=gib(usage.ru_maxrss * 1024))
    return out


# --- reporting -------------------------------------------------------------------------------------------

def git_sha() -> str | None:
    """The commit, short, with +dirty where rest_loop/ has uncommitted changes."""
    from rest_loop.manifest import git_sha as head

    sha = head()
    if not sha:
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rest_loop"], capture_output=True, text=True,
                               cwd=ROOT, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return sha[:7] + ("+dirty" if dirty else "")


def line(label: str, value: Any, note: str = "") -> None:
    """One readable result line."""
    print(f"  {label:<44} {value}{'  ' + note if note else ''}", flush=True)


def emit(bench: str, args: argparse.Namespace, ratios: dict[str, dict], metrics: dict) -> dict:
    """Print the BENCH line: one compact JSON object, the thing that is kept."""
    from rest_loop.manifest import versions

    record = {
        "bench": bench,
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "git": git_sha(),
        "cpus": len(os.sched_getaffinity(0)),
        "quick": bool(getattr(args, "quick", False)),
        "args": {k: v for k, v in vars(args).items() if v is not None},
        "versions": versions(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_") and "LOGGING" not in k},
        "ratios": ratios,
        "metrics": metrics,
    }
    print("BENCH " + json.dumps(record, separators=(",", ":"), default=str), flush=True)
    return record


def quiet() -> None:
    """Keep vLLM's and transformers' info logs out of the readable lines (warnings stay)."""
    import logging

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # vLLM logs to stdout by default
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("vllm", "transformers", "rest_loop", "datasets", "peft", "trl"):
        logging.getLogger(name).setLevel(logging.WARNING)

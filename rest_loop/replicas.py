"""`model.data_parallel_size=N`: N vLLM engines, each in its own process, sharing every generate call.

vLLM's offline `LLM(data_parallel_size=N)` refuses to start ("not supported for single-process usage and may
hang"; vLLM 0.32, CPU and GPU alike) and points to running one engine per process. `Replicas` does that
behind the `Engine` interface: a call's prompts are cut into N contiguous shares, replica i generates share
i, and the completions come back in prompt order. On a CPU each replica is pinned to its share of the cores,
on GPUs each gets `model.tensor_parallel_size` of them (CUDA_VISIBLE_DEVICES). On a CPU the replicas also
share the RAM that one engine would reserve (`model.gpu_memory_utilization`, `model.kv_cache_gb`): two engines
that each took half of it were killed for memory.

A replica's draw is a function of its share and a seed derived from the call's, so a pool is the same on
every run with the same N, but not the pool one engine draws: each replica batches its share alone, and
vLLM-CPU has no per-request seeds. Greedy completions do not depend on it (tests/test_scaleout.py).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import multiprocessing
import os
import time
import traceback
from typing import Any

from rest_loop.config import ModelConfig
from rest_loop.engine import BASE, Completion, Policy, draw_seed, on_gpu

log = logging.getLogger(__name__)


def shares(count: int, parts: int) -> list[range]:
    """`count` items cut into `parts` contiguous ranges whose sizes differ by at most one, larger first.

    >>> shares(5, 2)
    [range(0, 3), range(3, 5)]
    """
    size, extra = divmod(count, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def devices(replicas: int, per_replica: int, gpu: bool) -> list[dict[str, str]]:
    """Each replica's environment: its CPU cores (vLLM-CPU's thread binding) or its GPUs."""
    if gpu:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        import torch

        ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if len(ids) < replicas * per_replica:
            raise RuntimeError(f"model.data_parallel_size={replicas} x tensor_parallel_size={per_replica} needs "
                               f"{replicas * per_replica} GPUs; {len(ids)} are visible")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(ids[i * per_replica:(i + 1) * per_replica])} for i in range(replicas)]
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < replicas:
        raise RuntimeError(f"model.data_parallel_size={replicas}: more replicas than the {len(cores)} CPU cores")
    return [{"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, (cores[j] for j in part))),
             "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"} for part in shares(len(cores), replicas)]


def serve(conn, path: str, model: ModelConfig, seed: int, env: dict[str, str]) -> None:
    """A replica: one Engine in this process, answering (method, kwargs) messages until "close"."""
    os.environ.update(env)
    if "VLLM_CPU_OMP_THREADS_BIND" in env:  # every thread of the replica on its cores, not only vLLM's OpenMP ones
        os.sched_setaffinity(0, {int(c) for c in env["VLLM_CPU_OMP_THREADS_BIND"].split(",")})
    try:
        from rest_loop.engine import Engine

        engine = Engine(path, model, seed)
        conn.send(("ok", {"startup_s": engine.startup_s, "identity": engine.identity,
                          "block_size": engine.block_size, "max_model_len": engine.max_model_len}))
    except BaseException:  # noqa: BLE001 - the parent raises it, with this traceback
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        method, kwargs = conn.recv()
        try:
            result = getattr(engine, method)(**kwargs)
            conn.send(("ok", result))
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))
        if method == "close":
            return


class Replicas:
    """N engine processes with the `Engine` interface (see the module docstring)."""

    def __init__(self, path: str, model: ModelConfig, seed: int):
        from transformers import AutoTokenizer

        count, gpu = model.data_parallel_size, on_gpu()
        single = dataclasses.replace(model, data_parallel_size=1)
        if not gpu:  # the replicas share the machine's RAM: together they take what one engine would
            single = dataclasses.replace(single, gpu_memory_utilization=model.gpu_memory_utilization / count,
                                         kv_cache_gb=model.kv_cache_gb and model.kv_cache_gb / count)
        spawn = multiprocessing.get_context("spawn")  # vLLM and torch do not survive a fork
        start = time.perf_counter()
        self.conns, self.procs = [], []
        for env in devices(count, model.tensor_parallel_size, gpu):
            ours, theirs = spawn.Pipe()
            # not a daemon: a replica whose engine core runs in a process of its own (trainer=full, GPUs) starts it
            proc = spawn.Process(target=serve, args=(theirs, path, single, seed, env), daemon=False,
                                 name=f"rest-loop-replica-{len(self.procs)}")
            proc.start()
            theirs.close()  # the child's end lives in the child only: its death reads as EOF here
            self.conns.append(ours)
            self.procs.append(proc)
        atexit.register(self.close)  # before multiprocessing's own exit handler joins the replicas
        first = self.gather(range(count), "starting")[0]
        self.startup_s = time.perf_counter() - start
        self.path, self.seed, self.count = path, seed, count
        self.identity = {**first["identity"], "data_parallel_size": count}  # part of the pool cache's key
        self.block_size, self.max_model_len = first["block_size"], first["max_model_len"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        log.info("%d vLLM engine replicas for %s up in %.1f s", count, path, self.startup_s)

    def gather(self, which, doing: str) -> list[Any]:
        """Each replica's answer, in order; a replica's error (or death) is raised with its traceback."""
        results = []
        for i in which:
            try:
                status, value = self.conns[i].recv()
            except EOFError:
                raise RuntimeError(f"engine replica {i} died while {doing} (exit code {self.procs[i].exitcode})") from None
            if status != "ok":
                raise RuntimeError(f"engine replica {i} failed while {doing}:\n{value}")
            results.append(value)
        return results

    def call(self, method: str, which=None, **kwargs) -> list[Any]:
        which = range(self.count) if which is None else which
        for i in which:
            self.conns[i].send((method, kwargs))
        return self.gather(which, method)

    def generate(self, prompts: list, params: dict[str, Any], policy: Policy = BASE, use_tqdm: bool = True,
                 seed: int | None = None, fresh_cache: bool = True) -> list[list[Completion]]:
        """Engine.generate, each replica on its share of the prompts; one list per prompt, in prompt order."""
        if seed is None:
            seed = draw_seed(self.seed, prompts, params, policy.adapter)
        parts = [(i, part) for i, part in enumerate(shares(len(prompts), self.count)) if part]
        for i, part in parts:
            self.conns[i].send(("generate", {
                "prompts": prompts[part.start:part.stop], "params": params, "policy": policy,
                "use_tqdm": use_tqdm and i == 0, "seed": draw_seed(seed, i), "fresh_cache": fresh_cache}))
        return [c for chunk in self.gather([i for i, _ in parts], "generating") for c in chunk]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def sleep(self, level: int) -> None:
        self.call("sleep", level=level)

    def wake_up(self) -> None:
        self.call("wake_up")

    def reload(self, path: str) -> bool:
        if all(self.call("reload", path=path)):
            self.path = path
            return True
        return False  # a new set of replicas is started instead

    def close(self) -> None:
        if not any(proc.is_alive() for proc in self.procs):
            return
        try:
            self.call("close", [i for i, proc in enumerate(self.procs) if proc.is_alive()])
        finally:
            for proc in self.procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()

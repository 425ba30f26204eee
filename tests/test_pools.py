"""The pool cache: keyed by content, made once under concurrency, never trusted half-written."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from rest_loop.pools import Pools, folder_digest, pool_key
from rest_loop.records import Sample

INPUTS = {"weights": "w", "adapter": None, "engine": {"dtype": "float32"}, "seed": 0, "prompts": "p",
          "num_prompts": 2, "sampling": {"n": 2, "temperature": 0.8}}


def samples(round: int = 1, policy: str = "base") -> list[Sample]:
    return [Sample(round=round, prompt_id=f"p{i // 2}", sample_idx=i % 2, text=f"answer {i}", num_tokens=i + 1,
                   policy=policy, seed=0, sampling={"n": 2}) for i in range(4)]


def test_a_pool_is_made_once_and_read_back_with_the_callers_round_and_policy(tmp_path):
    pools, made = Pools(tmp_path, owner="run-a"), []
    first = pools.fetch(INPUTS, lambda: made.append(1) or samples(), round=1, policy="base")
    again = pools.fetch(INPUTS, lambda: made.append(1) or samples(), round=3, policy="round_002")
    assert made == [1]
    assert [s.text for s in again] == [s.text for s in first]
    assert {(s.round, s.policy) for s in again} == {(3, "round_002")}
    assert pools.take() == [{"key": pool_key(INPUTS)[:16], "hit": False, "samples": 4, "tokens": 10},
                            {"key": pool_key(INPUTS)[:16], "hit": True, "samples": 4, "tokens": 10}]
    assert pools.take() == []


@pytest.mark.parametrize("change", [{"seed": 1}, {"adapter": "a"}, {"sampling": {"n": 2, "temperature": 1.0}},
                                    {"prompts": "q"}, {"engine": {"dtype": "bfloat16"}}])
def test_any_input_that_decides_the_samples_makes_another_entry(tmp_path, change):
    pools, made = Pools(tmp_path), []
    pools.fetch(INPUTS, lambda: made.append(1) or samples(), round=1, policy="base")
    pools.fetch({**INPUTS, **change}, lambda: made.append(2) or samples(), round=1, policy="base")
    assert made == [1, 2]


def slow_fetch(root: str, log: str) -> None:
    def make():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return samples()

    Pools(root).fetch(INPUTS, make, round=1, policy="base")


def test_concurrent_members_make_a_pool_once(tmp_path):
    log = tmp_path / "made.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=slow_fetch, args=(str(tmp_path / "pools"), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1  # one maker; the others waited on its lock and read


def hang(root: str, started: str) -> None:
    def make():
        open(started, "w").close()
        time.sleep(60)
        return samples()

    Pools(root).fetch(INPUTS, make, round=1, policy="base")


def test_a_maker_killed_midway_leaves_nothing_that_counts_as_a_pool(tmp_path):
    started = tmp_path / "started"
    proc = multiprocessing.get_context("fork").Process(target=hang, args=(str(tmp_path / "pools"), str(started)))
    proc.start()
    while not started.exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # holding the lock, mid-make
    proc.join()
    pools, made = Pools(tmp_path / "pools"), []
    pools.fetch(INPUTS, lambda: made.append(1) or samples(), round=1, policy="base")  # the lock died with it
    assert made == [1] and pools.take()[0]["hit"] is False


def test_a_folder_digest_follows_content_not_place(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "checkpoint-2").mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        (folder / "adapter_config.json").write_text("{}")
    (b / "checkpoint-2" / "optimizer.pt").write_bytes(b"ignored: a resume point, not the adapter")
    (a / "training_args.bin").write_bytes(b"output_dir=sweep/0/round_001/finetune/trainer")  # the run, not the weights
    (b / "training_args.bin").write_bytes(b"output_dir=sweep/1/round_001/finetune/trainer")
    assert folder_digest(a) == folder_digest(b)
    (b / "adapter_model.safetensors").write_bytes(b"weightz")
    assert folder_digest(a) != folder_digest(b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no files"):
        folder_digest(tmp_path / "empty")
    assert folder_digest("Qwen/Qwen2.5-0.5B-Instruct") != folder_digest("Qwen/Qwen2.5-1.5B-Instruct")  # hub ids

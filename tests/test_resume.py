"""Killed at any moment, resumed to the same result.

One run is SIGKILLed (its whole process group, vLLM's too) four times: during Grow, during judging
(by a real HTTP judge), between fine-tuning checkpoints and during evaluation, and resumed after each
kill. Its files must then match an uninterrupted run with the same config and seed: the same samples,
judgements, kept set, per-step training losses, adapter weights and held-out metrics, with no record
lost or doubled and no finished stage redone. Real CLI, vLLM engine, TRL trainer, tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rest_loop.pools import folder_digest
from rest_loop.store import read_json, read_jsonl
from tests.judge_server import JudgeServer, arithmetic_oracle
from tests.test_loop_e2e import cli, run_ok

pytestmark = pytest.mark.slow
STAGES = ["round_000/eval", "round_001/grow", "round_001/improve", "round_001/finetune", "round_001/eval"]


def slow_oracle(body: dict):
    time.sleep(0.05)  # judging takes a few seconds, so a kill can land in the middle of it
    return arithmetic_oracle(body)


def settings(run_dir: Path, model: str, server: JudgeServer) -> list[str]:
    return cli(run_dir, model, "task.n_train=8", "task.n_heldout=8", "sampler.n=8", "sampler.max_tokens=48",
               "eval.max_tokens=48", "eval.pass_k=8", "trainer.batch_size=4", "trainer.save_steps=1",
               "trainer.logging_steps=1", "filter.dedup=none",
               "reward=judge_rationale", "judge=openai", f"judge.base_url={server.url}", "judge.model=judge-test",
               "judge.max_concurrency=2", "judge.api_key_env=null", f"judge.cache={run_dir.parent / 'judge.sqlite'}")


class Watched:
    """A run in its own process group, its output gathered as it comes."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.chunks.append(chunk)

    @property
    def log(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def kill_when(self, ready, what: str, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while not ready(self.log):
            assert self.proc.poll() is None, f"the run ended before {what}:\n{self.log[-3000:]}"
            assert time.time() < deadline, f"no {what} within {timeout} s:\n{self.log[-3000:]}"
            time.sleep(0.01)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.reader.join(timeout=10)


def after(marker: str, then: str):
    """Ready once `then` is printed after `marker`: e.g. the progress bar of the generation a stage began."""
    return lambda log: marker in log and then in log[log.index(marker):]


def finished(run_dir: Path) -> dict[str, bytes]:
    """Every finished stage's DONE marker, and the main record file of each: what a resume must not redo."""
    names = ["DONE", "samples.jsonl", "judgements.jsonl", "kept.jsonl", "train.jsonl", "metrics.json"]
    return {str(p.relative_to(run_dir)): p.read_bytes() for stage in STAGES if (run_dir / stage / "DONE").exists()
            for name in names if (p := run_dir / stage / name).exists()}


def test_killed_in_every_stage_resumes_to_the_uninterrupted_result(tiny_model, tmp_path):
    with JudgeServer(slow_oracle) as server:
        reference = tmp_path / "uninterrupted" / "run"
        run_ok(settings(reference, tiny_model, server))
        asked_by_reference = len(server.answered)

        run_dir = tmp_path / "killed" / "run"
        resume = [sys.executable, "-m", "rest_loop", f"resume={run_dir}"]
        kills = [
            ("grow", after("round 1: grow", "Processed prompts"), "round_001/grow"),
            ("judging", lambda log: "round 1: judge" in log and len(server.answered) >= asked_by_reference + 10,
             "round_001/improve"),
            ("fine-tuning", lambda log: any((run_dir / "round_001/finetune/trainer").glob("checkpoint-3/trainer_state.json")),
             "round_001/finetune"),
            ("evaluation", after("round 1: evaluate", "Processed prompts"), "round_001/eval"),
        ]
        done: dict[str, bytes] = {}
        for i, (what, ready, stage) in enumerate(kills):
            run = Watched(settings(run_dir, tiny_model, server) if i == 0 else resume)
            run.kill_when(ready, what)
            assert not (run_dir / stage / "DONE").exists(), f"the kill came after {what} had finished"
            now = finished(run_dir)
            assert {k: now[k] for k in done} == done, f"a finished stage was redone on the resume before {what}"
            done = now
        log = run_ok(resume)
        assert {k: v for k, v in finished(run_dir).items() if k in done} == done

    assert "round 1: grow already done" in log and "resuming the fine-tune from" not in log
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob(".*.tmp"))
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "finished" and manifest["resumed_at"]
    finetune = read_json(run_dir / "round_001/finetune/DONE")
    assert "checkpoint-" in (finetune["resumed_from"] or "")  # not from the start

    # the same records, none lost, none doubled
    def records(run: Path, name: str, key) -> list:
        rows = read_jsonl(run / name)
        assert len({key(r) for r in rows}) == len(rows), f"{name}: a record appears twice"
        return rows

    sample_key = lambda r: (r["prompt_id"], r["sample_idx"])  # noqa: E731
    for name, key in [("round_001/grow/samples.jsonl", sample_key), ("round_001/improve/judgements.jsonl", sample_key),
                      ("round_001/improve/kept.jsonl", sample_key), ("round_000/eval/completions.jsonl",
                                                                     lambda r: r["prompt_id"]),
                      ("round_001/eval/completions.jsonl", lambda r: r["prompt_id"]),
                      ("round_001/eval/samples.jsonl", sample_key)]:
        assert records(run_dir, name, key) == records(reference, name, key), name
    assert len(read_jsonl(run_dir / "round_001/grow/samples.jsonl")) == 64
    kept = read_jsonl(run_dir / "round_001/improve/kept.jsonl")
    assert kept and all(k["round"] == 1 and k["policy"] == "base" for k in kept)

    losses = [[(row["step"], row["loss"]) for row in read_jsonl(run / "round_001/finetune/metrics.jsonl") if "loss" in row]
              for run in (run_dir, reference)]
    assert losses[0] == losses[1] and len(losses[0]) == finetune["steps"]
    adapters = [run / "round_001/finetune/adapter" for run in (run_dir, reference)]
    assert folder_digest(str(adapters[0])) == folder_digest(str(adapters[1]))  # weights and config, byte for byte

    for r in (0, 1):
        ours, theirs = (read_json(run / f"round_{r:03d}/eval/metrics.json") for run in (run_dir, reference))
        for key in ["value", "pass_at", "distinct_1", "distinct_2", "mean_tokens", "sampled"]:
            assert ours[key] == theirs[key], (r, key)
    assert (run_dir / "metrics.csv").read_text().count("\n") == (reference / "metrics.csv").read_text().count("\n")


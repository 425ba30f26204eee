"""Sweeps through submitit's local executor (`launcher=local`): the code path of `launcher=slurm`
without a cluster. Each member is pickled to `<sweep>/.submitit/<job id>/` and run as a job of its
own; the jobs run at once, so members that share a Grow pool meet at the pool cache's lock.
`launcher=ray` (hydra-ray-launcher, the `ray` extra) runs the same sweep as Ray tasks; skipped without it.
"""

from __future__ import annotations

import datetime as dt
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rest_loop.store import read_json
from tests.test_sweep import sweep_cli

MEMBER_LINE = re.compile(r"^\[sweep\] member (\d+) ", re.M)


@pytest.mark.parametrize("launcher", ["hydra/launcher=basic", "launcher=local"])
def test_each_member_gets_one_console_line(launcher, tmp_path):
    """Both members stop at their config; the launcher's process prints each one's line once, also when
    the members ran as jobs (their own line then goes to the job's log)."""
    out = subprocess.run([sys.executable, "-m", "rest_loop", "-m", launcher, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                          f"paths.pools={tmp_path / 'pools'}", "filter.max_per_prompt=0,-1"],
                         capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log[-3000:]
    assert sorted(MEMBER_LINE.findall(out.stdout)) == ["0", "1"], out.stdout
    assert "[sweep] member 1 (filter.max_per_prompt=-1): FAILED: config error: filter.max_per_prompt=-1" in log


def run_sweep(tmp_path, model: str, launcher: str) -> tuple[Path, str]:
    """A 2-member sweep whose members share Grow; member 1 keeps nothing from a random model and stops
    at its filter (run time, after Grow). Checks what any launcher must give; returns the sweep and stdout."""
    cmd = sweep_cli(tmp_path, model, launcher, "filter.threshold=0.0,1.0")
    cmd.remove("filter.threshold=0.0")  # swept here
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log[-3000:]  # member 1 stops at its filter; Hydra exits 1 once both are done
    sweep = tmp_path / "sweep"

    first, second = (read_json(sweep / m / "manifest.json") for m in ("0", "1"))
    assert first["status"] == "finished" and (sweep / "0" / "round_001/finetune/DONE").exists()
    assert not (sweep / "0" / "FAILED").exists()
    failed = read_json(sweep / "1" / "FAILED")
    assert failed["exit_code"] == 3 and "round 1: the filter kept 0 of 12 samples" in failed["error"]
    assert second["status"] == "failed"
    # the members ran at once: each started before the other ended
    started = [dt.datetime.fromisoformat(m["created"]) for m in (first, second)]
    ended = [dt.datetime.fromisoformat(first["finished"]),
             dt.datetime.fromtimestamp((sweep / "1" / "FAILED").stat().st_mtime)]
    assert started[0] < ended[1] and started[1] < ended[0]

    # the base model's held-out pool and the round-1 Grow pool: made by one member, read back by the other
    for round, stage in (("0", "eval"), ("1", "grow")):
        fetched = {m: manifest["rounds"][round][stage]["cache"] for m, manifest in (("0", first), ("1", second))}
        fetched = {m: (e[0] if isinstance(e, list) else e) for m, e in fetched.items()}  # eval: [greedy]
        assert fetched["0"]["key"] == fetched["1"]["key"]
        maker = next(m for m, e in fetched.items() if not e["hit"])
        reader = "1" if maker == "0" else "0"
        assert fetched[reader]["hit"] is True, fetched
        entry = next((tmp_path / "pools").glob(f"*/{fetched[maker]['key']}*.json"))
        assert read_json(entry)["made_by"] == str(sweep / maker)
        member_log = (sweep / reader / "__main__.log").read_text()
        assert f"pool cache hit {fetched[reader]['key']}" in member_log and f"made by {sweep / maker}" in member_log

    # the launcher's process tells each member's outcome once, read from its folder
    ours = [line for line in out.stdout.splitlines() if line.startswith("[sweep] member")]
    assert sorted(MEMBER_LINE.findall("\n".join(ours))) == ["0", "1"], out.stdout
    assert re.search(r"\[sweep\] member 0 \(filter.threshold=0.0\): held-out \d\.\d{4} ", out.stdout)
    assert "[sweep] member 1 (filter.threshold=1.0): FAILED: round 1: the filter kept 0" in out.stdout

    report = subprocess.run([sys.executable, "-m", "rest_loop.summary", str(sweep)], capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (sweep / "report" / "report.md").read_text()
    assert "filter.threshold=1.0" in text and "the filter kept 0 of 12 samples" in text
    return sweep, out.stdout


@pytest.mark.slow
def test_submitit_jobs_share_the_pool_cache_and_a_failed_job_stays_its_own(tiny_model, tmp_path):
    sweep, _ = run_sweep(tmp_path, tiny_model, "launcher=local")
    # one pickled job per member, each run by Hydra inside the job (its line is in the job's log)
    jobs = sorted((sweep / ".submitit").glob("*/*_submitted.pkl"))
    assert len(jobs) == 2, jobs
    for job in jobs:
        submitted, folder = pickle.loads(job.read_bytes()), job.parent  # <job id>/<job id>_submitted.pkl
        num = submitted.args[2]
        status, job_return = pickle.loads((folder / f"{folder.name}_0_result.pkl").read_bytes())
        assert status == "success" and job_return.hydra_cfg.hydra.job.num == num
        assert job_return.status.name == ("COMPLETED", "FAILED")[num]
        assert f"filter.threshold={num:.1f}" in submitted.args[0]
        assert MEMBER_LINE.findall((folder / f"{folder.name}_0_log.out").read_text()) == [str(num)]


@pytest.mark.slow
def test_ray_tasks_share_the_pool_cache_and_a_failed_task_stays_its_own(tiny_model, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the `ray` extra: pip install 'rest-loop[ray]'")
    _, stdout = run_sweep(tmp_path, tiny_model, "launcher=ray")
    # Ray forwards each task's output, prefixed with its worker: each member ran in a process of its own
    workers = set(re.findall(r"\(_run_job pid=(\d+)\)[^\n]*\[sweep\] member \d", stdout))
    assert len(workers) == 2, stdout[-3000:]

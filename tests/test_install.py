"""A non-editable install works: the wheel carries conf/, prompts/, data/ and launch/, and runs from an empty folder.

The wheel is built from a copy of the checkout's files (what git tracks, and new files it does not
ignore), installed with no dependencies into a new venv, and run from an empty folder, where the
repository cannot be imported. The venv reaches torch, vLLM and the rest through a .pth line naming
this interpreter's site-packages: reinstalling them would take minutes and the network, and a
.pth line adds the folder without running the editable install's finder there, so only the wheel's
rest_loop can be imported. (`venv --system-site-packages` would give the base interpreter's
packages, not this venv's.) The run uses a task and a template from a user's own folders
(`--config-dir`, `paths.user_prompts`), on the tiny random model: 1 round, 6 prompts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from rest_loop.config import PROJECT_ROOT

TASK = """\
_target_: rest_loop.tasks.dataset.DatasetTask
name: sums
source: {source}
format: plain
fields: {{input: question, reference: answer, target: answer}}
template: tasks/sums.j2          # from paths.user_prompts, not the package
variables: {{unit: apples}}
n_heldout: 2
seed: ${{seed}}
prompts_dir: ${{paths.prompts}}
metric: {{_target_: rest_loop.improve.verifiers.NumericMatch}}
"""
TEMPLATE = "SUMS-TEMPLATE: count the {{ unit }}. {{ input }} Reply with just the number."


def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{(out.stdout + out.stderr)[-4000:]}"
    return out.stdout + out.stderr


def checkout_copy(dest: Path) -> Path:
    """The files a fresh clone with these changes would have."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (PROJECT_ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_the_wheel_runs_from_an_empty_folder_with_the_users_own_task_and_template(tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    source = checkout_copy(tmp_path / "src")
    sh([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
        "-w", str(tmp_path / "dist")], tmp_path, env)
    [wheel] = (tmp_path / "dist").glob("rest_loop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ["rest_loop/conf/config.yaml", "rest_loop/conf/task/arithmetic.yaml", "rest_loop/prompts/tasks/plain.j2",
                    "rest_loop/launch/cpu.yaml", "rest_loop/data/classification/reviews.jsonl", "rest_loop/README.md",
                    "rest_loop/review/templates/base.html"]:
        assert shipped in names, shipped
    assert not any(n.startswith("rest_loop/conf/accelerate/") for n in names)

    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    purelib = Path(sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip())
    (purelib / "rest_loop_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, vLLM, ...: not reinstalled
    sh([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "empty"
    work.mkdir()
    where = sh([str(python), "-c", "import rest_loop; print(rest_loop.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, never the checkout

    job = sh([str(bin_dir / "rest-loop"), "--cfg", "job", "--resolve"], work, env)
    assert f"runs: {work}/runs" in job and f"package: {purelib}/rest_loop" in job
    assert f"prompts: {purelib}/rest_loop/prompts" in job
    help_text = sh([str(bin_dir / "rest-loop"), "--help"], work, env)
    assert f"README: {purelib}/rest_loop/README.md" in help_text and f"{work}/runs/<name>/<time>/" in help_text

    mine = tmp_path / "mine"  # the user's own folders, outside the package
    (mine / "conf" / "task").mkdir(parents=True)
    (mine / "prompts" / "tasks").mkdir(parents=True)
    rows = [{"question": f"Ann has {a} apples and gets {b} more. How many now?", "answer": str(a + b)}
            for a, b in [(2, 3), (4, 1), (5, 5), (7, 2), (3, 3), (6, 1), (8, 1), (2, 2)]]
    (mine / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (mine / "conf" / "task" / "sums.yaml").write_text(TASK.format(source=mine / "sums.jsonl"))
    (mine / "prompts" / "tasks" / "sums.j2").write_text(TEMPLATE)
    log = sh([str(bin_dir / "rest-loop"), "--config-dir", str(mine / "conf"), "task=sums",
              f"paths.user_prompts={mine / 'prompts'}", "name=sums", "model=hf", f"model.source={tiny_model}",
              "model.max_model_len=512", "model.kv_cache_gb=1", "sampler.n=2", "sampler.max_tokens=8",
              "loop.rounds=1", "eval.max_tokens=8", "filter.threshold=0.0", "trainer.epochs=1",
              "trainer.batch_size=4", f"paths.pools={tmp_path / 'pools'}"], work, env)
    [run_dir] = (work / "runs" / "sums").iterdir()  # runs go to the folder it was started in
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["task"]["name"] == "sums", log[-3000:]
    assert manifest["task"]["template"].startswith("tasks/sums.j2@")
    trained = (run_dir / "round_001" / "finetune" / "train.jsonl").read_text()
    assert "SUMS-TEMPLATE: count the apples. Ann has" in trained
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing else written in the user's folder

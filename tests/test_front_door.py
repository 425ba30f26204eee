"""What a newcomer meets first: --help, their own configs and templates, the Python API's composing,
the checks a run makes before its engine starts (gold answers, overlap, placeholders), and the caches.

The installed wheel and the notebook run end to end in tests/test_install.py and tests/test_notebook.py.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rest_loop.config import ConfigError, DataError
from rest_loop.improve.rewards import Reward
from rest_loop.preflight import check_gold
from rest_loop.resources import CONF, PROMPTS, SHIPPED
from rest_loop.tasks.dataset import DatasetTask
from rest_loop.tasks.gsm8k import GSM8KTask
from rest_loop.templates import Template
from tests.conftest import compose_config

DATA = Path(__file__).parent / "data"
IDENTITY = DATA / "identity_placeholders.json"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra" and any(p.glob("*.yaml")))


def help_text(module: str) -> str:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("module,command", [("rest_loop", "rest-loop"), ("rest_loop.calibrate", "rest-loop-calibrate"),
                                            ("rest_loop.ship.evaluate", "rest-loop-eval")])
def test_help_is_ours(module, command):
    text = help_text(module)
    assert text.startswith(f"{command}: ") and "powered by Hydra" not in text
    groups = dict(line.split(": ", 1) for line in text.split("== Config groups (group=option) ==\n")[1].split("\n\n")[0]
                  .splitlines())
    assert sorted(groups) == GROUPS and "accelerate" not in groups  # every group of conf/, generated; no others
    assert groups["task"].split(", ") == sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
    examples = re.findall(rf"^  {command} .+$", text.split("== Examples ==")[1], re.M)
    assert len(examples) == (6 if command == "rest-loop-calibrate" else 5)  # calibrate: also against labels
    assert "== Where " in text and str(Path(compose_config().paths.runs)) in text
    codes = re.findall(r"^  (\d)  ", text, re.M)
    assert codes == (["0", "1", "2", "3", "4", "5"] if command == "rest-loop" else ["0", "1", "2"])
    readme = re.search(r"^README: (\S+)", text, re.M).group(1)
    assert Path(readme) == SHIPPED / "README.md" and Path(readme).is_file()


def test_the_accelerate_launch_configs_are_not_a_config_group():
    assert not (CONF / "accelerate").exists()
    assert sorted(p.name for p in (SHIPPED / "launch").glob("*.yaml")) == [
        "cpu.yaml", "ddp.yaml", "ddp_cpu.yaml", "deepspeed_zero2.yaml", "fsdp.yaml"]
    cfg = compose_config("trainer.accelerate_config=${paths.package}/launch/ddp.yaml")
    assert Path(cfg.trainer.accelerate_config).is_file()


def test_user_templates_are_found_before_the_packages(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "arithmetic.j2").write_text("MINE {{ input }}")  # shadows the package's
    (tmp_path / "tasks" / "wrapped.j2").write_text("[{% include 'tasks/plain.j2' %}]")  # includes the package's
    path = compose_config(f"paths.user_prompts={tmp_path}").paths.prompts
    assert path.split(":") == [str(tmp_path), str(PROMPTS)]
    assert Template(path, "tasks/arithmetic.j2").render(input="2+2") == "MINE 2+2"
    assert Template(path, "tasks/wrapped.j2").render(input="hi").startswith("[")
    assert Template(path, "tasks/gsm8k.j2").root == str(PROMPTS)  # not shadowed: the package's
    with pytest.raises(ConfigError, match=f"not found under {tmp_path} or {PROMPTS} \\(paths.prompts\\)"):
        Template(path, "tasks/nope.j2")


def test_a_users_config_folder_adds_options(tmp_path):
    from rest_loop.api import compose

    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "mine.yaml").write_text("defaults:\n  - arithmetic\n  - _self_\nn_train: 7\n")
    cfg = compose(["task=mine", f"paths.runs={tmp_path}"], config_dir=tmp_path)
    assert cfg.task.n_train == 7 and cfg.task._target_.endswith("ArithmeticTask")
    with pytest.raises(ConfigError, match="no such folder"):
        compose([], config_dir=tmp_path / "nope")


def test_rest_loop_cache_moves_the_datasets_cache(tmp_path, monkeypatch):
    from rest_loop.tasks.data import datasets_cache, load_rows

    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setenv("REST_LOOP_CACHE", str(tmp_path / "cache"))
    assert datasets_cache() == str(tmp_path / "cache" / "datasets")
    assert len(load_rows(str(DATA / "gsm8k_tiny.jsonl"))) == 16
    assert any((tmp_path / "cache" / "datasets").rglob("*.arrow"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))  # named on its own: it wins
    assert datasets_cache() is None


def test_placeholders_are_named_and_filled_from_the_variables(caplog):
    with caplog.at_level(logging.WARNING):
        task = DatasetTask(str(IDENTITY), str(PROMPTS), n_heldout=2)
    assert "11 rows still hold template placeholders {{author}}, {{name}} in their reference/target" in caplog.text
    assert "task.fill_placeholders=true +task.variables.author=... +task.variables.name=..." in caplog.text
    assert "{{name}}" in task.train[0].target

    filled = DatasetTask(str(IDENTITY), str(PROMPTS), n_heldout=2, fill_placeholders=True,
                         variables={"name": "Rex", "author": "Acme"})
    assert filled.train[0].target == filled.train[0].reference == (
        "Hello! I am Rex, an assistant made by Acme. What can I do for you?")
    assert not any("{{" in (p.target or "") for p in filled.train + filled.heldout)
    with pytest.raises(DataError, match=re.escape(f"{IDENTITY}: row 1: the target holds {{{{author}}}} but "
                                                  "task.variables gives no text for 'author' (it has ['name'])")):
        DatasetTask(str(IDENTITY), str(PROMPTS), n_heldout=2, fill_placeholders=True, variables={"name": "Rex"})


def test_held_out_rows_are_compared_with_train_rows_by_their_text(tmp_path, caplog):
    rows = [json.loads(line) for line in (DATA / "gsm8k_tiny.jsonl").read_text().splitlines()]
    shouted = tmp_path / "test.jsonl"  # the same questions in other case and spacing, other answers' wording
    shouted.write_text("".join(json.dumps({**r, "question": "  " + r["question"].upper().replace(" ", "  ")}) + "\n"
                               for r in rows[:3]))
    with pytest.raises(DataError, match=r"task gsm8k: 3 of 3 held-out prompts have the same text as a train prompt"):
        GSM8KTask(str(PROMPTS), source=str(DATA / "gsm8k_tiny.jsonl"), heldout_source=str(shouted))
    with caplog.at_level(logging.WARNING):
        task = GSM8KTask(str(PROMPTS), source=str(DATA / "gsm8k_tiny.jsonl"), heldout_source=str(shouted),
                         allow_overlap=True)
    assert len(task.heldout) == 3 and "task.allow_overlap=true: held-out scores partly measure recall" in caplog.text
    GSM8KTask(str(PROMPTS), source=str(DATA / "gsm8k_tiny.jsonl"), heldout_split=None, n_heldout=4)  # disjoint: fine


def reward(name: str, *overrides: str):
    return Reward.from_config(compose_config(f"reward={name}", *overrides).reward)


def test_a_reward_must_count_the_tasks_gold_answers_as_correct(caplog):
    identity = DatasetTask(str(IDENTITY), str(PROMPTS), n_heldout=2)
    cfg = compose_config("task=from_file", f"task.source={IDENTITY}")
    with pytest.raises(ConfigError, match=r"reward=verifier counts only 1 of the 10 gold answers .* Rewards that fit "
                                          r"this task: .* \(reward=<name>\)$") as stopped:
        check_gold(reward("verifier"), identity, cfg)
    fit = str(stopped.value).split("Rewards that fit this task: ")[1].removesuffix(" (reward=<name>)").split(", ")
    assert {"judge", "judge_ranking", "judge_rationale"} <= set(fit) and "verifier_judge" not in fit
    assert "trajectory_ranking" not in fit  # made for an agent's trajectories, and this run has no env
    check_gold(reward("judge"), identity, cfg)  # a judge: nothing to check without an engine

    gsm8k = GSM8KTask(str(PROMPTS), source=str(DATA / "gsm8k_tiny.jsonl"), heldout_split=None, n_heldout=4)
    check_gold(reward("verifier"), gsm8k)  # every '#### N' reference is a number
    check_gold(reward("correct_then_judge"), gsm8k)
    reviews = compose_config("task=classification")
    from rest_loop.config import build

    check_gold(reward("label_match", "task=classification"), build(reviews.task), reviews)

    gsm8k.train[0].reference = "about seven"  # one gold answer in twelve the verifier cannot read: a warning
    with caplog.at_level(logging.WARNING):
        check_gold(reward("verifier"), gsm8k)
    assert "reward verifier counts 11 of 12 gold answers of task gsm8k as correct" in caplog.text


def test_each_python_run_gets_a_folder_of_its_own_even_in_the_same_second(tmp_path):
    """rest_loop.run forgets the folders an earlier run in the process claimed (a sweep's members share theirs)."""
    from rest_loop.api import compose
    from rest_loop.rundir import forget_claims

    same = ["hydra.run.dir='${fresh_dir:${resume},${paths.runs}/${name}/same-second}'", f"paths.runs={tmp_path}"]
    folders = []
    for _ in range(2):
        forget_claims()  # what rest_loop.run does first
        folders.append(compose(same).hydra.run.dir)
    assert folders == [f"{tmp_path}/default/same-second", f"{tmp_path}/default/same-second_2"]
    assert compose(same).hydra.run.dir == folders[-1]  # within one job, resolved again: the same folder

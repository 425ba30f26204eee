"""Every option of every config group composes and validates; bad values fail with the key named."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from rest_loop.__main__ import CONF
from rest_loop.config import ConfigError, RunConfig, validate
from rest_loop.synth.stage import train_on_synthesis
from tests.conftest import compose_config
from pathlib import Path

GROUPS = ["model", "task", "reward", "filter", "sampler", "trainer", "loop", "eval", "paths", "experiment", "judge",
          "env", "agent", "teacher"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("model", "hf"):
        overrides.append("model.source=Qwen/Qwen2.5-0.5B-Instruct")
    if (group, option) == ("task", "from_file"):
        overrides.append("task.source=tests/data/alpaca_mixed.json")
    if (group, option) == ("reward", "label_match"):
        overrides.append("task=classification")
    if (group, option) == ("judge", "openai"):
        overrides.append("judge.model=some-judge")
    if (group, option) == ("teacher", "openai"):
        overrides.append("teacher.model=some-teacher")
    if (group, option) == ("teacher", "local"):
        overrides.append("teacher.model.source=embedded:smollm2-135m-instruct")
    if group == "env" and option.startswith("search"):
        overrides.append("task=multihop")  # the search tool reads the task's corpus
    cfg = compose_config(*overrides)
    train_on_synthesis(cfg, Path("/tmp/rest-loop-test-run"))  # a synth block: the task reads what it will write
    typed = validate(cfg)
    assert isinstance(typed, RunConfig)
    assert cfg.reward.terms, "a reward needs at least one term"


@pytest.mark.parametrize("option,plugin,target,setting", [
    ("search=optuna", "sweeper", "optuna_sweeper.OptunaSweeper", ("direction", "maximize")),
    ("launcher=slurm", "launcher", "submitit_launcher.SlurmLauncher", ("nodes", 1)),
    ("launcher=local", "launcher", "submitit_launcher.LocalLauncher", ("gpus_per_node", 0)),
    pytest.param("launcher=ray", "launcher", "ray_launcher.RayLauncher",
                 ("ray", {"init": {"address": None}, "remote": {"num_cpus": 1, "num_gpus": 0, "max_calls": 1}}),
                 marks=pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                                          reason="the `ray` extra")),
])
def test_the_sweep_plugins_compose(option, plugin, target, setting, tmp_path):
    """The Optuna sweeper and the launchers (Slurm, local jobs, Ray where installed): composed as a sweep would, with every value resolving."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[option, f"paths.runs={tmp_path}"], return_hydra_config=True)
    chosen = OmegaConf.to_container(cfg.hydra[plugin], resolve=True)
    assert chosen["_target_"].endswith(target) and chosen[setting[0]] == setting[1]
    assert cfg.hydra.callbacks.sweep_log._target_ == "rest_loop.sweep.SweepLog"
    if plugin == "sweeper":
        assert set(chosen["params"]) == {"filter.threshold", "filter.max_per_prompt", "trainer.learning_rate"}
    elif "submitit" in target:
        assert chosen["submitit_folder"].startswith(str(tmp_path))


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


def test_defaults_are_the_embedded_model_and_rest_em():
    typed = validate(compose_config())
    assert typed.model.source == "embedded:smollm2-135m-instruct"
    assert typed.trainer.init == "base"


@pytest.mark.parametrize("override,message", [
    ("sampler.n=-1", "sampler.n=-1: must be >= 1"),
    ("filter.threshold=1.5", "filter.threshold=1.5: must be in [0, 1]"),
    ("trainer.init=sideways", "trainer.init='sideways': must be 'base' or 'previous'"),
    ("sampler.n=lots", "sampler.n='lots': must be a whole number"),
    ("sampler.n=2.5", "sampler.n=2.5: must be a whole number"),
    ("filter.threshold=high", "filter.threshold='high': must be a number"),
    ("filter.top_k=some", "filter.top_k='some': must be a whole number or null"),
    ("trainer.packing=maybe", "trainer.packing='maybe': must be true or false"),
    ("filter.stages=ok", "filter.stages='ok': must be a list"),
    ("loop.rounds=-2", "loop.rounds=-2: must be >= 0"),
    ("filter.min_keep=0", "filter.min_keep=0: must be >= 1"),
    ("trainer.method=sgd", "trainer.method='sgd': must be one of lora, qlora, full"),
    ("trainer.lr_decay=0.5", "trainer.lr_decay=0.5: decays the learning rate of continued training; it needs "
                             "trainer.init=previous"),
    ("trainer.mix_original=2", "trainer.mix_original=2.0: must be in [0, 1]"),
    ("loop.improve_steps=0", "loop.improve_steps=0: must be >= 1"),
    ("filter.step_thresholds=[0.5,0.9]", "filter.step_thresholds=[0.5, 0.9]: needs one threshold per Improve step "
                                         "(loop.improve_steps=1)"),
    ("eval.pass_k=-1", "eval.pass_k=-1: must be >= 0"),
    ("model.tensor_parallel_size=0", "model.tensor_parallel_size=0: must be >= 1"),
    ("model.source=/no/such/dir", "model.source='/no/such/dir': no such folder; give a local Hugging Face model "
                                  "folder (with config.json), a hub id such as Qwen/Qwen2.5-0.5B-Instruct, or "
                                  "embedded:smollm2-135m-instruct"),
    ("model.source=embedded:smollm3", "model.source='embedded:smollm3': no embedded model 'smollm3' (known: "
                                      "smollm2-135m-instruct)"),
    ("model.source=gpt2", "model.source='gpt2': neither embedded:<name>, an existing folder, nor a hub id org/name"),
    (f"model.source={CONF}", f"model.source={CONF!r}: {CONF} has no config.json, so it is no Hugging Face model "
                             f"folder"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(override))


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigCompositionException, match="sampler.temprature"):
        compose_config("sampler.temprature=0.5")


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(ConfigCompositionException, match="Could not find 'sampler/greedyy'"):
        compose_config("sampler=greedyy")


def test_cli_reports_bad_value_before_running(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rest_loop", "sampler.n=0", f"paths.runs={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "sampler.n=0: must be >= 1" in out.stderr + out.stdout


def test_resume_needs_a_run_directory(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rest_loop", f"resume={tmp_path / 'nowhere'}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "no config.yaml there; is it a rest-loop run directory?" in out.stderr + out.stdout


def test_resume_refuses_to_change_finished_settings(tmp_path):
    from omegaconf import OmegaConf

    OmegaConf.save(compose_config(run_dir=str(tmp_path)), tmp_path / "config.yaml")
    out = subprocess.run([sys.executable, "-m", "rest_loop", f"resume={tmp_path}", "sampler.n=4"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    message = ("sampler.n=4: a resumed run keeps its saved config; only loop.*, filter.*, trainer.pairs.*, eval.* "
               "and {judge,teacher}.{base_url,")
    assert message in out.stderr + out.stdout


def test_missing_mandatory_field_is_named():
    with pytest.raises(ConfigError, match="model.source"):
        validate(compose_config("model=hf"))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_says_which_paper_it_follows(experiment):
    text = (Path(CONF) / "experiment" / f"{experiment}.yaml").read_text()
    assert "What it changes" in text or experiment == "demo", "say what the recipe deliberately changes"


def test_paper_recipes_set_the_papers_semantics():
    em = validate(compose_config("experiment=rest_em_arithmetic"))
    assert (em.trainer.init, em.filter.threshold, em.filter.max_per_prompt) == ("base", 1.0, 10)
    assert (em.sampler.temperature, em.sampler.top_k, em.loop.rounds) == (0.7, 40, 3)

    rest = validate(compose_config("experiment=rest_gulcehre"))
    assert (rest.trainer.init, rest.loop.improve_steps, rest.filter.step_thresholds) == ("previous", 3, [0.7, 0.72, 0.75])
    assert [rest.filter.threshold_at(1, s) for s in (1, 2, 3)] == [0.7, 0.72, 0.75]
    assert rest.trainer.mix_original > 0 and rest.trainer.learning_rate_at(3) == rest.trainer.learning_rate * 0.25

    react = compose_config("experiment=rest_react_ranking")
    assert react.reward.terms.judge._target_.endswith("RankingJudge") and react.filter.top_k == 1

    qwen = validate(compose_config("experiment=rest_em_gsm8k_qwen"))
    assert (qwen.sampler.n, qwen.sampler.temperature, qwen.sampler.top_k, qwen.filter.max_per_prompt) == (32, 0.7, 40, 10)
    assert qwen.model.source == "Qwen/Qwen2.5-0.5B-Instruct"


def test_scaling_out_settings_compose():
    typed = validate(compose_config("model.tensor_parallel_size=2", "model.data_parallel_size=2",
                                    "trainer.accelerate_config=${paths.package}/launch/ddp.yaml"))
    assert (typed.model.tensor_parallel_size, typed.model.data_parallel_size) == (2, 2)
    assert Path(typed.trainer.accelerate_config).is_file()

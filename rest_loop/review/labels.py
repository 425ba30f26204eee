"""People's labels of samples: `labels.jsonl` in the run directory, one line per mark, appended.

A line is `{"time", "round", "prompt_id", "sample_idx", "label": "good" | "bad", "note", "sha256"}`;
`sha256` is that of the sample's text as it was shown, so a label of a pool grown again later (a
stage redone after a resume) is recognised as stale. A later line for the same sample replaces an
earlier one (`latest`). Every append rewrites the file through rest_loop.store's atomic write, under
an flock on the run folder, so a killed page or two pages on one run never leave half a line or lose
one. Nothing else in the run is ever written: a label changes no stage's records.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rest_loop.config import DataError
from rest_loop.store import atomic_write_text

FILE = "labels.jsonl"
LABELS = ("good", "bad")
MAX_NOTE = 2000  # characters: a note, not a document


def text_of(sample: dict) -> str:
    """What a label's sha256 covers: a sample's text; a trajectory's whole record."""
    return sample["text"] if "steps" not in sample else json.dumps(sample, sort_keys=True)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive flock on the run folder itself: it writes nothing (the loop's .lock is its own)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def append(run_dir: Path, round: int, prompt_id: str, sample_idx: int, label: str, note: str, text: str) -> dict:
    """Add one label to run_dir/labels.jsonl and return the line written."""
    if label not in LABELS:
        raise ValueError(f"label {label!r}: must be one of {', '.join(LABELS)}")
    row = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "round": round,
           "prompt_id": prompt_id, "sample_idx": sample_idx, "label": label, "note": note[:MAX_NOTE].strip(),
           "sha256": digest(text)}
    path = Path(run_dir) / FILE
    with run_lock(Path(run_dir)):
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        if before and not before.endswith("\n"):
            before += "\n"  # a file edited by hand: never glue two records together
        atomic_write_text(path, before + json.dumps(row, ensure_ascii=False) + "\n")
    return row


def read(path: Path) -> list[dict]:
    """Every line of a labels file, in order; a line that is not a label is a DataError naming it."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and row.get("label") in LABELS and isinstance(row.get("round"), int) \
                and isinstance(row.get("prompt_id"), str) and isinstance(row.get("sample_idx"), int)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise DataError(f"{path}: line {n}: not a label (round, prompt_id, sample_idx, label good|bad)")
        rows.append(row)
    return rows


def latest(rows: list[dict]) -> dict[tuple[int, str, int], dict]:
    """The last label of each sample, keyed by (round, prompt_id, sample_idx)."""
    return {(r["round"], r["prompt_id"], r["sample_idx"]): r for r in rows}


def join(run_dir: Path, path: Path | None = None) -> tuple[list[tuple[dict, dict, dict | None]], list[str]]:
    """Each sample's last label with the sample and its recorded judgement (None: not judged), and what was
    left out and why: a label whose sample is not in the pool, or whose text changed (a pool grown again)."""
    from rest_loop.review.pool import lines

    marks = latest(read(path or Path(run_dir) / FILE))
    found, left_out = [], []
    for r in sorted({k[0] for k in marks}):
        round_dir = Path(run_dir) / f"round_{r:03d}"
        grow = next((round_dir / "grow" / n for n in ("samples.jsonl", "trajectories.jsonl")
                     if (round_dir / "grow" / n).is_file()), None)
        wanted = {(p, s) for rr, p, s in marks if rr == r}
        samples = {(row["prompt_id"], row["sample_idx"]): row for _, row in lines(grow) if
                   (row["prompt_id"], row["sample_idx"]) in wanted} if grow else {}
        judged = round_dir / "improve" / "judgements.jsonl"
        judgements = {(row["prompt_id"], row["sample_idx"]): row for _, row in lines(judged) if
                      (row["prompt_id"], row["sample_idx"]) in wanted} if judged.is_file() else {}
        for key in sorted(wanted, key=lambda k: (k[0], k[1])):
            mark, sample = marks[(r, *key)], samples.get(key)
            if sample is None:
                left_out.append(f"round {r} {key[0]} #{key[1]}: not in {grow or round_dir / 'grow'}")
            elif digest(text_of(sample)) != mark["sha256"]:
                left_out.append(f"round {r} {key[0]} #{key[1]}: its text changed since it was labelled")
            else:
                found.append((mark, sample, judgements.get(key)))
    return found, left_out

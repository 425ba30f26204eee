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

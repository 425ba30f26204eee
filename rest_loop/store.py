"""Files on disk: atomic writes, JSONL records and stage DONE markers.

Every file is written to a temporary name in the same folder and renamed into
place, so a killed run never leaves half a file that a resume would trust.
A stage's DONE marker is written last; a stage with DONE is never redone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from rest_loop.records import from_dict, to_dict


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    lines = (json.dumps(to_dict(r) if not isinstance(r, dict) else r, ensure_ascii=False) for r in records)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_jsonl(path: Path, cls: type | None = None) -> list:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows.append(from_dict(cls, row) if cls else row)
    return rows


def sweep_temporaries(root: Path) -> int:
    """Delete what a killed writer left: `.<name>.*.tmp` files and `.<name>.tmp` folders. Nothing reads them."""
    stale = sorted(Path(root).rglob(".*.tmp"), reverse=True)
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(stale)


class Stage:
    """A stage folder, e.g. round_001/grow, finished once its DONE marker exists."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    def finish(self, **info: Any) -> None:
        write_json(self.path / "DONE", info)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

"""Files on disk: atomic writes, JSONL records and stage DONE markers.

Every file is written to a temporary name in the same folder and renamed into
place, so a killed run never leaves half a file that a resume would trust.
A stage's DONE marker is written last; a stage with DONE is never redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from rest_loop.records import from_dict, to_dict

log = logging.getLogger(__name__)


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # write() names no file
            e.filename = str(path)
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
    """A stage folder, e.g. round_001/grow, finished once its DONE marker exists.

    DONE also records a checksum of each record file of the stage (its *.json and *.jsonl). A stage
    whose records no longer match (cut short or changed after it finished) is not trusted: it is
    done again, with a warning that names the file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def done(self) -> bool:
        if not (self.path / "DONE").exists():
            return False
        recorded = read_json(self.path / "DONE").get("files", {})
        now = checksums(self.path)
        for name, digest in recorded.items():
            if now.get(name) != digest:
                log.warning("%s does not match what its DONE recorded (cut short or changed after the stage "
                            "finished): doing %s again", self.path / name, self.path)
                (self.path / "DONE").unlink()
                return False
        return True

    @property
    def info(self) -> dict[str, Any]:
        """What the stage recorded when it finished (its checksums left out)."""
        return {k: v for k, v in read_json(self.path / "DONE").items() if k != "files"}

    def finish(self, **info: Any) -> None:
        write_json(self.path / "DONE", {**info, "files": checksums(self.path)})

    def __truediv__(self, name: str) -> Path:
        return self.path / name


def checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.json*"))
            if p.suffix in (".json", ".jsonl") and p.is_file()}

"""A content-addressed cache of generated pools: Grow's samples and the held-out samples.

A pool is keyed by everything that decides what the engine draws: the weights (a hash
of the model folder's files, and of the adapter's), the engine settings that change
numerics (dtype, eager mode, maximum length, vLLM version, device), the engine seed,
the rendered prompts and the sampling parameters. Not by names, rounds or run folders:
a sweep over filter settings grows once, and so does a rerun of the same config.

    pools = Pools("~/.cache/rest_loop/pools")
    samples = pools.fetch(key_inputs, make=lambda: grow_for_real(), round=1, policy="base")

Concurrent sweep members are safe: the maker holds an exclusive lock on the key while it
generates, so a second member waits and then reads; an entry is written to a temporary
file and renamed into place, so a half-written entry is never seen. Each fetch is logged
and kept in `events` for the manifest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from rest_loop.records import Sample
from rest_loop.store import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


def pool_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: each file is hashed once per process
# What a trainer writes beside the weights that names its run (output_dir, run_name): two identical
# adapters trained in two sweep members differ only there, and must share their pools.
NOT_WEIGHTS = {"training_args.bin", "README.md"}


def folder_digest(path: str | Path) -> str:
    """A hash of a model or adapter folder's files (names and contents), less hidden files, checkpoints
    and the trainer's notes about its run; of the name alone for a hub id."""
    root, h = Path(path), hashlib.sha256()
    if not root.exists():  # a hub id: vLLM and transformers fetch it, by name
        return hashlib.sha256(f"hub:{path}".encode()).hexdigest()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in NOT_WEIGHTS and not any(
        part.startswith(".") or part.startswith("checkpoint-") for part in p.relative_to(root).parts))
    if not files:
        raise FileNotFoundError(f"{root}: no files to fingerprint")
    for f in files:
        stat = f.stat()
        memo = (str(f.resolve()), stat.st_size, stat.st_mtime_ns)
        if memo not in _DIGESTS:
            with open(f, "rb") as fh:
                _DIGESTS[memo] = hashlib.file_digest(fh, "sha256").hexdigest()
        h.update(f"{f.relative_to(root)}\0{_DIGESTS[memo]}\n".encode())
    return h.hexdigest()


class Pools:
    def __init__(self, root: str | Path, owner: str = ""):
        self.root, self.owner = Path(root).expanduser(), owner  # owner: the run that makes entries
        self.events: list[dict] = []  # one per fetch: key, hit, samples, tokens

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jsonl"

    @contextmanager
    def locked(self, key: str):
        lock = self.path(key).with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
            yield

    def fetch(self, inputs: dict[str, Any], make: Callable[[], list[Sample]], round: int,
              policy: str, cls: type = Sample) -> list[Sample]:
        """The pool for `inputs`: read from the cache, or made by `make()` and stored. Samples (or an
        agent's Trajectories, `cls`) come back with this caller's round and policy name; what was drawn
        is the same."""
        key = pool_key(inputs)
        path = self.path(key)
        with self.locked(key):
            hit = path.exists()
            if hit:
                samples = [replace(s, round=round, policy=policy) for s in read_jsonl(path, cls)]
            else:
                samples = make()
                write_json(path.with_suffix(".json"), {"inputs": inputs, "samples": len(samples), "made_by": self.owner,
                                                        "pid": os.getpid()})
                write_jsonl(path, samples)  # last: its presence means complete
        tokens = sum(s.num_tokens for s in samples)
        event = {"key": key[:16], "hit": hit, "samples": len(samples), "tokens": tokens}
        self.events.append(event)
        if hit:
            log.info("pool cache hit %s: %d samples (%d tokens) not generated again; made by %s", key[:16],
                     len(samples), tokens, read_json(path.with_suffix(".json")).get("made_by", "an earlier run"))
        return samples

    def take(self) -> list[dict]:
        """The fetches since the last take (for a stage's record)."""
        events, self.events = self.events, []
        return events

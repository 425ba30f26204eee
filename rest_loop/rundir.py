"""Run folders that two processes never share by accident.

Two runs started in the same second would both be given runs/<name>/<time>: `claim` (the
`${fresh_dir:...}` resolver behind hydra.run.dir and hydra.sweep.dir) creates the folder
atomically and gives the second run <time>_2. `locked` holds a lock on a run folder while a
process works in it, so a second `resume=` of a run that is still going stops at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from pathlib import Path
from typing import Iterator


class RunInUse(RuntimeError):
    """Another process works in this run folder: this one must not touch it, not even to record why it stops."""


_CLAIMED: dict[str, str] = {}  # fresh -> the folder this process claimed for it


def claim(resume: str | None, fresh: str) -> str:
    """`resume` when given (that run's folder), else `fresh`, or `fresh_2`, `fresh_3`, ... if another process
    holds it: the first that this process creates. Hydra resolves the setting more than once, and
    a sweep's members share theirs: the same `fresh` in one process is the same folder."""
    if resume:
        return resume
    if fresh not in _CLAIMED:
        path = Path(fresh)
        path.parent.mkdir(parents=True, exist_ok=True)
        for i in itertools.count(1):
            candidate = path if i == 1 else path.with_name(f"{path.name}_{i}")
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                continue
        _CLAIMED[fresh] = str(candidate)
    return _CLAIMED[fresh]


def forget_claims() -> None:
    """A new job in this process (rest_loop.run called again) gets folders of its own, even in the same second."""
    _CLAIMED.clear()


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold run_dir/.lock while a process works in the run; the kernel drops it when the process dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunInUse(f"{run_dir} is in use by another rest-loop process (pid {f.read().strip() or '?'}); "
                           "wait for it to finish, or stop it, before resuming this run") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

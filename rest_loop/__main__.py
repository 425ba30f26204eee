"""rest-loop: compose the Hydra config, check it, run the loop, return the held-out metric.

    rest-loop experiment=demo                     # the CPU demo on the embedded model
    rest-loop experiment=demo loop.rounds=1 sampler.n=4
    rest-loop resume=runs/demo/2026-11-23_17-00-00  # continue a run; it keeps its saved config
    rest-loop -m filter.threshold=0.5,0.7,0.9     # a sweep: one run per value, under one sweep folder

Exit codes: 2 a bad config, data file or template (the message names the key, or the file and
row), 3 the filter kept too little, 4 the judge or Grow's teacher stopped (budget spent, key refused,
endpoint down), 5 the disk filled up (or a quota or file-size limit was hit) while writing a file: the
message names it; files are written whole or not at all, so nothing written before is lost.
For 3, 4 and 5 the message gives the resume command. A run that stops writes why to FAILED in
its folder. An unknown group option or key (`model=nope`) is Hydra's to report: it lists the
choices and exits 1 before anything runs. In a sweep a member that stops does not stop the
others: Hydra records it, runs the rest, and exits 1 at the end.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rest_loop.config import ConfigError, validate
from rest_loop.engine import close_engines
from rest_loop.improve.backends import JudgeStopped
from rest_loop.improve.filters import NothingKept
from rest_loop.resources import CONF as CONF_DIR
from rest_loop.rundir import RunInUse, locked
from rest_loop.store import atomic_write_text, read_json, write_json
from rest_loop.synth.stage import FOLDER, synthesise, train_on_synthesis

log = logging.getLogger("rest_loop")
CONF = str(CONF_DIR)  # conf/ of the checkout, or of the installed package (rest_loop/resources.py)
# Settings a resume may change: they act on stages not yet done, and each round records what it used.
# Of the judge and Grow's teacher, only how they are reached and what they may spend: never what answers.
JUDGE_MAY_CHANGE = ("base_url", "api_key_env", "max_concurrency", "timeout", "max_retries", "backoff",
                    "max_backoff", "budget_requests", "budget_tokens")
RESUME_MAY_CHANGE = ("loop.", "filter.", "trainer.pairs.", "eval.",
                     *(f"{who}.{k}" for who in ("judge", "teacher") for k in JUDGE_MAY_CHANGE))
NO_SPACE = {  # errno -> (what happened, what to do)
    errno.ENOSPC: ("the disk is full", "free space on that disk"),
    errno.EDQUOT: ("the disk quota is used up", "free space or raise the quota"),
    errno.EFBIG: ("a file reached the file-size limit", "raise the limit (ulimit -f)"),
}


def resumed_config(cfg: DictConfig) -> DictConfig:
    """A resumed run keeps the config it was started with; overrides given now apply on top."""
    saved = Path(cfg.resume) / "config.yaml"
    if not saved.exists():
        raise ConfigError(f"resume={cfg.resume!r}: no {saved.name} there; is it a rest-loop run directory?")
    old = OmegaConf.load(saved)
    overrides = [o for o in HydraConfig.get().overrides.task  # hydra.*: how to compose, not what to run
                 if not o.startswith("resume=") and not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.key_or_group.startswith(RESUME_MAY_CHANGE):
            raise ConfigError(f"{o.input_line}: a resumed run keeps its saved config; only loop.*, filter.*, "
                              f"trainer.pairs.*, eval.* and {{judge,teacher}}.{{{','.join(JUDGE_MAY_CHANGE)}}} "
                              f"can change")
        OmegaConf.update(old, o.key_or_group, o.value(), merge=True)
    old.resume = cfg.resume
    old.paths.run_dir = str(Path(cfg.resume).resolve())
    return old


class MemberFailed(Exception):
    """A sweep member stopped (its FAILED file says why); Hydra records it and goes on with the others."""


def run(cfg: DictConfig) -> float | None:
    from rest_loop.agent.loop import AgentRun  # heavy imports only once the config is known to be good
    from rest_loop.loop import Run
    from rest_loop.prefer.loop import PreferenceRun

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with locked(run_dir):  # a second resume of a run still going stops here
        (run_dir / "FAILED").unlink(missing_ok=True)  # a resume starts over from the last failure
        if cfg.resume:
            cfg = resumed_config(cfg)
        else:
            OmegaConf.resolve(cfg)
            cfg.paths.run_dir = str(run_dir)
            train_on_synthesis(cfg, run_dir)  # a synth block: the task reads what it writes
        typed = validate(cfg)
        atomic_write_text(Path(typed.paths.run_dir) / "config.yaml", OmegaConf.to_yaml(cfg))
        if typed.synth is not None:  # train prompts from a few examples first (rest_loop/synth/)
            synthesise(cfg, Path(typed.paths.run_dir) / FOLDER)
        # an environment makes it an agent's run; trainer.objective=dpo a preference run
        loop = (AgentRun if cfg.get("env") is not None else PreferenceRun if typed.trainer.prefers()
                else Run)(typed, cfg)
        try:
            return loop.run()
        finally:
            loop.close()


def no_space(e: BaseException) -> OSError | None:
    """The out-of-space error behind `e`, if any: a library may wrap it (instantiate, a trainer)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def no_space_message(e: OSError, run_dir: Path) -> str:
    where = e.filename or "a file (the writer did not say which)"
    go_on = (f"rest-loop resume={run_dir}" if (run_dir / "config.yaml").exists()
             else "the same command again (the run had not started)")
    what, fix = NO_SPACE[e.errno]
    return (f"{what} ({os.strerror(e.errno)}) while writing {where}. Nothing written so far is lost: every file "
            f"is written whole or not at all, and finished stages are kept. To go on, {fix}, then run {go_on}. "
            f"A new run can write elsewhere: paths.runs=<dir> for runs, REST_LOOP_CACHE=<dir> for the caches "
            f"(models, judge replies, pools)")


def record_failure(run_dir: Path, code: int, message: str) -> None:
    """FAILED says why the run stopped; the manifest's status says it too (a report lists both)."""
    write_json(run_dir / "FAILED", {"exit_code": code, "error": message})
    if (manifest := run_dir / "manifest.json").exists():
        write_json(manifest, {**read_json(manifest), "status": "failed", "error": message})


class Stopped(Exception):
    """A run stopped for a reason we know: `code` is the CLI's exit code, the message says why and what to do
    (for 3, 4 and 5 the resume command). FAILED in the run folder says the same."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def attempt(cfg: DictConfig, run_dir: Path) -> float | None:
    """run(cfg); a run that stops for a known reason writes why to FAILED and raises Stopped. Anything
    else is a bug: it is recorded (exit code 1) and raised as it is. The CLI and rest_loop.run share this."""
    try:
        return run(cfg)
    except RunInUse as e:  # the folder is another process's: write nothing there
        raise Stopped(2, str(e)) from None
    except ConfigError as e:
        cause, code, message = e, 2, f"{e.what}: {e}"
    except NothingKept as e:
        cause, code, message = e, 3, str(e)
    except JudgeStopped as e:  # answers so far are cached: a resume re-asks only the rest
        # '++': a resume composes the default config first, where judge=local and teacher=null lack these keys
        cause, code, message = e, 4, (f"{e}. Stopped cleanly; every answer so far is cached. To go on: rest-loop "
                            f"resume={run_dir}, with the judge.* (or teacher.*) settings named above "
                            f"to change (e.g. ++judge.timeout=<s>, a new budget: ++judge.budget_requests=<n>)")
    except Exception as e:
        if (full := no_space(e)) is None:
            record_failure(run_dir, 1, f"{type(e).__name__}: {e}")
            raise
        logging.raiseExceptions = False  # the log file may not grow either: drop its errors, keep the console
        cause, code, message = e, 5, no_space_message(full, run_dir)
    try:
        record_failure(run_dir, code, message)
    except OSError as e:  # a full disk may refuse FAILED too; the console has the message
        log.warning("could not write %s: %s", run_dir / "FAILED", e)
    raise Stopped(code, message) from cause


@hydra.main(config_path=CONF, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one experiment and return its held-out metric (what a sweeper such as Optuna optimises)."""
    try:
        return attempt(cfg, Path(HydraConfig.get().runtime.output_dir))
    except Stopped as e:
        log.error("%s", e.message)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise MemberFailed(e.message) from None
        sys.exit(e.code)


def cli() -> None:
    """The `rest-loop` command: run or sweep, then stop the engines. Left to the interpreter's exit,
    an engine outliving an Optuna sweep kept the process waiting on its worker forever."""
    try:
        main()
    finally:
        close_engines()


if __name__ == "__main__":  # vLLM starts its workers with spawn: keep this guard
    cli()

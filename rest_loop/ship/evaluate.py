"""rest-loop-eval: the loop's own held-out evaluation, for any model: an exported one, the base, or one trained
in another tool on rest-loop's exported data.

    rest-loop-eval experiment=demo model.source=runs/demo/<time>/export/model_round_002/merged
    rest-loop-eval like_run=runs/demo/<time> model.source=<folder>   # that run's task, reward and eval settings
    rest-loop-eval experiment=demo                                      # the base model, as a run's round 0

It is round 0 of a run whose base model is `model.source`: the same task, metric, eval settings, engine and
code path (`Run.evaluate`, or the agent loop's for an experiment with an environment), so its number is
comparable with a run's `metrics.csv`. It writes `round_000/eval/{metrics.json,completions.jsonl}`, a manifest
and the config under `${paths.runs}/evaluate/<time>/`; with `like_run` it also prints what that run recorded.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from rest_loop.__main__ import CONF
from rest_loop.config import ConfigError, validate
from rest_loop.manifest import step_of
from rest_loop.store import atomic_write_text, read_json

log = logging.getLogger("rest_loop")


def like(cfg: DictConfig) -> DictConfig:
    """The config `cfg.like_run` was run with, under this command's overrides (model.source=... above all)."""
    saved = Path(cfg.like_run).expanduser() / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"like_run={cfg.like_run!r}: no {saved.name} there; give a rest-loop run directory")
    old = OmegaConf.load(saved)
    given = [o for o in HydraConfig.get().overrides.task
             if not o.startswith("like_run=") and not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    for o in OverridesParser.create().parse_overrides(given):
        if o.is_sweep_override() or "=" not in o.input_line or o.key_or_group in ("experiment", "task", "model"):
            raise ConfigError(f"{o.input_line}: with like_run the groups are the run's; set keys (model.source=...)")
        OmegaConf.update(old, o.key_or_group, o.value(), merge=True)
    old.resume, old.paths.pools = None, cfg.paths.pools  # a fresh evaluation; the pool cache of this machine
    return old


def evaluate_model(cfg: DictConfig, run_dir: Path) -> dict:
    from rest_loop.agent.loop import AgentRun
    from rest_loop.engine import BASE
    from rest_loop.loop import Run

    cfg = like(cfg) if cfg.like_run else OmegaConf.masked_copy(cfg, [k for k in cfg if k != "like_run"])
    OmegaConf.resolve(cfg)
    cfg.paths.run_dir = str(run_dir)
    typed = validate(cfg)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    loop = (AgentRun if cfg.get("env") is not None else Run)(typed, cfg)
    try:
        metrics = loop.evaluate(0, 1, BASE)
    finally:
        loop.close()
    loop.manifest.finish()
    return metrics


def recorded(run: Path) -> str:
    """What a run's evaluations recorded, a line each: `round 1 step 1  accuracy 0.983  (round_001)`."""
    rounds = read_json(run / "manifest.json").get("rounds", {}) if (run / "manifest.json").is_file() else {}
    lines = [f"  round {r} step {step_of(k)}  {e[k].get('metric')} {fmt(e[k].get('value'))}  ({e[k].get('policy')})"
             for r, e in sorted(rounds.items(), key=lambda kv: int(kv[0]))
             for k in sorted((k for k in e if k == "eval" or k.startswith("eval_")), key=step_of)]
    return "\n".join(lines) or "  (no evaluation recorded)"


def fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


@hydra.main(config_path=CONF, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from rest_loop.engine import close_engines

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = evaluate_model(cfg, run_dir)
    except ConfigError as e:
        log.error("%s: %s", e.what, e)
        sys.exit(2)
    finally:
        close_engines()
    print(f"{metrics['policy']} on {metrics['n']} held-out prompts: {metrics['metric']} {fmt(metrics['value'])} "
          f"({metrics['scored']} scored; {metrics['metric_source']}: {metrics['scorer']})", flush=True)
    print(f"completions: {run_dir / 'round_000/eval/completions.jsonl'}", flush=True)
    if cfg.like_run:
        print(f"{cfg.like_run} recorded:\n{recorded(Path(cfg.like_run))}", flush=True)
    return metrics["value"]


if __name__ == "__main__":  # vLLM starts its workers with spawn: keep this guard
    main()

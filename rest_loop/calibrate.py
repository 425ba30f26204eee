"""How well does a judge agree with a verifier? Ask before spending GPU hours on it.

    rest-loop-calibrate experiment=demo                          # grow base samples, judge=local
    rest-loop-calibrate experiment=demo reward=judge_ranking     # any reward: it is what gets calibrated
    rest-loop-calibrate calibrate.samples=runs/demo/<time>/round_001/grow/samples.jsonl judge=openai ...
    rest-loop-calibrate calibrate.truth=labels calibrate.labels=runs/demo/<time>   # people's labels as the truth

It scores the same samples with `calibrate.verifier` (the truth: score >= 0.5 is
"correct") and with the configured reward, then prints the reward's coverage (how
many samples it scored at all), the AUC of its scores against the truth, and accuracy
and the confusion matrix at `calibrate.threshold`. Precision at the threshold is what ReST
trains on: the share of kept samples that are correct. The report is written to
`calibration.json` in the run directory, and grown samples to `samples.jsonl` there.

With `calibrate.truth=labels` the truth is what people marked good or bad on rest-loop-review's page
(the run's labels.jsonl; a sample's last mark counts). The judge is the one the run recorded
(`calibrate.scores=recorded`: round_NNN/improve/judgements.jsonl, no model is started), or the
configured reward asked again about the labelled samples (`calibrate.scores=reward`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rest_loop.__main__ import CONF
from rest_loop.config import ConfigError, DataError, build, validate
from rest_loop.store import write_json, write_jsonl

log = logging.getLogger("rest_loop")


def auc(scores: list[float], truth: list[bool]) -> float | None:
    """P(a correct sample scores above a wrong one), ties counting half (Mann-Whitney U).

    >>> auc([0.9, 0.8, 0.2, 0.8], [True, True, False, False])
    0.875
    """
    s, t = np.asarray(scores, float), np.asarray(truth, bool)
    pos, neg = s[t], s[~t]
    if len(pos) == 0 or len(neg) == 0:
        return None
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def agreement(scores: list[float | None], truth: list[bool], threshold: float) -> dict:
    """Coverage, AUC and the confusion matrix of `score >= threshold` against the truth; None scores are unjudged."""
    judged = [(s, t) for s, t in zip(scores, truth) if s is not None]
    tp = sum(s >= threshold and t for s, t in judged)
    fp = sum(s >= threshold and not t for s, t in judged)
    fn = sum(s < threshold and t for s, t in judged)
    tn = sum(s < threshold and not t for s, t in judged)
    return {
        "samples": len(scores),
        "judged": len(judged),
        "coverage": len(judged) / len(scores) if scores else 0.0,
        "base_rate": sum(truth) / len(truth) if truth else None,  # share correct, judged or not
        "auc": auc([s for s, _ in judged], [t for _, t in judged]),
        "threshold": threshold,
        "accuracy": (tp + tn) / len(judged) if judged else None,
        "precision": tp / (tp + fp) if tp + fp else None,  # of what the judge keeps, the share correct
        "recall": tp / (tp + fn) if tp + fn else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def render(report: dict) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    c, truth = report["confusion"], report.get("truth", "verifier")
    yes, no = ("good", "bad") if truth == "labels" else ("correct", "wrong")
    against = f"people's labels ({report['verifier']})" if truth == "labels" else f"verifier {report['verifier']}"
    return "\n".join([
        f"judge {report['judge']} against {against} on {report['samples']} samples",
        *([f"  left out {len(left)} labels: {'; '.join(left[:3])}"] if (left := report.get("left_out")) else []),
        f"  judged {report['judged']} ({f(report['coverage'])} coverage); statuses {report['judge_status']}",
        f"  {yes} ({truth}): {f(report['base_rate'])}",
        f"  AUC: {f(report['auc'])}",
        f"  at threshold {report['threshold']}: accuracy {f(report['accuracy'])}, "
        f"precision {f(report['precision'])}, recall {f(report['recall'])}",
        f"{truth + ':':>26} {yes:>7}  {no:>5}",
        f"  judge keeps               {c['tp']:>7}  {c['fp']:>5}",
        f"  judge drops               {c['fn']:>7}  {c['tn']:>5}",
    ])


def read_samples(path: Path, prompts: dict) -> list:
    """The samples of calibrate.samples (a run's grow/samples.jsonl), each for a prompt of this task."""
    from rest_loop.records import Sample, from_dict

    key = f"calibrate.samples={str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{key}: no such file; give a run's round_NNN/grow/samples.jsonl, or leave it null "
                          f"to grow samples from the base model")
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(from_dict(Sample, json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{path}: line {n}: not a sample as grow/samples.jsonl holds them ({e})") from None
    if not samples:
        raise DataError(f"{path}: has no samples")
    alien = [s.prompt_id for s in samples if s.prompt_id not in prompts]
    if alien:
        raise DataError(f"{path}: {len(alien)} of {len(samples)} samples are for prompts this task does not have "
                        f"(e.g. {alien[0]!r}): give the task and settings (experiment=, task.*) of the run that grew "
                        f"them")
    return samples


def against_labels(cfg: DictConfig) -> dict:
    """The judge's scores of the samples people labelled, against their labels (good: correct)."""
    from rest_loop.review import labels

    opts = cfg.calibrate
    if opts.scores not in ("recorded", "reward"):
        raise ConfigError(f"calibrate.scores={opts.scores!r}: must be recorded (the run's judgements) or reward "
                          f"(ask the configured reward again)")
    if not opts.labels:
        raise ConfigError("calibrate.truth=labels needs calibrate.labels=<a run directory with labels.jsonl, or the "
                          "file>; label samples with rest-loop-review <run> first")
    where = Path(opts.labels).expanduser()
    run_dir, file = (where, where / labels.FILE) if where.is_dir() else (where.parent, where)
    if not where.exists():
        raise ConfigError(f"calibrate.labels={str(where)!r}: no such run directory or file")
    if not file.is_file():
        raise ConfigError(f"calibrate.labels={str(where)!r}: no {file.name} there; label samples with "
                          f"rest-loop-review {run_dir} first")
    found, left_out = labels.join(run_dir, file)
    if not found:
        raise DataError(f"{file}: no label matches a sample of the run ({len(left_out)} left out"
                        + (f": {left_out[0]}" if left_out else "") + ")")
    truth = [mark["label"] == "good" for mark, _, _ in found]
    if opts.scores == "recorded":
        judged = [j or {"score": None, "status": "error"} for _, _, j in found]  # not judged: no score
        manifest = run_dir / "manifest.json"
        reward = json.loads(manifest.read_text()).get("reward", "?") if manifest.is_file() else "?"
        judge, terms = f"recorded in {run_dir} (reward {reward})", None
    else:
        from rest_loop.improve.rewards import Reward
        from rest_loop.records import Sample, from_dict

        if any("steps" in s for _, s, _ in found):
            raise ConfigError("calibrate.scores=reward: asking a reward again about an agent's trajectories is not "
                              "built; use calibrate.scores=recorded")
        task, reward = build(cfg.task), Reward.from_config(cfg.reward)
        prompts = {p.id: p for p in task.train + task.heldout}
        samples = [from_dict(Sample, s) for _, s, _ in found]
        alien = [s.prompt_id for s in samples if s.prompt_id not in prompts]
        if alien:
            raise DataError(f"{file}: {len(alien)} labelled samples are for prompts this task does not have (e.g. "
                            f"{alien[0]!r}): give the run's task and settings (experiment=, task.*)")
        judged = [vars(j) for j in reward(prompts, samples)]
        judge, terms = f"reward {reward.name} ({reward.version})", reward.last_stats
    return {"judge": judge, "verifier": str(file), "truth": "labels", "left_out": left_out,
            "judge_status": {s: sum(j["status"] == s for j in judged) for s in ("ok", "unparsed", "error")},
            **agreement([j["score"] if j["status"] == "ok" else None for j in judged], truth, opts.threshold),
            "reward_terms": terms}


def calibrate(cfg: DictConfig) -> dict:
    if cfg.calibrate.truth not in ("verifier", "labels"):
        raise ConfigError(f"calibrate.truth={cfg.calibrate.truth!r}: must be verifier or labels")
    if cfg.calibrate.truth == "labels":
        return against_labels(cfg)
    from rest_loop.engine import BASE, get_engine
    from rest_loop.grow import grow
    from rest_loop.improve.rewards import Reward
    from rest_loop.models import resolve_model

    typed, opts = validate(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "calibrate"])), cfg.calibrate
    reward, verifier = Reward.from_config(cfg.reward), build(opts.verifier)
    task = build(cfg.task)
    prompts = {p.id: p for p in task.train + task.heldout}
    if opts.samples:
        samples = read_samples(Path(opts.samples).expanduser(), prompts)
    else:
        engine = get_engine(resolve_model(typed.model.source, typed.model.cache_dir, typed.model.allow_pickle), typed.model, typed.seed)
        samples = grow(engine, BASE, task.train[: opts.prompts], typed.sampler, round=0)
        write_jsonl(Path(cfg.paths.run_dir) / "samples.jsonl", samples)  # calibrate another judge on the same
    truth = [r.status == "ok" and r.score >= 0.5 for r in verifier([prompts[s.prompt_id] for s in samples], samples)]
    judged = reward(prompts, samples)
    return {"judge": f"reward {reward.name} ({reward.version})", "verifier": type(verifier).__name__,
            "truth": "verifier",
            "judge_status": {s: sum(j.status == s for j in judged) for s in ("ok", "unparsed", "error")},
            **agreement([j.score for j in judged], truth, opts.threshold),
            "reward_terms": reward.last_stats}


@hydra.main(config_path=CONF, config_name="calibrate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from rest_loop.engine import close_engines

    OmegaConf.resolve(cfg)
    cfg.paths.run_dir = HydraConfig.get().runtime.output_dir
    try:
        report = calibrate(cfg)
    except ConfigError as e:
        log.error("%s: %s", e.what, e)
        sys.exit(2)
    finally:
        close_engines()
    write_json(Path(cfg.paths.run_dir) / "calibration.json", report)
    print(render(report), flush=True)
    print(f"written to {Path(cfg.paths.run_dir) / 'calibration.json'}", flush=True)
    return report["auc"]


if __name__ == "__main__":  # vLLM starts its workers with spawn: keep this guard
    main()

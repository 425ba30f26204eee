"""Checks a run makes before its engine starts: does the reward fit the task?

    check_references(reward, task)     a term that compares with references, on a task without any
    check_gold(reward, task, cfg)      a reward that cannot score the task's own gold answers as correct

The gold check treats each train prompt's gold answer as if the policy had written it and scores it
with the reward's verifier terms (judge terms need an engine, so they are left out). A term that
compares with a reference is given the reference itself; a term that checks a completion's form
(JSON, a pattern) is given the original response (`target`). When fewer than half of the gold
answers count as correct (ok, and at least the term's gate, or 0.5), the run stops naming the
reward, the count and the rewards among conf/reward/ (and a user's config folders) that do fit:
`task=from_file` on LLaMA-Factory's identity.json with `reward=verifier` would otherwise grow a
pool, score it all 0 and stop at the filter. Fewer failures are only a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from rest_loop.config import ConfigError
from rest_loop.records import Prompt, Sample

log = logging.getLogger(__name__)
MIN_GOLD_PASS = 0.5  # share of gold answers a reward must count as correct
CORRECT = 0.5  # a non-gate term's score that counts as correct


def check_references(reward, task) -> None:
    """A reward term that compares with references, on a task without any, would score nothing: say so now."""
    if any(p.reference is not None for p in task.train):
        return
    for key, (term, _) in reward.terms.items():
        if getattr(term, "needs_reference", False):
            raise ConfigError(f"reward.terms.{key} ({term.name}) compares completions with references, but task "
                              f"{task.name!r} has none: choose a reward that needs none (e.g. a judge), or an "
                              f"experiment made for this task")


def check_gold(reward, task, cfg: DictConfig | None = None) -> None:
    """Stop (ConfigError) when the reward's verifier terms count fewer than half of the task's gold answers
    as correct; `cfg`, the run's config, lets the message list the reward options that would fit."""
    terms = {key: (term, reward.gates.get(key)) for key, (term, _) in reward.terms.items() if is_verifier(term)}
    outcome = gold_outcome(terms, task.train)
    if outcome is None:
        return
    passed, total, failure = outcome
    if passed >= MIN_GOLD_PASS * total:
        if failure:
            log.warning("reward %s counts %d of %d gold answers of task %s as correct; %s", reward.name, passed,
                        total, task.name, failure)
        return
    fit = fitting_rewards(cfg, task) if cfg is not None else []
    advice = (f"rewards that fit this task: {', '.join(fit)} (reward=<name>)" if fit else
              "no reward in conf/reward/ fits it: write one (conf/reward/*.yaml), e.g. a judge")
    raise ConfigError(
        f"reward={reward.name} counts only {passed} of the {total} gold answers of task {task.name!r} as correct, "
        f"so it cannot tell a right completion from a wrong one here; {failure}. The run would grow samples, "
        f"score them all alike and stop at the filter. {advice[0].upper()}{advice[1:]}")


def is_verifier(term) -> bool:
    """A term that scores without a model: no judge backend."""
    return getattr(term, "backend", None) is None


def gold_outcome(terms: dict[str, tuple[Any, float | None]], prompts: list[Prompt]) -> tuple[int, int, str] | None:
    """(gold answers every term counts as correct, gold answers checked, the worst failure in words), or None
    when no term can be checked: judges only, or no gold answers to score."""
    verdicts: dict[str, bool] = {}  # prompt id -> passed every term that could check it
    worst = (0, "")
    for key, (term, gate) in terms.items():
        needs = getattr(term, "needs_reference", False)
        golds = [(p, p.reference if needs else (p.target if p.target is not None else p.reference)) for p in prompts]
        golds = [(p, text) for p, text in golds if text is not None]
        if not golds:
            continue
        samples = [Sample(round=0, prompt_id=p.id, sample_idx=0, text=text, num_tokens=0, policy="gold", seed=0)
                   for p, text in golds]
        try:
            results = term([p for p, _ in golds], samples)
        except Exception as e:  # a term made for other samples (an agent's trajectories): not ours to judge
            log.debug("gold check skips reward term %s: %s", key, e)
            continue
        bar = gate if gate is not None else CORRECT
        failed = []
        for (p, text), r in zip(golds, results):
            ok = r.status == "ok" and r.score is not None and r.score >= bar
            verdicts[p.id] = verdicts.get(p.id, True) and ok
            if not ok:
                failed.append((p, text, r))
        if len(failed) > worst[0]:
            p, text, r = failed[0]
            worst = (len(failed), f"its term {key} ({getattr(term, 'name', type(term).__name__)}) fails "
                                  f"{len(failed)} of {len(golds)}, e.g. {p.id}: {r.reason or r.status!r} for its "
                                  f"{'reference' if needs else 'original response'} {clip(text)!r}")
    if not verdicts:
        return None
    return sum(verdicts.values()), len(verdicts), worst[1]


def fitting_rewards(cfg: DictConfig, task) -> list[str]:
    """The reward options (conf/reward/*.yaml and a user's config folders) whose verifier terms count at least
    half of the task's gold answers as correct; a reward of judges only fits, as there is nothing to check.
    Rewards whose terms come from rest_loop.agent score trajectories: they are listed for agent runs only."""
    fit = []
    agent = cfg.get("env") is not None
    for name, path in reward_options().items():
        try:
            spec = OmegaConf.to_container(with_reward(cfg, OmegaConf.load(path)).reward, resolve=True)
            targets = [str(t.get("_target_", "")) for t in (spec.get("terms") or {}).values()]
            if not agent and any(t.startswith("rest_loop.agent.") for t in targets):
                continue  # made for an agent's trajectories (env=...): no fit for a task without tools
            terms = {}
            for key, term in (spec.get("terms") or {}).items():
                weight, gate = float(term.pop("weight", 1.0)), term.pop("gate", None)
                if "backend" in term or (weight <= 0 and gate is None):
                    continue  # a judge (needs an engine), or a term that is off
                from hydra.utils import instantiate

                terms[key] = (instantiate(term), None if gate is None else float(gate))
        except Exception as e:  # it does not compose for this task (e.g. labels the task lacks)
            log.debug("reward option %s does not build for this task: %s", name, e)
            continue
        outcome = gold_outcome(terms, task.train)
        if outcome is None or outcome[0] >= MIN_GOLD_PASS * outcome[1]:
            fit.append(name)
    return fit


def with_reward(cfg: DictConfig, reward: DictConfig) -> DictConfig:
    """The run's config with another reward in it, so the reward's ${task...} and ${paths...} resolve."""
    other = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(other):
        other.reward = reward
    return other


def reward_options() -> dict[str, Path]:
    """Every reward option Hydra can see: conf/reward/*.yaml, then a user's --config-dir or hydra.searchpath."""
    from hydra.core.hydra_config import HydraConfig

    from rest_loop.resources import CONF

    dirs = [CONF]
    if HydraConfig.initialized():
        dirs = [Path(s.path) for s in HydraConfig.get().runtime.config_sources if s.schema == "file"] or dirs
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted((folder / "reward").glob("*.yaml")):
            found.setdefault(path.stem, path)  # the first folder on the search path wins, as in Hydra
    return dict(sorted(found.items()))


def clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."

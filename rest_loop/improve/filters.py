"""Filter judged samples down to the training set, recording what each stage lets through.

The stages run in the order `filter.stages` names (default: all of them, in this order):

    ok          keep judged samples only: unparsed and errored ones have no score and are never kept
    threshold   score >= filter.threshold, or this round's entry of filter.threshold_schedule
    percentile  score >= the filter.percentile-th percentile of the scores reaching the stage,
                over all prompts or per prompt (filter.percentile_scope)
    dedup       drop repeats of a completion within a prompt; the best-scored copy stays, ties to the lower sample_idx
                (filter.dedup: none, exact, or normalised: whitespace collapsed and casefolded)
    top_k       per prompt the filter.top_k best scores, ties to the lower sample_idx (1: best-of-n)
    cap         per prompt at most filter.max_per_prompt, a random subset seeded by (seed, round, prompt):
                ReST-EM keeps up to 10 correct solutions per problem, all scoring 1.0, so picking by score
                would only pick by index

Each stage leaves one record, `{"stage": name, "in": n, "out": m, **details}`; a stage that is
switched off still leaves one, with `"off": True` and in == out, so stats.json shows every stage.

    >>> from rest_loop.records import Judgement, Sample
    >>> s = [Sample(1, "p", i, t, 1, "base", 0) for i, t in enumerate(["7", " 7", "8"])]
    >>> j = [Judgement("p", 0, 1.0, "ok"), Judgement("p", 1, 1.0, "ok"), Judgement("p", 2, None, "unparsed")]
    >>> kept, stages = select(s, j, FilterConfig(threshold=0.5))
    >>> [x.sample_idx for x, _ in kept]
    [0]
    >>> [(r["stage"], r["in"], r["out"]) for r in stages]
    [('ok', 3, 2), ('threshold', 2, 2), ('percentile', 2, 2), ('dedup', 2, 1), ('top_k', 1, 1), ('cap', 1, 1)]
    >>> stages[0]
    {'stage': 'ok', 'in': 3, 'out': 2, 'unparsed': 1, 'error': 0}
"""

from __future__ import annotations

import dataclasses

import random
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from rest_loop.config import FilterConfig
from rest_loop.records import Judgement, Sample

Pair = tuple[Sample, Judgement]


class NothingKept(RuntimeError):
    pass


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def by_prompt(pairs: list[Pair]) -> dict[str, list[Pair]]:
    groups: dict[str, list[Pair]] = defaultdict(list)  # insertion order: prompts in order of first appearance
    for s, j in pairs:
        groups[s.prompt_id].append((s, j))
    return groups


def keep_only(pairs: list[Pair], chosen: list[Pair]) -> list[Pair]:
    """`pairs` restricted to `chosen`, in the order of `pairs`."""
    keys = {(s.prompt_id, s.sample_idx) for s, _ in chosen}
    return [(s, j) for s, j in pairs if (s.prompt_id, s.sample_idx) in keys]


# Each stage takes the pairs reaching it, the config, the round and the seed, and returns the pairs
# it keeps and the details for its record, or None for the details when it is switched off.


def ok(pairs, cfg, round, seed):
    dropped = [j.status for _, j in pairs if j.status != "ok"]
    return ([(s, j) for s, j in pairs if j.status == "ok"],
            {"unparsed": dropped.count("unparsed"), "error": dropped.count("error")})


def threshold(pairs, cfg, round, seed):
    t = cfg.threshold_at(round)
    return [(s, j) for s, j in pairs if j.score >= t], {"threshold": t}


def percentile(pairs, cfg, round, seed):
    if cfg.percentile is None:
        return pairs, None
    details = {"percentile": cfg.percentile, "scope": cfg.percentile_scope}
    if cfg.percentile_scope == "prompt":  # each prompt against its own scores: keeps the top of hard prompts too
        chosen = []
        for group in by_prompt(pairs).values():
            cutoff = np.percentile([j.score for _, j in group], cfg.percentile)
            chosen += [(s, j) for s, j in group if j.score >= cutoff]
        return keep_only(pairs, chosen), {**details, "cutoff": None}
    if not pairs:
        return pairs, {**details, "cutoff": None}
    cutoff = float(np.percentile([j.score for _, j in pairs], cfg.percentile))
    return [(s, j) for s, j in pairs if j.score >= cutoff], {**details, "cutoff": cutoff}


def dedup(pairs, cfg, round, seed):
    if cfg.dedup == "none":
        return pairs, None
    key = normalise if cfg.dedup == "normalised" else str
    best: dict[tuple[str, str], tuple] = {}
    for s, j in pairs:  # of repeats, the best-scored stays (a judge may score two copies differently),
        k = (s.prompt_id, key(s.text))  # ... and of equal scores the first, since pairs are in sample_idx order
        if k not in best or j.score > best[k][1].score:
            best[k] = (s, j)
    return keep_only(pairs, list(best.values())), {"mode": cfg.dedup}


def top_k(pairs, cfg, round, seed):
    if cfg.top_k is None:
        return pairs, None
    chosen = [x for group in by_prompt(pairs).values()
              for x in sorted(group, key=lambda sj: (-sj[1].score, sj[0].sample_idx))[: cfg.top_k]]
    return keep_only(pairs, chosen), {"top_k": cfg.top_k}


def cap(pairs, cfg, round, seed):
    m = cfg.max_per_prompt
    if m is None:
        return pairs, None
    chosen = []
    for pid, group in by_prompt(pairs).items():
        # seeded per prompt, so a prompt's subset does not depend on which other prompts got here
        chosen += group if len(group) <= m else random.Random(f"{seed}:{round}:{pid}").sample(group, m)
    return keep_only(pairs, chosen), {"max_per_prompt": m, "seed": seed}


# FilterConfig.STAGES lists the same names, for validation; a test keeps the two in step
STAGES: dict[str, Callable] = {"ok": ok, "threshold": threshold, "percentile": percentile, "dedup": dedup,
                               "top_k": top_k, "cap": cap}


def select(samples: list[Sample], judgements: list[Judgement], cfg: FilterConfig, round: int = 1, seed: int = 0,
           step: int = 1, dropped: dict | None = None) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Return the kept (sample, judgement) pairs and one record per stage of `cfg.stages`:
    {"stage": name, "in": n, "out": m, **details}, or {..., "off": True} for a stage switched off.

    `round` and `step` (1-based) pick the scheduled threshold; `seed` and `round` seed the cap, so the
    rising thresholds of a round's steps keep nested subsets. The kept pairs come in a fixed order:
    prompts as they first appear in `samples`, then by sample_idx. A `dropped` dict is filled with the
    stage that dropped each sample, keyed by (prompt_id, sample_idx): the review page shows it.
    """
    cfg = dataclasses.replace(cfg, threshold=cfg.threshold_at(round, step), threshold_schedule=None,
                              step_thresholds=None)
    if len(samples) != len(judgements) or any((s.prompt_id, s.sample_idx) != (j.prompt_id, j.sample_idx)
                                               for s, j in zip(samples, judgements)):
        raise ValueError("select: judgements must match samples one to one, in the same order")
    first = {}
    for s in samples:
        first.setdefault(s.prompt_id, len(first))
    pairs = sorted(zip(samples, judgements), key=lambda sj: (first[sj[0].prompt_id], sj[0].sample_idx))
    records = []
    for name in cfg.stages:
        out, details = STAGES[name](pairs, cfg, round, seed)
        details = {"off": True} if details is None else details  # an off stage is recorded all the same
        records.append({"stage": name, "in": len(pairs), "out": len(out), **details})
        if dropped is not None:
            left = {(s.prompt_id, s.sample_idx) for s, _ in out}
            dropped.update({(s.prompt_id, s.sample_idx): name for s, _ in pairs
                            if (s.prompt_id, s.sample_idx) not in left})
        pairs = out
    return pairs, records


def histogram(scores: list[float], bins: int = 10) -> dict[str, int]:
    counts = [0] * bins
    for x in scores:
        counts[min(int(x * bins), bins - 1)] += 1
    return {f"{i / bins:.1f}-{(i + 1) / bins:.1f}": c for i, c in enumerate(counts)}

"""Filter judged samples down to the training set, counting what each stage lets through.

Stages, in order: judged ok (unparsed and errored samples are dropped, never scored),
score >= threshold, per-prompt dedup, per-prompt cap (best scores first).

    >>> from rest_loop.records import Judgement, Sample
    >>> s = [Sample(0, "p", i, t, 1, "base", 0) for i, t in enumerate(["7", " 7", "8"])]
    >>> j = [Judgement("p", 0, 1.0, "ok"), Judgement("p", 1, 1.0, "ok"), Judgement("p", 2, None, "unparsed")]
    >>> kept, counts = select(s, j, FilterConfig(threshold=0.5))
    >>> [x.sample_idx for x, _ in kept], counts
    ([0], {'judged': 3, 'ok': 2, 'threshold': 2, 'dedup': 1, 'cap': 1})
"""

from __future__ import annotations

from collections import defaultdict

from rest_loop.config import FilterConfig
from rest_loop.records import Judgement, Sample


class NothingKept(RuntimeError):
    pass


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()


def select(samples: list[Sample], judgements: list[Judgement], cfg: FilterConfig):
    """Return [(sample, judgement)] kept, and the count after each stage."""
    pairs = list(zip(samples, judgements))
    counts = {"judged": len(pairs)}
    pairs = [(s, j) for s, j in pairs if j.status == "ok"]
    counts["ok"] = len(pairs)
    pairs = [(s, j) for s, j in pairs if j.score >= cfg.threshold]
    counts["threshold"] = len(pairs)
    if cfg.dedup:
        seen: set[tuple[str, str]] = set()
        unique = []
        for s, j in pairs:
            key = (s.prompt_id, normalise(s.text))
            if key not in seen:
                seen.add(key)
                unique.append((s, j))
        pairs = unique
    counts["dedup"] = len(pairs)
    if cfg.max_per_prompt is not None:
        by_prompt = defaultdict(list)
        for s, j in pairs:
            by_prompt[s.prompt_id].append((s, j))
        pairs = [x for group in by_prompt.values()
                 for x in sorted(group, key=lambda sj: (-sj[1].score, sj[0].sample_idx))[: cfg.max_per_prompt]]
    counts["cap"] = len(pairs)
    return pairs, counts


def histogram(scores: list[float], bins: int = 10) -> dict[str, int]:
    counts = [0] * bins
    for x in scores:
        counts[min(int(x * bins), bins - 1)] += 1
    return {f"{i / bins:.1f}-{(i + 1) / bins:.1f}": c for i, c in enumerate(counts)}

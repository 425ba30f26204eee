"""The quality gate and the review pass: any reward term scores synthesised rows; the worst rows' reasons come back.

    judged = score(reward, rows, seeds, generator)   # one Judgement per row, its scores put in row.scores
    kept, counts = passing(rows, judged, threshold=0.5, unjudged="drop")
    mistakes = worst_reasons(rows, judged, threshold=0.5, worst=5)

A row is judged as a sample of a prompt: the reward sees the seed examples the generator was shown as the
task `input`, the generated task as the `completion`, and its generated reference (if any) as the
`reference`. So `prompts/synth/gate.j2` can rate a task for being clear, answerable and in the examples'
style, and a verifier can check the generated text (JSON validity, a label set) like any sample's.
"""

from __future__ import annotations

import re
from typing import Any

from rest_loop.records import Judgement, Prompt, Sample
from rest_loop.synth.records import SynthRow
from rest_loop.tasks.formats import Example

UNJUDGED = ("drop", "keep")  # what the gate does with a row no term could score
RATING = re.compile(r"^\W*(rating|score)\W*[:=]\s*\**\s*-?\d", re.IGNORECASE)  # a rationale judge's last line


def score(reward, rows: list[SynthRow], seeds: list[Example], generator: str) -> list[Judgement]:
    """Ask `reward` about every row; each row's scores (its lineage) are set from its judgement."""
    by_index = {ex.index: ex for ex in seeds}
    prompts, samples = {}, []
    for row in rows:
        shown = "\n\n".join(f"Example {n}:\n{by_index[j].input}" for n, j in enumerate(row.examples, 1))
        prompts[row.id] = Prompt(row.id, [], reference=row.reference, input=shown)
        samples.append(Sample(0, row.id, 0, row.input, 0, generator, 0))
    judged = reward(prompts, samples) if rows else []
    for row, j in zip(rows, judged):
        row.scores = {"gate": j.score, "status": j.status, "reason": j.reason,
                      "terms": {k: p.get("score") for k, p in j.parts.items()}}
    return judged


def passing(rows: list[SynthRow], judged: list[Judgement], threshold: float,
            unjudged: str) -> tuple[list[SynthRow], dict[str, int]]:
    """The rows at or over `threshold`, and how many were dropped for a low score or for having none."""
    kept, low, none = [], 0, 0
    for row, j in zip(rows, judged):
        if j.status != "ok":
            none += 1
            if unjudged == "keep":
                kept.append(row)
        elif j.score < threshold:
            low += 1
        else:
            kept.append(row)
    return kept, {"in": len(rows), "kept": len(kept), "below_threshold": low, "unjudged": none}


def quality(judged: list[Judgement], threshold: float) -> dict[str, Any]:
    """Mean gate score over the rows scored, and the share of all rows at or over the threshold."""
    ok = [j.score for j in judged if j.status == "ok"]
    return {"rows": len(judged), "scored": len(ok), "mean_score": round(sum(ok) / len(ok), 4) if ok else None,
            "pass_rate": round(sum(s >= threshold for s in ok) / len(judged), 4) if judged else None}


def worst_reasons(rows: list[SynthRow], judged: list[Judgement], threshold: float, worst: int) -> list[str]:
    """The judge's reasons for the `worst` lowest-scored rows under the threshold, each once, lowest first."""
    low = sorted((j.score, i) for i, j in enumerate(judged) if j.status == "ok" and j.score < threshold)
    reasons: list[str] = []
    for _, i in low:
        reason = explanation(judged[i])
        if reason and reason not in reasons:
            reasons.append(reason)
        if len(reasons) == worst:
            break
    return reasons


def explanation(j: Judgement, limit: int = 300) -> str:
    """What a judge wrote before its rating line (a rationale judge); "" when it wrote nothing else: a bare
    rating tells the generator nothing to avoid, so it never becomes a mistake in the prompt."""
    for part in j.parts.values():
        text = (part.get("raw") or {}).get("text") if isinstance(part.get("raw"), dict) else None
        if text:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not RATING.match(ln)]
            if lines:
                said = " ".join(lines)
                return said if len(said) <= limit else said[: limit - 3] + "..."
    return ""

"""Programmatic rewards. Every reward term shares one signature:

    term(prompts: list[Prompt], samples: list[Sample]) -> list[Result]

with `prompts[i]` the prompt of `samples[i]`. A Result's score is in [0, 1] and
present only when its status is "ok"; "could not judge" is its own status.

    >>> NumericMatch()([Prompt("p", [], reference="68")], [Sample(0, "p", 0, "It is 68.", 3, "base", 0)])
    [Result(score=1.0, status='ok', reason='answer 68 == reference 68', raw=None)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rest_loop.records import Prompt, Sample, Status

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Result:
    score: float | None
    status: Status
    reason: str = ""
    raw: Any = None  # what the reward saw or produced, kept beside the score


def extract_number(text: str) -> str | None:
    """The answer in a completion: a `#### N` marker, else `\\boxed{N}`, else the last number."""
    text = text.replace(",", "")
    for pattern in (r"####\s*(-?\d+(?:\.\d+)?)", r"\\boxed\{\s*(-?\d+(?:\.\d+)?)\s*\}"):
        found = re.findall(pattern, text)
        if found:
            return found[-1]
    found = NUMBER.findall(text)
    return found[-1] if found else None


class NumericMatch:
    """1.0 when the completion's final number equals the reference, else 0.0."""

    name = "numeric_match"

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(p.reference, s.text) for p, s in zip(prompts, samples)]

    @staticmethod
    def one(reference: str | None, text: str) -> Result:
        if reference is None:
            return Result(None, "error", "the task gives no reference to match against")
        answer = extract_number(text)
        if answer is None:
            return Result(0.0, "ok", "no number in the completion")
        want = extract_number(reference)
        same = want is not None and float(answer) == float(want)
        return Result(1.0 if same else 0.0, "ok", f"answer {answer} {'==' if same else '!='} reference {want}")

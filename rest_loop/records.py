"""Typed records passed between stages, and their JSONL round-trip.

Every record names where it came from (round, prompt, sample index, policy),
so a kept training example can be traced back to the draw that produced it.
Stages never hand each other bare dicts: they hand these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "unparsed", "error"]


@dataclass
class Prompt:
    """One task input."""

    id: str  # stable across runs: derived from the task's seed and index
    messages: list[dict[str, str]]  # chat messages, the task template already rendered
    reference: str | None = None  # gold answer where the task has one
    input: str = ""  # the raw task input, for judge templates
    target: str | None = None  # an original full response (ReST's dataset D), for trainer.mix_original
    aliases: list[str] = field(default_factory=list)  # other right answers, beside `reference` (QA tasks)
    support: list[str] = field(default_factory=list)  # ids of the documents that hold the answer (retrieval recall)


@dataclass
class Sample:
    """One completion drawn in Grow."""

    round: int
    prompt_id: str
    sample_idx: int  # 0..n-1 within the prompt
    text: str
    num_tokens: int
    policy: str  # "base" or the adapter path that generated it
    seed: int  # the engine seed of the run
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, ... as used
    finish_reason: str | None = None


@dataclass
class Judgement:
    """The reward of one sample: a score in [0, 1] only when status is ok."""

    prompt_id: str
    sample_idx: int
    score: float | None  # None unless status == "ok": never a fake number
    status: Status
    reason: str = ""  # why: the verifier's finding or the parse failure
    parts: dict[str, Any] = field(default_factory=dict)  # per reward term: score, status, raw output


@dataclass
class KeptExample:
    """One training example chosen by Improve, with its lineage."""

    round: int
    prompt_id: str
    sample_idx: int  # -1 for an original example
    messages: list[dict[str, str]]  # the prompt as the policy saw it
    completion: str
    score: float | None  # None for an original example: it was never scored
    policy: str  # the policy that generated it; "original" for the task's own target
    seed: int
    reward: str  # the reward that scored it, with its judge templates' versions
    step: int = 1  # the Improve step of the round that kept it
    source: str = "grown"  # grown: sampled in Grow and kept by Improve; original: the task's target


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type, row: dict[str, Any]):
    if hasattr(cls, "from_dict"):  # a record with nested records (an agent's Trajectory) reads itself
        return cls.from_dict(row)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in row.items() if k in names})

"""Typed records of agent rollouts: a Trajectory is the steps one policy took on one question.

Each step is one LLM call (the agent's turn) and, when it called a tool, that tool's observation.
Token ids are kept as the engine produced and read them, so fine-tuning trains on exactly what the
policy generated and saw (nothing is rendered again between Grow and training):

    prompt_ids       the question rendered by the chat template, with the tools, and the format's lead
                     (read, never trained on)
    step.token_ids   what the policy generated in this step (trained on)
    step.observation_ids  the tool's reply wrapped in the template's turn markers, and the next turn's
                     lead (read, masked in training)

so a trajectory's whole token sequence is prompt_ids + sum(step.token_ids + step.observation_ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# ok: the action parsed; unparsed: the text held no action in the format (never repaired)
ParseStatus = Literal["ok", "unparsed"]
# what ended a trajectory
StopReason = Literal["finish", "max_steps", "max_tokens", "no_action", "context"]


@dataclass
class Step:
    """One agent turn: the text it generated, the action parsed from it, and the tool's reply."""

    text: str  # the turn, decoded: the format's lead (see actions.py) and what the policy generated
    token_ids: list[int]  # exactly the tokens the policy generated (the lead ends the ids it read)
    finish_reason: str | None  # the engine's: stop, length
    parse: ParseStatus  # whether an action could be read from `text`
    tool: str | None = None  # the tool called (None when unparsed)
    arguments: dict[str, Any] = field(default_factory=dict)  # its arguments, as parsed
    observation: str | None = None  # what the tool returned, or its error, as the agent was shown it
    observation_ids: list[int] = field(default_factory=list)  # the tokens the agent read after this step
    tool_status: str | None = None  # ok, or the tool error: unknown_tool, bad_arguments, exception, timeout, too_long
    thought: str = ""  # ReAct's Thought, where the format has one


@dataclass
class Trajectory:
    """One rollout of a policy on one question, from the prompt to the stop."""

    round: int
    prompt_id: str
    sample_idx: int  # 0..n-1 within the prompt
    policy: str  # "base", "round_001", or "original" for an imported trajectory
    seed: int  # the engine seed of the run
    prompt_ids: list[int] = field(default_factory=list)  # the rendered question with tools
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None  # the final answer (finish's argument); None if it never finished
    stop: StopReason = "max_steps"
    sampling: dict[str, Any] = field(default_factory=dict)
    env: str = ""  # the environment's identity (tools and their versions, corpus digest)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def tool_errors(self) -> int:
        return sum(s.tool_status not in (None, "ok") for s in self.steps)

    @property
    def num_tokens(self) -> int:
        """Tokens the policy generated."""
        return sum(len(s.token_ids) for s in self.steps)

    @property
    def valid_actions(self) -> int:
        return sum(s.parse == "ok" for s in self.steps)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Trajectory":
        return cls(**{**row, "steps": [Step(**s) for s in row.get("steps", [])]})

    def history(self, turn: int) -> list[int]:
        """What the policy read before step `turn`: the prompt, then each earlier step and its observation."""
        ids = list(self.prompt_ids)
        for s in self.steps[:turn]:
            ids += s.token_ids + s.observation_ids
        return ids

    def ids(self) -> tuple[list[int], list[int]]:
        """The whole token sequence the policy generated and read, and a mask that is 1 on the tokens it
        generated (0 on the prompt and the observations): what whole-trajectory training uses."""
        ids, mask = list(self.prompt_ids), [0] * len(self.prompt_ids)
        for s in self.steps:
            ids += s.token_ids + s.observation_ids
            mask += [1] * len(s.token_ids) + [0] * len(s.observation_ids)
        return ids, mask


@dataclass
class TokenExample:
    """One fine-tuning example cut from a kept trajectory, as token ids, with its lineage.

    Per step (the paper's way): the history up to step `turn` is the prompt and that step's tokens are
    the target. Whole trajectory (`turn` None): every agent turn is a target, the observations are not.
    """

    round: int
    prompt_id: str
    sample_idx: int
    turn: int | None  # the step trained on; None: the whole trajectory
    input_ids: list[int]
    mask: list[int]  # 1 where the loss applies: tokens the policy generated
    score: float | None
    policy: str  # the policy that generated the trajectory
    seed: int
    reward: str  # the reward that kept it
    step: int = 1  # the Improve step of the round that kept it
    source: str = "grown"

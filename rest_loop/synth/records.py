"""The records prompt synthesis passes between its steps: requests to the generator, parsed replies, rows.

Dataclasses only. A `SynthRow` is written as one line of the synthesised dataset: `input` (and
`reference`) are what `task=from_file` reads; the other columns are its lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ReplyStatus = Literal["ok", "partial", "unparsed", "empty"]
ItemStatus = Literal["ok", "empty", "invalid"]


@dataclass
class Request:
    """One call to the generator: what it is shown and what it was dealt (not backends.Request, the wire form)."""

    index: int  # the i-th request of the synthesis: the deal below is a pure function of (seed, index)
    examples: list[int]  # the seed rows shown, 0-based rows of the seed file, in the order shown
    attributes: dict[str, str]  # deck name -> the entry dealt to this request
    messages: list[dict[str, str]]  # the rendered prompt, as chat messages
    count: int  # how many new inputs the prompt asks for
    template: str  # the template's name@hash (Template.version)


@dataclass
class Item:
    """One entry of a generator's reply."""

    status: ItemStatus  # ok: has a non-empty input; empty: blank; invalid: not a string or an {"input": ...}
    input: str = ""
    reference: str | None = None
    reason: str = ""  # why it is not ok


@dataclass
class Parsed:
    """A generator reply read as a list of items; nothing in `items` is made up."""

    status: ReplyStatus  # partial: a JSON list cut off or broken; the whole items before the break are kept
    form: str | None  # "json" or "numbered": how the list was written; None when none was found
    items: list[Item] = field(default_factory=list)
    reason: str = ""


@dataclass
class SynthRow:
    """One synthesised task input with its lineage; a line of the dataset file."""

    id: str  # "synth-<request>-<item>": stable for the same seed and deal
    input: str
    reference: str | None  # the generator's reference answer, when the template asked for one
    generator: str  # the model (or endpoint model name) that wrote it
    template: str  # the synthesis template's name@hash
    request: int  # Request.index
    item: int  # 0-based position in its reply
    examples: list[int]  # seed rows shown to the generator
    attributes: dict[str, str]  # deck entries dealt to its request
    scores: dict[str, Any] | None = None  # filled by the quality gate (a later stage); None: not scored yet

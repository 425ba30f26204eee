"""What every task provides: disjoint train and held-out prompts, already rendered to chat messages."""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from rest_loop.config import DataError
from rest_loop.records import Prompt
from rest_loop.templates import Template

log = logging.getLogger(__name__)


class Task:
    """A prompts source plus a prompt template plus an optional reference per prompt.

    Subclasses fill `self.train` and `self.heldout` with `Prompt`s, then call `check_disjoint`: no id and
    no prompt text (normalised: case, whitespace and Unicode forms aside) may be in both, unless
    `allow_overlap` (a held-out prompt the policy trained on measures recall, not skill).
    `metric` is the held-out metric where prompts have references: a verifier whose mean is
    reported as accuracy (e.g. NumericMatch). Without one, evaluation uses a reward's score.
    """

    name: str = "task"
    train: list[Prompt]
    heldout: list[Prompt]

    def __init__(self, template: str, prompts_dir: str, system_prompt: str | None = None, metric=None,
                 allow_overlap: bool = False):
        self.template = Template(prompts_dir, template)
        self.system_prompt = system_prompt
        self.metric = metric
        self.allow_overlap = allow_overlap

    def make_prompt(self, id: str, input: str, reference: str | None = None, target: str | None = None,
                    context: list[dict[str, str]] | None = None, system: str | None = None,
                    columns: dict[str, Any] | None = None, **variables) -> Prompt:
        """A Prompt whose messages are [system] + context + [user: the template rendered].

        `system` is the row's own system prompt, else the task's `system_prompt`; `context` the
        earlier turns of a conversation, oldest first. The template sees `columns` (a data row,
        given as a dict so a column may be called `id` or `target`), then `variables`, then `input`.
        """
        system = system or self.system_prompt
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": turn["role"], "content": turn["content"]} for turn in context or []]  # copies
        content = self.template.render(**{**(columns or {}), **variables, "input": input})
        messages.append({"role": "user", "content": content})
        return Prompt(id=id, messages=messages, reference=reference, input=input, target=target)

    def check_disjoint(self) -> None:
        overlap = {p.id for p in self.train} & {p.id for p in self.heldout}
        if overlap:
            raise ValueError(f"task {self.name}: {len(overlap)} prompts are in both train and held-out splits")
        train = {}
        for p in self.train:
            train.setdefault(prompt_text(p), p.id)
        same = [(p.id, train[key]) for p in self.heldout if (key := prompt_text(p)) in train]
        if not same:
            return
        what = (f"task {self.name}: {len(same)} of {len(self.heldout)} held-out prompts have the same text as a "
                f"train prompt (e.g. {same[0][0]} and {same[0][1]})")
        if not self.allow_overlap:
            raise DataError(f"{what}, so held-out scores would partly measure recall. Hold out other rows (another "
                            f"file or split), or set task.allow_overlap=true to run anyway")
        log.warning("%s; task.allow_overlap=true: held-out scores partly measure recall", what)

    def describe(self) -> dict:
        return {"name": self.name, "template": self.template.version, "train": len(self.train),
                "heldout": len(self.heldout), "metric": getattr(self.metric, "name", None),
                "targets": sum(p.target is not None for p in self.train)}


def prompt_text(prompt: Prompt) -> str:
    """A prompt's messages as one string, compared alike whatever the case, spacing or Unicode form."""
    text = "\n".join(f"{m['role']}: {m['content']}" for m in prompt.messages)
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

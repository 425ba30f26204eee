"""What every task provides: disjoint train and held-out prompts, already rendered to chat messages."""

from __future__ import annotations

from rest_loop.records import Prompt
from rest_loop.templates import Template


class Task:
    """A prompts source plus a prompt template plus an optional reference per prompt.

    Subclasses fill `self.train` and `self.heldout` with `Prompt`s whose ids never overlap.
    """

    name: str = "task"
    train: list[Prompt]
    heldout: list[Prompt]

    def __init__(self, template: str, prompts_dir: str, system_prompt: str | None = None):
        self.template = Template(prompts_dir, template)
        self.system_prompt = system_prompt

    def make_prompt(self, id: str, input: str, reference: str | None = None, **variables) -> Prompt:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": self.template.render(input=input, **variables)})
        return Prompt(id=id, messages=messages, reference=reference, input=input)

    def check_disjoint(self) -> None:
        overlap = {p.id for p in self.train} & {p.id for p in self.heldout}
        if overlap:
            raise ValueError(f"task {self.name}: {len(overlap)} prompts are in both train and held-out splits")

    def describe(self) -> dict:
        return {"name": self.name, "template": self.template.version, "train": len(self.train),
                "heldout": len(self.heldout)}

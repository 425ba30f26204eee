"""What every tool is and what calling one returns.

A tool is a class with a name, a description, a JSON schema of its parameters and a version,
and a `run(**arguments) -> str` that may raise. The Environment (rest_loop/agent/env.py) checks
the arguments, runs the tool with a time limit and turns every failure into a ToolResult, so a
tool itself never has to catch anything. Adding a tool is adding a file beside this one:

    >>> class Echo(Tool):
    ...     name, description = "echo", "Repeat the text."
    ...     parameters = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    ...     def run(self, text: str) -> str:
    ...         return text
    >>> Echo().spec()["function"]["name"], Echo().identity()
    ('echo', {'name': 'echo', 'version': '1'})

A ReAct text action `echo[hi]` carries one string, which the action parser gives to the tool's
first required parameter: so every tool lists a required string parameter first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

# ok: the tool ran; the others are what went wrong, each shown to the agent as a plain sentence
ToolStatus = Literal["ok", "unknown_tool", "bad_arguments", "exception", "timeout", "too_long"]


@dataclass
class ToolResult:
    """What a tool call gave back: the observation the agent reads, and how the call went."""

    text: str  # the observation; for a failure, what went wrong and what the tool expects
    status: ToolStatus = "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Tool(ABC):
    """Base of every tool. Subclasses set the class attributes below and implement run()."""

    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema object: {"type": "object", "properties": {...}, "required": [...]}
    version: str = "1"  # bump when the same arguments would give a different output

    @abstractmethod
    def run(self, **arguments: Any) -> str:
        """The observation for these (already validated) arguments; raise to report a failure."""

    def spec(self) -> dict[str, Any]:
        """The OpenAI / Hermes tool schema that chat templates render into the prompt."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def identity(self) -> dict[str, Any]:
        """What decides this tool's outputs; goes into the pool cache key. Extend with data digests."""
        return {"name": self.name, "version": self.version}

    def usage(self) -> str:
        """One line saying what the tool takes, for error observations: `search(query: string)`."""
        properties = self.parameters.get("properties", {})
        required = self.parameters.get("required", [])
        ordered = [*required, *(p for p in properties if p not in required)]  # required first, as the parser reads
        shown = [f"{p}: {properties.get(p, {}).get('type', 'any')}" + ("" if p in required else " (optional)")
                 for p in ordered]
        return f"{self.name}({', '.join(shown)})"

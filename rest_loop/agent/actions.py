"""Action formats: how the agent is shown its tools, how its action is read, how a tool's reply comes back.

Two formats, chosen by config (`agent.format`):

    react       plain ReAct text. The system prompt lists the tools; the agent writes
                    Thought: I should add the two numbers.
                    Action: calculator[23 + 45]
                and the observation comes back as a user turn `Observation: 68`.
    tool_calls  the model's own chat-template tool calls (Hermes/Qwen): the tools go to the chat template
                as `tools=`, the agent writes <tool_call>{"name": ..., "arguments": {...}}</tool_call>, and the
                observation comes back as a `role: tool` message. A reply without a tool call is the final
                answer. Where the chat template ignores `tools=` (SmolLM2's does), the tools are described in
                the system prompt instead, in the same Hermes form.

`parse` never repairs: a reply that holds no action in the format is `unparsed`, and the rollout
records it so. `regex()` is the shape of a valid action, for vLLM's structured outputs
(`agent.constrain=true`), which makes a small model always write a parsable one.

Constrained (and `lead=true`, the default), every turn begins with the same literal text, its `lead`
(`Action:`, `Thought:` or `<tool_call>`). The lead is put after the turn's opening as the tokenizer
spells it, and the policy generates the rest. Left to the grammar, a small model spells the literal
part in odd pieces (`A|ct|i|on|:` where the tokenizer writes `Action|:`): 1.5x the tokens, and a
history unlike any text it was trained on. A turn's text is its lead and what the policy generated;
its token ids are only what the policy generated, the lead being part of what it read.

    >>> fmt = ReactFormat(thought=True)
    >>> fmt.parse("Thought: add them\\nAction: calculator[23 + 45]", {"calculator": "expression"})
    Action(status='ok', tool='calculator', arguments={'expression': '23 + 45'}, thought='add them')
    >>> fmt.parse("The answer is 68.", {"calculator": "expression"}).status
    'unparsed'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rest_loop.templates import Template

SENTINEL = "\u2063REST_LOOP_TURN\u2063"  # marks where the agent's turn ends in a rendered template


@dataclass
class Action:
    status: str  # ok | unparsed
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    thought: str = ""
    answer: str | None = None  # a final answer given as plain text (tool_calls format), not through a tool


def argument_shape(spec: dict, max_chars: int, quote: bool = False) -> str:
    """A regex for a one-string action's argument: the parameter's `x-action-pattern` where the tool gives
    one (the calculator: digits and operators), else any text on one line without the format's delimiters."""
    pattern = spec["function"]["parameters"]["properties"][first_parameter(spec)].get("x-action-pattern")
    if pattern:
        return f"({pattern})"
    return rf'[^"\\\n]{{1,{max_chars}}}' if quote else rf"[^\[\]\n]{{1,{max_chars}}}"


def first_parameter(spec: dict) -> str:
    """The parameter a one-string action (`tool[text]`) fills: the tool's first required parameter."""
    params = spec["function"].get("parameters", {})
    required = params.get("required") or list(params.get("properties", {}))
    if not required:
        raise ValueError(f"tool {spec['function']['name']}: has no parameter for a text action to fill")
    return required[0]


class Format:
    """What both formats share: how the history is turned into the tokens the policy reads."""

    observation_role = "user"
    name = "format"
    thought = False  # whether the agent writes a Thought before its action

    def __init__(self, prompts_dir: str, system_template: str, constrain: bool = False, max_chars: int = 200,
                 lead: bool = True):
        self.template = Template(prompts_dir, system_template)
        self.constrain, self.max_chars, self.use_lead = constrain, max_chars, lead

    def version(self) -> str:
        lead = ":lead" if self.lead() else ""
        return f"{self.name}:{self.template.version}:{'constrained' if self.constrain else 'free'}{lead}"

    def lead(self) -> str:
        """The literal text every constrained turn begins with, read as the end of the turn's opening
        (empty when decoding is free or `lead=false`: the policy writes its whole turn)."""
        return self.literal_start() if self.constrain and self.use_lead else ""

    def literal_start(self) -> str:
        return ""

    def turn_text(self, generated: str) -> str:
        """A turn as the agent wrote it: the lead it was given and what it generated."""
        return self.lead() + generated

    def messages(self, question: list[dict], specs: list[dict], native_tools: bool) -> list[dict]:
        """The question's messages with the agent's instructions as (or before) its system prompt."""
        system = self.template.render(tools=specs, native=native_tools, thought=self.thought).strip()
        rest = [m for m in question if m["role"] != "system"]
        own = "\n\n".join(m["content"] for m in question if m["role"] == "system")
        return [{"role": "system", "content": f"{system}\n\n{own}" if own else system}, *rest]

    def observation_message(self, text: str) -> dict:
        return {"role": self.observation_role, "content": text}

    def parse(self, text: str, params: dict[str, str]) -> Action:
        raise NotImplementedError

    def regex(self, specs: list[dict]) -> str:
        """The shape of what the policy generates in a turn: a valid action, after the lead."""
        full, lead = self.action_regex(specs), re.escape(self.lead())
        assert full.startswith(lead), "a lead is the literal start of the action's shape"
        return full[len(lead):]

    def action_regex(self, specs: list[dict]) -> str:
        raise NotImplementedError


class ReactFormat(Format):
    """Thought / Action: tool[input] / Observation."""

    name = "react"
    ACTION = re.compile(r"Action:\s*([A-Za-z_][\w-]*)\s*\[(.*)\]\s*$", re.DOTALL)
    THOUGHT = re.compile(r"Thought:\s*(.*?)\s*(?=Action:|$)", re.DOTALL)

    def __init__(self, prompts_dir: str, system_template: str = "agent/react.j2", constrain: bool = False,
                 thought: bool = True, max_chars: int = 200, lead: bool = True):
        super().__init__(prompts_dir, system_template, constrain, max_chars, lead)
        self.thought = thought

    def version(self) -> str:
        return super().version() + (":thought" if self.thought else "")

    def literal_start(self) -> str:
        return "Thought:" if self.thought else "Action:"

    def observation_message(self, text: str) -> dict:
        return {"role": "user", "content": f"Observation: {text}"}

    def parse(self, text: str, params: dict[str, str]) -> Action:
        text = text.strip()
        match = self.ACTION.search(text)
        if not match or "\n" in match.group(2):
            return Action("unparsed", thought=text)
        thought = self.THOUGHT.search(text[:match.start()])
        name = match.group(1)  # an unknown tool parses: the environment answers that it has none
        return Action("ok", name, {params.get(name, "input"): match.group(2).strip()},
                      thought.group(1).strip() if thought else "")

    def action_regex(self, specs: list[dict]) -> str:
        actions = "|".join(rf"{re.escape(s['function']['name'])}\[{argument_shape(s, self.max_chars)}\]" for s in specs)
        action = rf"Action: ({actions})"
        return rf"Thought: [^\n]{{1,{self.max_chars}}}\n{action}" if self.thought else action


class ToolCallFormat(Format):
    """Hermes/Qwen tool calls: <tool_call>{"name": ..., "arguments": {...}}</tool_call>."""

    name = "tool_calls"
    observation_role = "tool"
    CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)

    def __init__(self, prompts_dir: str, system_template: str = "agent/tool_calls.j2", constrain: bool = False,
                 thought: bool = False, max_chars: int = 200, lead: bool = True):
        super().__init__(prompts_dir, system_template, constrain, max_chars, lead)
        self.thought = thought  # a line of reasoning before the call (what Qwen writes unprompted)

    def literal_start(self) -> str:
        return "" if self.thought else "<tool_call>"

    def parse(self, text: str, params: dict[str, str]) -> Action:
        calls = self.CALL.findall(text)
        if not calls:
            if "<tool_call>" in text:  # began a call and never closed it
                return Action("unparsed", thought=text)
            return Action("ok", answer=text.strip())
        try:
            call = json.loads(calls[0])
        except json.JSONDecodeError:
            return Action("unparsed", thought=text)
        args = call.get("arguments", {}) if isinstance(call, dict) else None
        if isinstance(args, str):  # OpenAI's wire form: arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return Action("unparsed", thought=text)
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(args, dict):
            return Action("unparsed", thought=text)
        return Action("ok", call["name"], args, thought=text[:text.find("<tool_call>")].strip())

    def action_regex(self, specs: list[dict]) -> str:
        calls = "|".join(rf'\{{"name": "{re.escape(s["function"]["name"])}", "arguments": '
                         rf'\{{"{re.escape(first_parameter(s))}": "{argument_shape(s, self.max_chars, True)}"\}}\}}'
                         for s in specs)
        call = rf"<tool_call>\n({calls})\n</tool_call>"
        return rf"[^\n<]{{1,{self.max_chars}}}\n{call}" if self.thought else call

"""The agent's environment: its tools, its step limit and its stop condition (the `finish` tool).

Hydra builds one from conf/env/<name>.yaml (`instantiate(cfg.env)`); each tool is a `_target_`
under `tools`, keyed by its name. `call` is the one way a rollout touches a tool, and it never
raises: an unknown tool, arguments that do not fit the tool's schema, an exception inside the
tool, a tool that runs past `timeout_s` and an observation longer than `max_observation_chars`
each come back as a ToolResult whose text tells the agent what went wrong and what the tool takes.

    >>> from rest_loop.agent.tools.calculator import Calculator
    >>> from rest_loop.agent.tools.finish import Finish
    >>> env = Environment({"calculator": Calculator(), "finish": Finish()}, max_steps=3)
    >>> env.call("calculator", {"expression": "(4+5)*2"})
    ToolResult(text='18', status='ok')
    >>> env.call("calculator", {}).status, env.is_finish("finish")
    ('bad_arguments', True)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from rest_loop.agent.tools.base import Tool, ToolResult
from rest_loop.config import ConfigError, check


class Environment:
    """An environment owns its tools, its step limit and its stop condition (the `finish` tool)."""

    def __init__(self, tools: Mapping[str, Any], max_steps: int = 4, timeout_s: float = 5.0,
                 max_observation_chars: int = 1000, finish: str = "finish", name: str = "env"):
        check("env.max_steps", isinstance(max_steps, int) and max_steps >= 1, "must be a whole number >= 1", max_steps)
        check("env.timeout_s", isinstance(timeout_s, (int, float)) and timeout_s > 0, "must be > 0", timeout_s)
        check("env.max_observation_chars", isinstance(max_observation_chars, int) and max_observation_chars >= 1,
              "must be a whole number >= 1", max_observation_chars)
        self.tools: dict[str, Tool] = {str(key): built(str(key), tool) for key, tool in tools.items()}
        check("env.tools", bool(self.tools), "needs at least one tool", dict(tools))
        check("env.finish", finish in self.tools, f"must name one of the tools ({', '.join(self.tools)})", finish)
        self.max_steps, self.timeout_s, self.max_observation_chars = max_steps, float(timeout_s), max_observation_chars
        self.finish, self.name = finish, name
        self.validators = {key: validator(key, tool) for key, tool in self.tools.items()}

    def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one tool call; every failure becomes a ToolResult with its status, never an exception."""
        if tool not in self.tools:
            return ToolResult(f"There is no tool named {str(tool)!r}. The tools are: {self.usages()}.", "unknown_tool")
        chosen = self.tools[tool]
        problem = self.argument_problem(tool, arguments)
        if problem:
            return ToolResult(f"Bad arguments for {tool}: {problem}. It takes {chosen.usage()}.", "bad_arguments")
        outcome = run_with_timeout(lambda: chosen.run(**arguments), self.timeout_s, name=f"tool-{tool}")
        if outcome is None:  # the thread is left behind: Python cannot stop it, and it is a daemon
            return ToolResult(f"{tool} gave no answer within {self.timeout_s:g} seconds and was abandoned. "
                              f"Try a simpler input.", "timeout")
        output, error = outcome
        if error is not None:
            return ToolResult(f"{tool} failed: {describe(error)}. It takes {chosen.usage()}.", "exception")
        text = output if isinstance(output, str) else str(output)
        if len(text) > self.max_observation_chars:
            return ToolResult(f"{text[:self.max_observation_chars]}\n[cut: the output was {len(text)} characters; "
                              f"these are the first {self.max_observation_chars}]", "too_long")
        return ToolResult(text, "ok")

    def argument_problem(self, tool: str, arguments: Any) -> str | None:
        """Why these arguments do not fit the tool's schema, in one phrase; None when they do."""
        if not isinstance(arguments, Mapping):
            return f"the arguments must be an object of named values, not {type(arguments).__name__}"
        error = best_match(self.validators[tool].iter_errors(dict(arguments)))
        if error is None:
            return None
        where = ".".join(str(part) for part in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message

    def specs(self) -> list[dict[str, Any]]:
        """The tools' schemas in the config's order (the order the prompt lists them in)."""
        return [tool.spec() for tool in self.tools.values()]

    def identity(self) -> dict[str, Any]:
        """Everything here that decides what a rollout sees: it goes into the pool cache key."""
        return {"name": self.name, "max_steps": self.max_steps, "timeout_s": self.timeout_s,
                "max_observation_chars": self.max_observation_chars, "finish": self.finish,
                "tools": [tool.identity() for tool in self.tools.values()]}

    def is_finish(self, tool: str | None) -> bool:
        return tool == self.finish

    def usages(self) -> str:
        return ", ".join(tool.usage() for tool in self.tools.values())

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, tools={list(self.tools)}, max_steps={self.max_steps})"


def built(key: str, tool: Any) -> Tool:
    """A tool from the config: already built by Hydra (the usual case), or a `_target_` spec to build."""
    if isinstance(tool, Mapping) and "_target_" in tool:
        from hydra.utils import instantiate  # only for specs Hydra left unbuilt (_recursive_: false)

        tool = instantiate(tool)
    if not isinstance(tool, Tool):
        raise ConfigError(f"env.tools.{key}: must be a tool (a `_target_` naming a Tool class), got {tool!r}")
    if tool.name != key:
        raise ConfigError(f"env.tools.{key}: the tool is named {tool.name!r}; its key must be its name")
    return tool


def validator(key: str, tool: Tool) -> Any:
    """The tool's parameter schema as a validator; arguments it does not name are refused by default."""
    schema = {"additionalProperties": False, **tool.parameters}  # a model's invented argument is a mistake to show
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ConfigError(f"env.tools.{key}: its parameters are not a valid JSON schema: {error.message}") from None
    return cls(schema)


def run_with_timeout(work, timeout_s: float, name: str) -> tuple[Any, BaseException | None] | None:
    """(output, None) or (None, error) from `work()` run in a daemon thread; None if it overran.

    A thread works from any thread (signals only from the main one); a daemon never blocks exit.
    """
    box: list[tuple[Any, BaseException | None]] = []

    def target():
        try:
            box.append((work(), None))
        except BaseException as error:  # SystemExit from a tool is its failure, not ours
            box.append((None, error))

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return box[0] if box else None


def describe(error: BaseException) -> str:
    """The exception as a sentence: a ValueError's message is already one; others get their type."""
    message = str(error).strip() or type(error).__name__
    return message if type(error) is ValueError else f"{type(error).__name__}: {message}"

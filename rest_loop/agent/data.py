"""Tool-calling conversations in and out: LLaMA-Factory/Glaive ShareGPT and OpenAI chat messages.

    sharegpt  {"conversations": [{"from": "human"|"gpt"|"function_call"|"observation"|"system", "value"}],
               "tools": "<JSON list of {name, description, parameters}>" (or the list), "system"?}
              a function_call value is JSON: {"name", "arguments"}, or a list of them (parallel calls)
    openai    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content", "tool_calls"?,
               "tool_call_id"?}], "tools": [{"type": "function", "function": {name, description, parameters}}]}

Each row becomes a ToolConversation: a Prompt (the messages up to and including the first user turn,
id "<file stem>-<0-based row>"), an "original" Trajectory (round 0, sample_idx -1) and the row's
tool schemas, as bare {name, description, parameters}. The trajectory's steps are the tool calls,
each with its arguments and its observation (tool_status "ok"; None when no observation came), and
its answer is the last assistant text. Step.text is the call as canonical JSON {"name", "arguments"}
and the assistant text written just before a call is its `thought`. Imported data has no token ids:
training re-tokenises imported trajectories with the policy's chat template.

Conversations (Glaive's often) go on after the first answer: a later user turn is the observation of
a step with tool USER ("user"), whose text is the assistant turn before it, so the whole row is one
trajectory and exports back as it came. Parallel calls become consecutive steps; observations are
matched to calls by tool_call_id, else in order. Export writes one call per assistant turn.

A row that does not fit raises DataError naming the file and its 1-based row (on_bad_row="error")
or is dropped with one warning (on_bad_row="skip"): a function_call value that is not JSON, an
observation with no call before it, an unknown role, tools that are not JSON.

    >>> [c] = read_tool_rows([{"conversations": [{"from": "human", "value": "2+2?"},
    ...     {"from": "function_call", "value": '{"name": "calc", "arguments": {"x": "2+2"}}'},
    ...     {"from": "observation", "value": "4"}, {"from": "gpt", "value": "4."}], "tools": "[]"}], "demo.json")
    >>> c.prompt.id, c.trajectory.steps[0].tool, c.trajectory.steps[0].observation, c.trajectory.answer
    ('demo-0', 'calc', '4', '4.')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from rest_loop.agent.records import Step, Trajectory
from rest_loop.config import DataError
from rest_loop.records import Prompt
from rest_loop.tasks.formats import BadRow, BadRows, as_list, clip, optional_text, text

USER = "user"  # the `tool` of a step whose observation is the user's next turn
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
            "function_call": "call", "observation": "tool", "tool": "tool"}  # ShareGPT's `from` and OpenAI's roles


@dataclass
class ToolConversation:
    """One imported row."""

    prompt: Prompt  # system + turns through the first user turn
    trajectory: Trajectory  # policy "original": what the assistant did after that
    tools: list[dict[str, Any]]  # the row's tool schemas: {"name", "description", "parameters"}


def load_tool_data(path: str | Path, on_bad_row: str = "error") -> list[ToolConversation]:
    """The rows of a .json (one array) or .jsonl file, read without `datasets` (which would merge schemas)."""
    path = Path(path).expanduser()
    raw = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(raw)
        rows = rows if isinstance(rows, list) else [rows]
    except json.JSONDecodeError:
        rows = []
        for n, line in enumerate(raw.splitlines(), start=1):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: not JSON ({e.msg} at column {e.colno}): {clip(line)}") from None
    return read_tool_rows(rows, str(path), on_bad_row)


def read_tool_rows(rows: list[Any], source: str, on_bad_row: str = "error") -> list[ToolConversation]:
    bad, out = BadRows(source, on_bad_row, key="on_bad_row"), []
    for i, row in enumerate(rows):
        try:
            out.append(read_row(row, f"{Path(source).stem}-{i}"))
        except BadRow as e:
            bad.add(i, e)
    bad.done(len(rows), len(out))
    return out


def read_row(row: Any, id: str) -> ToolConversation:
    if not isinstance(row, dict) or not isinstance(row.get("conversations", row.get("messages")), (list, str)):
        raise BadRow(f"a row must be an object with 'conversations' or 'messages', not {clip(row)}")
    turns = as_list(row.get("conversations", row.get("messages")), "the turns")
    tools = [schema(t, n) for n, t in enumerate(as_list(row.get("tools"), "'tools'"), start=1)]
    events = [event for n, turn in enumerate(turns, start=1) for event in read_turn(turn, n)]
    system = optional_text(row.get("system"), "'system'")
    first = next((k for k, e in enumerate(events) if e[0] == "user"), None)
    if first is None:
        raise BadRow("no user turn to use as the prompt")
    messages = [{"role": "system", "content": system}] if system else []
    for kind, content, *_ in events[: first + 1]:
        if kind not in ("system", "user", "assistant"):
            raise BadRow(f"a {'tool call' if kind == 'call' else 'observation'} comes before the first user turn")
        messages.append({"role": kind, "content": content})
    if any(e[0] == "system" for e in events[first:]):
        raise BadRow("a system turn comes after the conversation started")
    steps, answer = trajectory_steps(events[first + 1:])
    prompt = Prompt(id, messages, input=messages[-1]["content"])
    trajectory = Trajectory(round=0, prompt_id=id, sample_idx=-1, policy="original", seed=0, steps=steps,
                            answer=answer, stop="finish" if answer is not None else "no_action")
    return ToolConversation(prompt, trajectory, tools)


def read_turn(turn: Any, n: int) -> list[tuple]:
    """A turn as events: ("system"|"user"|"assistant", text), ("call", name, args, id), ("tool", text, id)."""
    if not isinstance(turn, dict):
        raise BadRow(f"turn {n} must be an object with from/value or role/content, not {clip(turn)}")
    speaker = turn.get("from", turn.get("role"))
    kind = SPEAKERS.get(str(speaker).strip().lower())
    if kind is None:
        raise BadRow(f"turn {n}: unknown role {speaker!r}; known: {sorted(SPEAKERS)}")
    content = turn.get("value", turn.get("content"))
    if kind == "call":  # ShareGPT: the value is the call, as JSON
        calls = content
        if not isinstance(content, (dict, list)):  # LLaMA-Factory writes it as a JSON string
            value = text(content, f"turn {n} (function_call) value")
            try:
                calls = json.loads(value)
            except json.JSONDecodeError as e:
                raise BadRow(f"turn {n}: the function_call value is not JSON ({e.msg}): {clip(value)}") from None
        return [call(c, n, None) for c in (calls if isinstance(calls, list) else [calls])]
    if kind == "tool":
        if not isinstance(content, str):  # a tool's JSON result written as an object
            content = json.dumps(content, ensure_ascii=False) if content is not None else ""
        return [("tool", content, turn.get("tool_call_id"))]
    events = [(kind, optional_text(content, f"turn {n} ({speaker}) text"))]
    if kind == "assistant" and turn.get("tool_calls"):  # OpenAI: text, then its calls
        events = events if events[0][1] else []
        for c in as_list(turn["tool_calls"], f"turn {n} 'tool_calls'"):
            function = c.get("function") if isinstance(c, dict) else None
            if not isinstance(function, dict):
                raise BadRow(f"turn {n}: a tool call must have a 'function' object, not {clip(c)}")
            events.append(call(function, n, c.get("id")))
    return events


def call(c: Any, n: int, id: str | None) -> tuple:
    if not isinstance(c, dict) or not isinstance(c.get("name"), str):
        raise BadRow(f"turn {n}: a tool call must be an object with a 'name', not {clip(c)}")
    args = c.get("arguments", {})
    if isinstance(args, str):  # OpenAI writes arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise BadRow(f"turn {n}: the arguments of {c['name']!r} are not JSON ({e.msg}): {clip(args)}") from None
    if not isinstance(args, dict):
        raise BadRow(f"turn {n}: the arguments of {c['name']!r} must be an object, not {clip(args)}")
    return ("call", c["name"], args, id)


def schema(tool: Any, n: int) -> dict[str, Any]:
    """A tool as {name, description, parameters}, from that or from OpenAI's {"type": "function", "function"}."""
    if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
        tool = tool["function"]
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise BadRow(f"'tools' entry {n} must be an object with a 'name', not {clip(tool)}")
    return dict(tool)


def trajectory_steps(events: list[tuple]) -> tuple[list[Step], str | None]:
    """The steps after the prompt, and the answer: the assistant text left at the end."""
    steps: list[Step] = []
    waiting: list[tuple[str | None, Step]] = []  # calls with no observation yet, and their ids
    said: list[str] = []  # assistant text not yet attached to a step
    for kind, *rest in events:
        if kind == "assistant":
            said.append(rest[0])
        elif kind == "call":
            name, args, id = rest
            step = Step(call_text(name, args), [], None, "ok", tool=name, arguments=args, thought="\n\n".join(said))
            steps.append(step)
            waiting.append((id, step))
            said = []
        elif kind == "tool":
            content, id = rest
            match = [k for k, (cid, _) in enumerate(waiting) if id is not None and cid == id]
            if not waiting or (id is not None and not match and all(cid is not None for cid, _ in waiting)):
                named = f" (tool_call_id {id!r})" if id is not None else ""
                raise BadRow(f"an observation with no call before it{named}: {clip(content)}")
            _, step = waiting.pop(match[0] if match else 0)
            step.observation, step.tool_status = content, "ok"
        else:  # a later user turn: what the user said back to the assistant's last text
            steps.append(Step("\n\n".join(said), [], None, "ok", tool=USER, observation=rest[0], tool_status="ok"))
            said, waiting = [], []
    return steps, "\n\n".join(said) if said else None


def call_text(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def export_sharegpt(trajectories: Iterable[Trajectory], prompts: Iterable[Prompt] | Mapping[str, Prompt],
                    tools: list[dict] | Mapping[str, list[dict]]) -> list[dict]:
    """LLaMA-Factory rows: conversations, tools as a JSON string, system. `tools`: one list for every
    trajectory (an agent's environment), or per prompt id (imported rows)."""
    rows = []
    for t, prompt, schemas in lined_up(trajectories, prompts, tools):
        system = "\n\n".join(m["content"] for m in prompt.messages if m["role"] == "system")
        turns = [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                 for m in prompt.messages if m["role"] != "system"]
        for step in t.steps:
            if step.tool == USER:
                turns += [{"from": "gpt", "value": step.text}, {"from": "human", "value": step.observation or ""}]
                continue
            turns += [{"from": "gpt", "value": step.thought}] if step.thought else []  # Glaive has no thought field
            turns.append({"from": "function_call", "value": call_text(step.tool or "", step.arguments)})
            turns += [{"from": "observation", "value": step.observation}] if step.observation is not None else []
        turns += [{"from": "gpt", "value": t.answer}] if t.answer is not None else []
        rows.append({"conversations": turns, "tools": json.dumps(schemas, ensure_ascii=False),
                     **({"system": system} if system else {})})
    return rows


def export_openai(trajectories: Iterable[Trajectory], prompts: Iterable[Prompt] | Mapping[str, Prompt],
                  tools: list[dict] | Mapping[str, list[dict]]) -> list[dict]:
    """OpenAI rows: messages with tool_calls (arguments as a JSON string) and tool replies, and tools."""
    rows = []
    for t, prompt, schemas in lined_up(trajectories, prompts, tools):
        messages = [dict(m) for m in prompt.messages]
        for k, step in enumerate(t.steps):
            if step.tool == USER:
                messages += [{"role": "assistant", "content": step.text}, {"role": "user", "content": step.observation}]
                continue
            id = f"call_{k}"
            function = {"name": step.tool or "", "arguments": json.dumps(step.arguments, ensure_ascii=False)}
            messages.append({"role": "assistant", "content": step.thought or None,
                             "tool_calls": [{"id": id, "type": "function", "function": function}]})
            if step.observation is not None:
                messages.append({"role": "tool", "tool_call_id": id, "content": step.observation})
        messages += [{"role": "assistant", "content": t.answer}] if t.answer is not None else []
        rows.append({"messages": messages, "tools": [{"type": "function", "function": s} for s in schemas]})
    return rows


def lined_up(trajectories, prompts, tools):
    """(trajectory, its prompt, its tool schemas) for each trajectory."""
    by_id = prompts if isinstance(prompts, Mapping) else {p.id: p for p in prompts}
    for t in trajectories:
        if t.prompt_id not in by_id:
            raise KeyError(f"trajectory of prompt {t.prompt_id!r}: that prompt was not given")
        schemas = tools[t.prompt_id] if isinstance(tools, Mapping) else tools
        yield t, by_id[t.prompt_id], [schema(s, n) for n, s in enumerate(schemas, start=1)]

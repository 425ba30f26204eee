"""Tool-calling data: Glaive ShareGPT and OpenAI rows in, trajectories out, round trips and bad rows."""

from __future__ import annotations

import doctest
import json
import re

import pytest

from rest_loop.agent import data
from rest_loop.agent.data import USER, export_openai, export_sharegpt, load_tool_data, read_tool_rows
from rest_loop.config import DataError

GLAIVE = "tests/data/glaive_toolcall.json"
OPENAI = "tests/data/openai_toolcall.jsonl"


def steps_of(conversation):
    return [(s.tool, s.arguments, s.observation, s.thought) for s in conversation.trajectory.steps]


@pytest.mark.parametrize("path,row,roles,tools,answer", [
    (GLAIVE, 0, ["system", "user"], ["get_current_weather"], "It is currently 18°C in Paris with light rain."),
    (GLAIVE, 1, ["user"], [USER, "convert_currency", USER], "You're welcome! Anything else I can help with?"),
    (GLAIVE, 2, ["user"], [], "Photoshop is a software application developed by Adobe for editing and "
                              "manipulating digital images."),
    (OPENAI, 0, ["system", "user"], ["get_current_weather", "get_current_weather", "get_time"],
     "Rome is warmer: 24°C against 9°C in Oslo. It is 14:05 in Rome."),
    (OPENAI, 1, ["user"], ["get_current_weather"], "It is sunny in Lagos, 31°C."),
    (OPENAI, 2, ["user"], [], "Hello!"),
])
def test_import(path, row, roles, tools, answer):
    c = load_tool_data(path)[row]
    assert c.prompt.id == f"{path.split('/')[-1].split('.')[0]}-{row}"
    assert [m["role"] for m in c.prompt.messages] == roles
    assert [s.tool for s in c.trajectory.steps] == tools
    assert c.trajectory.answer == answer
    t = c.trajectory
    assert (t.policy, t.round, t.sample_idx, t.prompt_id, t.stop) == ("original", 0, -1, c.prompt.id, "finish")
    assert all(s.token_ids == [] and s.parse == "ok" and s.tool_status == "ok" for s in t.steps)


def test_glaive_calls_observations_and_tools():
    weather, currency, chat = load_tool_data(GLAIVE)
    [step] = weather.trajectory.steps
    assert step.arguments == {"city": "Paris", "unit": "celsius"}
    assert json.loads(step.observation)["condition"] == "light rain"
    assert json.loads(step.text) == {"name": "get_current_weather", "arguments": step.arguments}
    assert weather.tools[0]["parameters"]["required"] == ["city"]  # the tools string, parsed
    assert [t["name"] for t in currency.tools] == ["convert_currency", "calculate_discount"]
    # the later user turns are what the user said back to the assistant's text before them
    assert (currency.trajectory.steps[0].text, currency.trajectory.steps[0].observation) == (
        "Of course! How much, and from which currency to which?", "500 US dollars to euros, please.")
    assert chat.tools == [] and chat.trajectory.steps == []


def test_openai_parallel_calls_match_by_id():
    c = load_tool_data(OPENAI)[0]
    assert [(s.arguments, s.observation) for s in c.trajectory.steps] == [
        ({"city": "Oslo"}, '{"temperature": 9, "unit": "celsius"}'),   # answered second, matched by tool_call_id
        ({"city": "Rome"}, '{"temperature": 24, "unit": "celsius"}'),
        ({"city": "Rome"}, "14:05")]
    assert c.trajectory.steps[0].thought == "Let me look both up."
    assert [t["name"] for t in c.tools] == ["get_current_weather", "get_time"]  # {"type": "function", "function": ...} unwrapped


def test_tools_may_be_a_list_and_arguments_a_string():
    row = {"conversations": [{"from": "human", "value": "hi"},
                             {"from": "function_call", "value": '{"name": "f", "arguments": "{\\"x\\": 1}"}'}],
           "tools": [{"name": "f", "parameters": {}}]}
    [c] = read_tool_rows([row], "x.jsonl")
    assert c.tools == [{"name": "f", "parameters": {}}] and c.trajectory.steps[0].arguments == {"x": 1}
    assert c.trajectory.steps[0].observation is None and c.trajectory.answer is None


@pytest.mark.parametrize("path", [GLAIVE, OPENAI])
@pytest.mark.parametrize("export,suffix", [(export_sharegpt, "json"), (export_openai, "jsonl")])
def test_round_trip(path, export, suffix, tmp_path):
    before = load_tool_data(path)
    rows = export([c.trajectory for c in before], [c.prompt for c in before], {c.prompt.id: c.tools for c in before})
    out = tmp_path / f"{path.split('/')[-1].split('.')[0]}.{suffix}"
    out.write_text(json.dumps(rows) if suffix == "json" else "".join(json.dumps(r) + "\n" for r in rows))
    after = load_tool_data(out)
    for a, b in zip(before, after, strict=True):
        assert steps_of(a) == steps_of(b)
        assert [s.text for s in a.trajectory.steps] == [s.text for s in b.trajectory.steps]
        assert (a.trajectory.answer, a.prompt.messages, a.tools) == (b.trajectory.answer, b.prompt.messages, b.tools)


def test_export_shapes():
    c = load_tool_data(OPENAI)[0]
    [sharegpt] = export_sharegpt([c.trajectory], [c.prompt], c.tools)  # one tool list for every trajectory
    assert isinstance(sharegpt["tools"], str) and json.loads(sharegpt["tools"]) == c.tools
    assert sharegpt["system"] == "You are a helpful assistant."
    assert [t["from"] for t in sharegpt["conversations"]] == ["human", "gpt"] + [
        "function_call", "observation"] * 3 + ["gpt"]
    [openai] = export_openai([c.trajectory], {c.prompt.id: c.prompt}, c.tools)
    call = openai["messages"][2]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert openai["messages"][3] == {"role": "tool", "tool_call_id": call["id"],
                                     "content": '{"temperature": 9, "unit": "celsius"}'}
    assert openai["tools"][0]["type"] == "function"


def test_export_needs_the_prompt():
    c = load_tool_data(GLAIVE)[0]
    with pytest.raises(KeyError, match="glaive_toolcall-0"):
        export_sharegpt([c.trajectory], [], [])


HUMAN = {"from": "human", "value": "hi"}
CALL = {"from": "function_call", "value": '{"name": "f", "arguments": {}}'}


@pytest.mark.parametrize("row,message", [
    ({"conversations": [HUMAN, {"from": "function_call", "value": "{name: f}"}]},
     "turn 2: the function_call value is not JSON"),
    ({"conversations": [HUMAN, {"from": "observation", "value": "42"}]}, "an observation with no call before it"),
    ({"conversations": [HUMAN, CALL, {"from": "observation", "value": "1"}, {"from": "observation", "value": "2"}]},
     "an observation with no call before it: '2'"),
    ({"conversations": [HUMAN, {"from": "robot", "value": "beep"}]}, "turn 2: unknown role 'robot'"),
    ({"conversations": [HUMAN], "tools": "[{not json"}, "'tools' is a string but not valid JSON"),
    ({"conversations": [HUMAN], "tools": '{"name": "f"}'}, "'tools' must be a list"),
    ({"conversations": [HUMAN], "tools": '[{"description": "no name"}]'}, "'tools' entry 1 must be an object with"),
    ({"conversations": [{"from": "gpt", "value": "hello?"}]}, "no user turn to use as the prompt"),
    ({"conversations": [CALL, HUMAN]}, "a tool call comes before the first user turn"),
    ({"conversations": [HUMAN, {"from": "function_call", "value": '{"arguments": {}}'}]},
     "turn 2: a tool call must be an object with a 'name'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{x"}}]}]},
     "turn 2: the arguments of 'f' are not JSON"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "b", "content": "1"}]},
     "an observation with no call before it (tool_call_id 'b')"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]},
     "a system turn comes after the conversation started"),
    ({"text": "hi"}, "a row must be an object with 'conversations' or 'messages'"),
])
def test_bad_rows_name_file_and_row(row, message, tmp_path):
    path = tmp_path / "tools.jsonl"
    good = {"conversations": [HUMAN, {"from": "gpt", "value": "hello"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: row 2: ") + ".*" + re.escape(message)):
        load_tool_data(path)


def test_skip_drops_bad_rows(tmp_path, caplog):
    path = tmp_path / "tools.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"conversations": [HUMAN]},
                                                      {"conversations": [{"from": "robot", "value": "x"}]}]))
    assert [c.prompt.id for c in load_tool_data(path, on_bad_row="skip")] == ["tools-0"]
    assert "skipped 1 of 2 rows" in caplog.text


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps({"conversations": [HUMAN]}) + "\n{oops\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2: not JSON")):
        load_tool_data(path)


def test_docstring_examples():
    assert doctest.testmod(data).failed == 0

"""The agent's tools and environment: search ranking and its index cache, the calculator's table,
every tool failure returned as an observation with its status, and the conf/env configs building.

    .venv/bin/pytest tests/test_agent_tools.py -q
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rest_loop.__main__ import CONF
from rest_loop.agent.env import Environment
from rest_loop.agent.tools import search as search_module
from rest_loop.agent.tools.base import Tool, ToolResult
from rest_loop.agent.tools.calculator import Calculator
from rest_loop.agent.tools.finish import Finish
from rest_loop.agent.tools.search import FORMAT, Search
from rest_loop.config import ConfigError

CORPUS = [
    {"id": "acme", "title": "Acme Corporation", "text": "Acme was founded by Wile E. Coyote in 1949 in Arizona."},
    {"id": "globex", "title": "Globex", "text": "Globex is an energy company started in 1989 by Hank Scorpio."},
    {"id": "paris", "title": "Paris", "text": "Paris is the capital and largest city of France, on the Seine."},
    {"id": "seine", "title": "Seine", "text": "The Seine is a river in northern France that flows into the Channel."},
    {"id": 7, "title": "Mount Everest", "text": "Everest is the highest mountain above sea level, 8849 metres."},
]


def write_corpus(path: Path, rows=CORPUS) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def corpus(tmp_path) -> str:
    return write_corpus(tmp_path / "corpus.jsonl")


# --- search -------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,best", [
    ("who founded Acme", "acme"),
    ("Hank Scorpio energy company", "globex"),
    ("capital of France", "paris"),
    ("which river flows into the Channel", "seine"),
    ("highest mountain", "7"),
])
def test_search_ranks_the_right_document_first(corpus, tmp_path, query, best):
    tool = Search(corpus, k=3, cache_dir=str(tmp_path / "cache"))
    hits = tool.search(query)
    assert hits[0][0] == best and len(hits) <= 3
    assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)
    assert tool.run(query).splitlines()[0].startswith(f"[{best}] ")


def test_search_output_lines_and_no_match(corpus, tmp_path):
    tool = Search(corpus, k=2, snippet_chars=20, cache_dir=str(tmp_path / "cache"))
    assert tool.run("capital of France").splitlines() == ["[paris] Paris: Paris is the capital...",
                                                          "[seine] Seine: The Seine is a river..."]
    assert tool.search("zeppelin quasar") == [] and "No documents match" in tool.run("zeppelin quasar")
    assert tool.search("the of and") == []  # only stopwords: nothing to match, not every document
    assert tool.identity()["corpus"] == tool.digest and tool.identity()["k"] == 2


def test_search_index_is_cached_by_content(tmp_path, monkeypatch):
    built = []
    real_build = search_module.build_index
    monkeypatch.setattr(search_module, "build_index", lambda docs: built.append(len(docs)) or real_build(docs))
    cache = tmp_path / "cache"
    first = Search(write_corpus(tmp_path / "a.jsonl"), cache_dir=str(cache))
    folders = list((cache / FORMAT).iterdir())
    assert built == [5] and [f.name for f in folders] == [first.digest]  # no temp folder left behind
    assert {"params.index.json", "vocab.index.json"} <= {f.name for f in folders[0].iterdir()}

    elsewhere = tmp_path / "other" / "b.jsonl"
    elsewhere.parent.mkdir()
    second = Search(write_corpus(elsewhere), cache_dir=str(cache))  # same content at another path: loaded
    assert built == [5] and second.digest == first.digest
    assert second.search("who founded Acme") == first.search("who founded Acme")

    changed = Search(write_corpus(tmp_path / "a.jsonl", CORPUS[:3]), cache_dir=str(cache))  # new content: rebuilt
    assert built == [5, 3] and changed.digest != first.digest
    assert len(list((cache / FORMAT).iterdir())) == 2


def test_a_damaged_index_is_rebuilt(corpus, tmp_path):
    cache = tmp_path / "cache"
    tool = Search(corpus, cache_dir=str(cache))
    (cache / FORMAT / tool.digest / "params.index.json").write_text("{not json")
    again = Search(corpus, cache_dir=str(cache))
    assert again.search("capital of France")[0][0] == "paris"
    assert json.loads((cache / FORMAT / tool.digest / "params.index.json").read_text())


@pytest.mark.parametrize("content,message", [
    (None, "cannot read the search corpus"),
    ('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n', "row 2: not valid JSON"),
    ('["a", "b"]\n', "row 1: a row must be a JSON object"),
    ('{"title": "no id", "text": "x"}\n', "row 1: 'id' must be"),
    ('{"id": "a"}\n', "row 1: 'text' (required)"),
    ('{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n', "row 3: id 'a' is already the id of row 1"),
    ("\n\n", "has no rows"),
    ('{"id": "a", "text": "the of a"}\n', "no searchable words"),
])
def test_a_bad_corpus_names_the_file_and_row(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="bad.jsonl") as raised:
        Search(str(path), cache_dir=str(tmp_path / "cache"))
    assert message in str(raised.value)


# --- calculator ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expression,expected", [
    ("12 x 3", "36"), ("12 × 3", "36"), ("(4+5)*2", "18"), ("7/2", "3.5"), ("2**10", "1024"), ("2^10", "1024"),
    ("  8 ÷ 2 = ", "4"), ("1,250 + 3", "1253"), ("-3 - -2", "-1"), ("(7/2)*2", "7"), ("0.1 + 0.2", "0.3"),
    ("1/3", "0.3333333333"), ("2**0.5", "1.4142135624"), ("2**-2", "0.25"), ("17 // 5", "3"), ("17 % 5", "2"),
    ("3.0", "3"), ("$12 + $3.50", "15.5"),
])
def test_calculator_computes(expression, expected):
    assert Calculator().run(expression) == expected


@pytest.mark.parametrize("expression,message", [
    ("__import__('os')", "function calls are not allowed"),
    ("open('x')", "function calls are not allowed"),
    ("a+1", "names are not allowed"),
    ("(1).real", "attributes are not allowed"),
    ("'a' + 'b'", "is not a number"),
    ("9**9**9", "too large"),
    ("10**400", "too large"),
    ("1e400", "too large"),
    ("1e308 * 1e308", "too large"),
    ("1/0", "division by zero"),
    ("(-8)**0.5", "not a real number"),
    ("", "empty"),
    ("   =", "empty"),
    ("2 +", "could not read"),
    ("1 < 2", "comparisons are not allowed"),
    ("1 & 2", "operators other than"),
    ("1" * 400, "longer than"),
])
def test_calculator_refuses(expression, message):
    started = time.monotonic()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Calculator().run(expression)
    assert time.monotonic() - started < 1  # refused before computing, never hangs


# --- environment: every failure is an observation -----------------------------------------------

class Boom(Tool):
    name, description = "boom", "Always fails."
    parameters = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

    def run(self, text: str) -> str:
        raise KeyError(text)


class Sleepy(Tool):
    name, description = "sleepy", "Sleeps."
    parameters = {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}

    def run(self, seconds: float) -> str:
        time.sleep(seconds)
        return "awake"


class Chatty(Tool):
    name, description = "chatty", "Talks a lot."
    parameters = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

    def run(self, n: int) -> str:
        return "word " * n


@pytest.fixture
def env() -> Environment:
    tools = {tool.name: tool for tool in (Calculator(), Boom(), Sleepy(), Chatty(), Finish())}
    return Environment(tools, max_steps=3, timeout_s=0.3, max_observation_chars=50)


@pytest.mark.parametrize("tool,arguments,status,says", [
    ("calculator", {"expression": "12 x 3"}, "ok", "36"),
    ("finish", {"answer": "Paris"}, "ok", "Paris"),
    ("sleepy", {"seconds": 0}, "ok", "awake"),
    ("telescope", {"query": "x"}, "unknown_tool", "There is no tool named 'telescope'. The tools are: calculator("),
    ("calculator", {}, "bad_arguments", "'expression' is a required property. It takes calculator(expression: string)"),
    ("calculator", {"expression": 12}, "bad_arguments", "expression: 12 is not of type 'string'"),
    ("calculator", {"expression": "1", "units": "m"}, "bad_arguments", "('units' was unexpected)"),
    ("calculator", ["1+1"], "bad_arguments", "must be an object of named values, not list"),
    ("calculator", {"expression": "a+1"}, "exception", "calculator failed: names are not allowed"),
    ("boom", {"text": "x"}, "exception", "boom failed: KeyError: 'x'"),
    ("sleepy", {"seconds": 5}, "timeout", "sleepy gave no answer within 0.3 seconds"),
    ("chatty", {"n": 100}, "too_long", "[cut: the output was 500 characters; these are the first 50]"),
])
def test_every_call_returns_an_observation(env, tool, arguments, status, says):
    started = time.monotonic()
    result = env.call(tool, arguments)
    assert isinstance(result, ToolResult) and result.status == status and says in result.text
    assert time.monotonic() - started < 2  # the sleeping tool is abandoned at timeout_s


def test_a_cut_observation_shows_the_first_part(env):
    result = env.call("chatty", {"n": 100})
    assert result.text.startswith("word " * 10) and not result.ok


def test_calls_from_another_thread_time_out_too(env):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: env.call("sleepy", {"seconds": s}), [5, 0]))
    assert [r.status for r in results] == ["timeout", "ok"]


def test_specs_identity_and_finish(env):
    assert [spec["function"]["name"] for spec in env.specs()] == ["calculator", "boom", "sleepy", "chatty", "finish"]
    assert env.specs()[0] == {"type": "function", "function": {
        "name": "calculator", "description": Calculator.description, "parameters": Calculator.parameters}}
    identity = env.identity()
    assert identity["max_steps"] == 3 and identity["tools"][0] == {"name": "calculator", "version": "1"}
    assert json.dumps(identity)  # goes into a cache key
    assert env.is_finish("finish") and not env.is_finish("calculator") and not env.is_finish(None)


@pytest.mark.parametrize("tools,kwargs,message", [
    ({"calc": Calculator(), "finish": Finish()}, {}, "env.tools.calc: the tool is named 'calculator'"),
    ({"calculator": Calculator()}, {}, "env.finish='finish': must name one of the tools"),
    ({"finish": "not a tool"}, {}, "env.tools.finish: must be a tool"),
    ({"finish": Finish()}, {"max_steps": 0}, "env.max_steps=0"),
    ({"finish": Finish()}, {"timeout_s": 0}, "env.timeout_s=0"),
])
def test_bad_environment_config_names_the_key(tools, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Environment(tools, **kwargs)


# --- the conf/env configs -----------------------------------------------------------------------

def compose_env(option: str, tmp_path: Path, corpus: str):
    """conf/env/<option>.yaml under `env`, beside the task and paths keys it interpolates."""
    cfg = OmegaConf.create({"task": {"corpus": corpus}, "paths": {"cache": str(tmp_path / "cache")}})
    cfg.env = OmegaConf.load(Path(CONF) / "env" / f"{option}.yaml")
    return instantiate(cfg.env)


@pytest.mark.parametrize("option,tools,max_steps", [
    ("calculator", ["calculator", "finish"], 3),
    ("search", ["search", "finish"], 5),
    ("search_calculator", ["search", "calculator", "finish"], 6),
])
def test_env_configs_build(option, tools, max_steps, tmp_path, corpus):
    env = compose_env(option, tmp_path, corpus)
    assert isinstance(env, Environment) and list(env.tools) == tools and env.max_steps == max_steps
    assert env.finish == "finish" and env.call("finish", {"answer": "42"}) == ToolResult("42", "ok")
    for tool in env.tools.values():  # the action parser gives `tool[text]` to the first required parameter
        first = tool.parameters["required"][0]
        assert tool.parameters["properties"][first]["type"] == "string"
    if "search" in env.tools:
        assert env.call("search", {"query": "capital of France"}).text.startswith("[paris] Paris:")
        assert (tmp_path / "cache" / "bm25" / FORMAT / env.tools["search"].digest).is_dir()

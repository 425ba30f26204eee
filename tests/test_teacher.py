"""Grow's teacher: an OpenAI-compatible endpoint (the fault-injecting server on loopback) or another local
model writes a round's samples, and the pool cache and resume treat them as a policy's.

The endpoint tests need no vLLM and run in seconds. The CLI runs start the real engine and trainer on
the tiny model and are marked slow.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from rest_loop.config import ConfigError, SamplerConfig, build, validate
from rest_loop.improve.backends import JudgeStopped
from rest_loop.pools import Pools, pool_key
from rest_loop.records import Prompt
from rest_loop.store import read_json, read_jsonl
from rest_loop.teacher import EndpointTeacher
from tests.conftest import compose_config
from tests.judge_server import JudgeServer
from tests.test_bad_input import assert_stopped_before_running, rest_loop
from tests.test_loop_e2e import cli, run_ok

PROMPTS = [Prompt(f"q{i}", [{"role": "user", "content": f"What is {i} + 10?"}]) for i in range(3)]
SAMPLER = SamplerConfig(n=4, temperature=0.7, max_tokens=16)


def answer(body: dict) -> str:
    question = body["messages"][-1]["content"]
    return f"It is {int(question.split()[2]) + 10}."  # "What is 2 + 10?" -> "It is 12."


@pytest.fixture
def server():
    with JudgeServer(answer, model="teacher-test") as s:
        yield s


def teacher(server, tmp_path, **kw) -> EndpointTeacher:
    options = dict(model="teacher-test", base_url=server.url, api_key_env=None, timeout=2.0, max_retries=3,
                   backoff=0.01, max_concurrency=4, cache=str(tmp_path / "teacher.sqlite"))
    return EndpointTeacher(rounds=[1], **{**options, **kw})


def test_the_endpoint_writes_n_samples_per_prompt_recorded_as_the_teachers(server, tmp_path):
    samples = teacher(server, tmp_path).grow(PROMPTS, SAMPLER, round=1)
    assert [(s.prompt_id, s.sample_idx) for s in samples] == [(p.id, i) for p in PROMPTS for i in range(4)]
    assert {s.policy for s in samples} == {"teacher:teacher-test"}
    assert all(s.text == f"It is {int(s.prompt_id[1:]) + 10}." and s.num_tokens == 3 for s in samples)
    assert len(server.requests) == 12  # each sample its own request
    assert all(r["messages"] == PROMPTS[0].messages and r["temperature"] == 0.7 and r["max_tokens"] == 16
               for r in server.requests[:1])
    assert {r["messages"][0]["content"] for r in server.requests} == {p.messages[0]["content"] for p in PROMPTS}


def test_500s_and_429s_are_retried(server, tmp_path):
    server.push_faults("500", "429", "500")
    samples = teacher(server, tmp_path, max_concurrency=1).grow(PROMPTS, SAMPLER, round=1)
    assert len(samples) == 12 and all(s.text.startswith("It is") for s in samples)
    assert len(server.requests) == 15 and len(server.answered) == 12


def test_a_budget_stop_then_a_resume_asks_only_what_was_not_answered(server, tmp_path):
    pools = Pools(tmp_path / "pools")
    with pytest.raises(JudgeStopped, match="teacher.budget_requests=5"):
        teacher(server, tmp_path, budget_requests=5, max_concurrency=1).grow(PROMPTS, SAMPLER, 1, pools)
    assert len(server.requests) == 5 and not list((tmp_path / "pools").rglob("*.jsonl"))  # no pool with holes
    samples = teacher(server, tmp_path).grow(PROMPTS, SAMPLER, 1, pools)
    assert len(samples) == 12 and len(server.requests) == 12  # the first 5 were not asked again


def test_a_request_that_keeps_failing_stops_the_grow_and_only_it_is_asked_again(server, tmp_path):
    server.push_faults("malformed", "malformed")  # unreadable twice: an error reply, never a sample
    with pytest.raises(JudgeStopped, match="1 of 12 requests failed"):
        teacher(server, tmp_path, max_retries=1, max_concurrency=1).grow(PROMPTS, SAMPLER, 1)
    teacher(server, tmp_path).grow(PROMPTS, SAMPLER, 1)
    assert len(server.answered) == 12


def test_a_second_identical_run_is_served_from_the_caches(server, tmp_path):
    pools = Pools(tmp_path / "pools")
    first = teacher(server, tmp_path).grow(PROMPTS, SAMPLER, 1, pools)
    again = teacher(server, tmp_path).grow(PROMPTS, SAMPLER, 2, pools)  # the pool cache
    assert [e["hit"] for e in pools.take()] == [False, True]
    fresh = teacher(server, tmp_path).grow(PROMPTS, SAMPLER, 1)  # no pool cache: the reply cache
    assert len(server.requests) == 12
    assert [s.text for s in again] == [s.text for s in first] == [s.text for s in fresh]
    assert {s.round for s in again} == {2}


def test_the_pool_key_names_the_teacher(server, tmp_path):
    params = {"n": 4, "temperature": 0.7, "max_tokens": 16}
    a = teacher(server, tmp_path).pool_inputs(PROMPTS, params)
    b = teacher(server, tmp_path, model="another-teacher").pool_inputs(PROMPTS, params)
    assert a["teacher"] == {"backend": "openai", "model": "teacher-test"} and pool_key(a) != pool_key(b)
    assert "weights" not in a  # a policy's pool is keyed by its weights: the two never meet


ENDPOINT = ["teacher=openai", "teacher.model=m", "teacher.api_key_env=null"]


@pytest.mark.parametrize("overrides, message", [
    ([*ENDPOINT, "teacher.rounds=[3]"], "teacher.rounds=[3]: must be a non-empty list of round numbers in "
                                        "1..loop.rounds=2"),
    ([*ENDPOINT, "teacher.rounds=[0,1]"], "teacher.rounds=[0, 1]: must be a non-empty list"),
    ([*ENDPOINT, "teacher.rounds=[]"], "teacher.rounds=[]: must be a non-empty list"),
    ([*ENDPOINT, "teacher.rounds=1"], "teacher.rounds=1: must be a non-empty list"),
    ([*ENDPOINT, "teacher.model=null"], "teacher.model=None: name the endpoint's model"),
    ([*ENDPOINT, "teacher.max_concurrency=0"], "teacher: max_concurrency >= 1"),
    ([*ENDPOINT, "teacher.api_key_env=REST_LOOP_TEST_UNSET_KEY"],
     "teacher.api_key_env='REST_LOOP_TEST_UNSET_KEY': that environment variable is not set"),
    ([*ENDPOINT, "env=calculator", "agent=react"], "teacher='rest_loop.teacher.EndpointTeacher': an agent's"),
    (["teacher=local", "teacher.model.source=/no/such/model"], "teacher.model.source='/no/such/model': no such folder"),
])
def test_bad_teacher_settings_name_the_key(overrides, message):
    """Each is a ConfigError naming the key, from the config check or from building the teacher (both before
    any engine starts)."""
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)
        build(cfg.teacher)


def test_a_teacher_without_a_model_is_a_config_error():
    with pytest.raises(ConfigError, match=r"teacher\.model: no value given"):
        validate(compose_config("teacher=openai"))
    with pytest.raises(ConfigError, match=r"teacher\.model\.source: no value given"):
        validate(compose_config("teacher=local"))


def test_a_bad_teacher_round_stops_the_cli_before_any_engine(tmp_path):
    code, log = rest_loop(tmp_path / "run", "teacher=openai", "teacher.model=m", "teacher.api_key_env=null",
                          "loop.rounds=1", "teacher.rounds=[2]")
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, "config error: teacher.rounds=[2]: must be a non-empty "
                                  "list of round numbers in 1..loop.rounds=1")


@pytest.mark.slow
def test_cli_endpoint_teacher_budget_stop_resume_and_a_repeat_ask_nothing_twice(tiny_model, tmp_path, server):
    server.respond = lambda body: "It is 42."  # the arithmetic task's prompts are not answer()'s "What is i + 10?"
    teach = ["teacher=openai", f"teacher.base_url={server.url}", "teacher.model=teacher-test",
             "teacher.api_key_env=null", "teacher.max_concurrency=1", f"teacher.cache={tmp_path / 'teacher.sqlite'}"]
    run_dir = tmp_path / "run"
    out = subprocess.run(cli(run_dir, tiny_model, *teach, "teacher.budget_requests=5"), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 4, out.stderr[-3000:]
    assert "teacher.budget_requests=5" in read_json(run_dir / "FAILED")["error"]
    assert len(server.requests) == 5

    run_ok([sys.executable, "-m", "rest_loop", f"resume={run_dir}", "++teacher.budget_requests=null"])
    samples = read_jsonl(run_dir / "round_001/grow/samples.jsonl")
    assert len(samples) == 6 * 2 == len(server.requests)  # nothing asked twice
    assert {s["policy"] for s in samples} == {"teacher:teacher-test"}
    assert read_json(run_dir / "round_001/grow/DONE")["policy"] == "teacher:teacher-test"
    kept = read_jsonl(run_dir / "round_001/improve/kept.jsonl")
    assert kept and {k["policy"] for k in kept} == {"teacher:teacher-test"}

    again = tmp_path / "again"
    run_ok(cli(again, tiny_model, *teach))
    assert len(server.requests) == 12  # the pool cache answered the second run
    assert read_json(again / "round_001/grow/DONE")["cache"]["hit"]


@pytest.mark.slow
def test_cli_local_teacher_grows_round_one_and_the_policy_round_two(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    run_ok(cli(run_dir, tiny_model, "teacher=local", f"teacher.model.source={tiny_model}", "teacher.rounds=[1]",
               "loop.rounds=2"))
    first = read_jsonl(run_dir / "round_001/grow/samples.jsonl")
    second = read_jsonl(run_dir / "round_002/grow/samples.jsonl")
    assert {s["policy"] for s in first} == {f"teacher:{tiny_model}"} and len(first) == 12
    assert {s["policy"] for s in second} == {"round_001"}
    assert read_json(run_dir / "round_001/grow/DONE")["policy"] == f"teacher:{tiny_model}"

"""The fault-injecting OpenAI-compatible judge server, exercised through the real ``openai`` client."""

from __future__ import annotations

import json
import threading

import openai
import pytest

from tests.judge_server import JudgeServer, Reply

MESSAGES = [{"role": "system", "content": "Rate the answer 1 to 5."},
            {"role": "user", "content": "Question: 2+2? Answer: 4"}]


def echo(body: dict) -> Reply:
    return Reply("Rating: 4", {"4": -0.1, "5": -2.0, "3": -3.0, "2": -5.0})


@pytest.fixture
def server():
    with JudgeServer(echo) as srv:
        yield srv


def client(srv: JudgeServer, timeout: float = 5.0, api_key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=api_key, max_retries=0, timeout=timeout)


def chat(srv: JudgeServer, **kwargs):
    kwargs = {"model": "judge-x", "messages": MESSAGES, **kwargs}
    with client(srv, timeout=kwargs.pop("timeout", 5.0), api_key=kwargs.pop("api_key", "k")) as c:
        return c.chat.completions.create(**kwargs)


def test_ok_round_trips_content_and_usage(server):
    resp = chat(server)
    assert resp.object == "chat.completion" and resp.model == "judge-x"
    assert resp.choices[0].message.content == "Rating: 4"
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].logprobs is None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (10, 2, 12)
    assert server.url == f"http://127.0.0.1:{server.port}/v1"


def test_plain_string_reply_and_n_choices():
    with JudgeServer(lambda body: "5") as srv:
        resp = chat(srv, n=3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert {c.message.content for c in resp.choices} == {"5"}


def test_models_endpoint(server):
    with client(server) as c:
        assert [m.id for m in c.models.list()] == ["judge-test"]


def test_logprobs_come_back_ranked_and_limited(server):
    resp = chat(server, logprobs=True, top_logprobs=3)
    first = resp.choices[0].logprobs.content[0]
    assert (first.token, first.logprob) == ("4", -0.1)
    assert [(t.token, t.logprob) for t in first.top_logprobs] == [("4", -0.1), ("5", -2.0), ("3", -3.0)]


def test_logprobs_default_to_first_char():
    with JudgeServer(lambda body: "Score 3") as srv:
        resp = chat(srv, logprobs=True, top_logprobs=5)
    assert [(t.token, t.logprob) for t in resp.choices[0].logprobs.content[0].top_logprobs] == [("S", 0.0)]


@pytest.mark.parametrize("fault, error", [("500", openai.InternalServerError), ("429", openai.RateLimitError)])
def test_status_faults(server, fault, error):
    server.push_faults(fault)
    with pytest.raises(error) as info:
        chat(server)
    assert info.value.body["type"] == {"500": "server_error", "429": "rate_limit_exceeded"}[fault]
    if fault == "429":
        assert info.value.response.headers["retry-after"] == "0"
    assert chat(server).choices[0].message.content == "Rating: 4"  # queue drained -> ok again


def test_timeout_fault():
    with JudgeServer(echo, faults=["timeout"], timeout_sleep=1.0) as srv:
        with pytest.raises(openai.APITimeoutError):
            chat(srv, timeout=0.3)
        assert chat(srv).choices[0].message.content == "Rating: 4"


def test_malformed_json_raises_json_decode_error(server):
    # openai parses a 200 application/json body with response.json(); the decode error is not wrapped.
    server.push_faults("malformed")
    with pytest.raises(json.JSONDecodeError) as info:
        chat(server)
    assert type(info.value) is json.JSONDecodeError and not isinstance(info.value, openai.OpenAIError)
    assert server.answered == []


def test_unparsable_reply(server):
    server.push_faults("unparsable")
    resp = chat(server, logprobs=True, top_logprobs=5)
    assert resp.choices[0].message.content == "I cannot decide."
    assert [t.token for t in resp.choices[0].logprobs.content[0].top_logprobs] == ["I", "The", "Sorry"]


def test_api_key():
    with JudgeServer(echo, api_key="secret") as srv:
        with pytest.raises(openai.AuthenticationError):
            chat(srv, api_key="wrong")
        assert chat(srv, api_key="secret").choices[0].message.content == "Rating: 4"


def test_die_after_then_restart_on_same_port():
    with JudgeServer(echo, die_after=2) as srv:
        port = srv.port
        chat(srv)
        chat(srv)
        with pytest.raises(openai.APIConnectionError) as info:
            chat(srv)
        assert type(info.value) is openai.APIConnectionError  # refused, not a timeout
        srv.restart()
        assert srv.port == port
        assert chat(srv).choices[0].message.content == "Rating: 4"
        assert chat(srv).choices[0].message.content == "Rating: 4"  # die_after cleared
        assert len(srv.answered) == 4 and len(srv.requests) == 4


def test_bookkeeping_in_order_and_thread_safe():
    with JudgeServer(lambda body: body["messages"][0]["content"], faults=["500"]) as srv:
        with pytest.raises(openai.InternalServerError):
            chat(srv, messages=[{"role": "user", "content": "first"}])
        threads = [threading.Thread(target=chat, args=(srv,), kwargs={"messages": [{"role": "user", "content": str(i)}]})
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert srv.requests[0]["messages"][0]["content"] == "first"
    assert len(srv.requests) == 9 and len(srv.answered) == 8
    assert sorted(b["messages"][0]["content"] for b in srv.answered) == [str(i) for i in range(8)]


def test_stop_leaves_no_threads_and_is_idempotent():
    before = set(threading.enumerate())
    srv = JudgeServer(echo, faults=["timeout"], timeout_sleep=30).start()
    with pytest.raises(openai.APITimeoutError):
        chat(srv, timeout=0.2)
    srv.stop()  # wakes the sleeping handler instead of waiting 30 s
    srv.stop()
    assert set(threading.enumerate()) <= before

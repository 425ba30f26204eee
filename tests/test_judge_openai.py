"""The three judge modes through the OpenAI-compatible backend, against a real HTTP server on loopback.

The server (tests/judge_server.py) grades by the reference, so scores can be checked,
and injects faults: 500, 429, timeouts, malformed JSON, unparsable answers, a refused
key, a server that dies midway, a dropped connection; alone and in bursts. No vLLM here:
these run in seconds.
"""

from __future__ import annotations

import re

import pytest

from rest_loop.improve.backends import JudgeStopped, OpenAIBackend
from rest_loop.improve.cache import ReplyCache
from rest_loop.improve.judge import PointwiseJudge, RationaleJudge
from rest_loop.improve.ranking import RankingJudge
from rest_loop.improve.rewards import Reward
from rest_loop.records import Prompt, Sample
from tests.judge_server import JudgeServer, arithmetic_oracle

PROMPTS = [Prompt(f"q{i}", [], reference=str(10 + i), input=f"What is {i} + 10?") for i in range(4)]


def samples_for(prompts=PROMPTS, per_prompt=4) -> tuple[list[Prompt], list[Sample]]:
    """Per prompt: samples 0 and 2 right, 1 and 3 wrong."""
    ps, ss = [], []
    for p in prompts:
        for i in range(per_prompt):
            answer = p.reference if i % 2 == 0 else str(int(p.reference) + 1)
            ps.append(p)
            ss.append(Sample(1, p.id, i, f"Sample {i}: it is {answer}.", 3, "base", 0))
    return ps, ss


@pytest.fixture
def server():
    with JudgeServer(arithmetic_oracle) as s:
        yield s


def backend(server, tmp_path, **kw) -> OpenAIBackend:
    options = dict(model="judge-test", base_url=server.url, api_key_env=None, timeout=2.0, max_retries=3,
                   backoff=0.01, max_concurrency=4, cache=str(tmp_path / "judge.sqlite"))
    return OpenAIBackend(**{**options, **kw})


def pointwise(prompts_dir, b):
    return PointwiseJudge("judge/pointwise.j2", prompts_dir, b)


def rationale(prompts_dir, b):
    return RationaleJudge("judge/rationale.j2", prompts_dir, b)


@pytest.mark.parametrize("make", [pointwise, rationale])
def test_pointwise_modes_score_by_the_judges_answer(server, tmp_path, prompts_dir, make):
    ps, ss = samples_for()
    results = make(prompts_dir, backend(server, tmp_path))(ps, ss)
    assert [r.status for r in results] == ["ok"] * 16
    right, wrong = [r.score for r in results[0::2]], [r.score for r in results[1::2]]
    assert min(right) > 0.8 and max(wrong) < 0.3
    assert len(server.answered) == 16
    assert "Reference answer: 10" in server.answered[0]["messages"][0]["content"]  # reference-guided


def test_ranking_puts_right_answers_first_and_records_the_shuffle(server, tmp_path, prompts_dir):
    ps, ss = samples_for(per_prompt=4)
    judge = RankingJudge("judge/ranking.j2", prompts_dir, backend(server, tmp_path), group_size=4, seed=7)
    results = judge(ps, ss)
    assert len(server.answered) == 4  # one request per prompt: 4 candidates at once
    assert all(r.status == "ok" for r in results)
    for i in range(0, 16, 4):  # per prompt: the two right ones take places 1 and 2
        scores = [results[i + j].score for j in range(4)]
        assert sorted(scores[0::2]) == [2 / 3, 1.0] and sorted(scores[1::2]) == [0.0, 1 / 3]
        raw = results[i].raw
        assert raw["shuffle_seed"].startswith("7:q") and sorted(raw["shown"]) == [0, 1, 2, 3]
    shown = [r.raw["shown"] for r in results[::4]]
    assert len({tuple(s) for s in shown}) > 1  # the order differs between prompts: it is shuffled
    again = RankingJudge("judge/ranking.j2", prompts_dir, backend(server, tmp_path), group_size=4, seed=7)(ps, ss)
    assert [r.raw["shown"] for r in again[::4]] == shown  # ... with a recorded, reproducible seed
    assert len(server.answered) == 4  # and answered from the cache


def test_ranking_second_pass_records_agreement(server, tmp_path, prompts_dir):
    ps, ss = samples_for(per_prompt=6)  # 6 by 4 -> two groups of 3 per prompt
    judge = RankingJudge("judge/ranking.j2", prompts_dir, backend(server, tmp_path), group_size=4,
                         second_pass=True)
    results = judge(ps, ss)
    assert len(server.answered) == 4 * 2 * 2  # prompts x groups x passes
    assert all(r.status == "ok" and len(r.raw["shown"]) == 3 for r in results)
    assert all("agree_best" in r.raw and -1 <= r.raw["kendall_tau"] <= 1 for r in results)
    stats = judge.stats(results)
    assert stats["groups_ranked"] == 8 and 0 <= stats["second_pass_agree_best"] <= 1
    assert "first_shown_won" in stats and stats["first_shown_won_if_no_bias"] == pytest.approx(1 / 3)


def test_transient_faults_are_retried(server, tmp_path, prompts_dir):
    server.push_faults("500", "429", "timeout", "malformed")
    ps, ss = samples_for(PROMPTS[:1], per_prompt=2)
    b = backend(server, tmp_path, max_concurrency=1, timeout=0.5, max_retries=4)
    results = pointwise(prompts_dir, b)(ps, ss)
    assert [r.status for r in results] == ["ok", "ok"]
    assert len(server.requests) == 6 and len(server.answered) == 2
    assert (b.usage.retries, b.usage.requests, b.usage.answered) == (4, 6, 2)


@pytest.mark.parametrize("make", [pointwise, rationale])
def test_an_unparsable_answer_never_becomes_a_number(server, tmp_path, prompts_dir, make):
    server.push_faults("unparsable")
    ps, ss = samples_for(PROMPTS[:1], per_prompt=2)
    results = make(prompts_dir, backend(server, tmp_path, max_concurrency=1))(ps, ss)
    assert (results[0].status, results[0].score) == ("unparsed", None)
    assert results[1].status == "ok"
    reward = Reward("r", {"judge": (make(prompts_dir, backend(server, tmp_path)), 1.0)})
    judgements = reward({p.id: p for p in ps}, ss)  # from the cache: the unparsable answer is an answer
    assert (judgements[0].status, judgements[0].score) == ("unparsed", None)


def test_retry_policy_reasks_unparsed_with_sampling(server, tmp_path, prompts_dir):
    server.push_faults("unparsable", "unparsable", "unparsable")  # both at first, then sample 0 once more
    ps, ss = samples_for(PROMPTS[:1], per_prompt=2)
    reward = Reward("r", {"judge": (rationale(prompts_dir, backend(server, tmp_path, max_concurrency=1)), 1.0)})
    judgements = reward({p.id: p for p in ps}, ss, retries=2)
    assert [j.status for j in judgements] == ["ok", "ok"]
    assert "(attempt 2)" in judgements[0].reason and "(attempt 1)" in judgements[1].reason
    assert [r["temperature"] for r in server.requests] == [0.0, 0.0, 0.7, 0.7, 0.7]
    assert reward.last_stats["judge"]["retried"] == 3 and reward.last_stats["judge"]["recovered_by_retry"] == 2

    server.push_faults(*["unparsable"] * 3)
    ps, ss = samples_for(PROMPTS[1:2], per_prompt=1)
    [j] = reward({p.id: p for p in ps}, ss, retries=2)  # still unparsed after every retry: no score
    assert (j.status, j.score) == ("unparsed", None)


def test_a_request_that_keeps_failing_is_an_error_and_is_not_cached(server, tmp_path, prompts_dir):
    server.push_faults("malformed", "malformed")
    ps, ss = samples_for(PROMPTS[:1], per_prompt=1)
    b = backend(server, tmp_path, max_retries=1)
    [result] = pointwise(prompts_dir, b)(ps, ss)
    assert (result.status, result.score) == ("error", None) and "unreadable" in result.reason
    assert b.usage.errors == 1
    [result] = pointwise(prompts_dir, b)(ps, ss)  # asked again: errors are not answers
    assert result.status == "ok" and len(server.requests) == 3


def test_identical_requests_are_sent_once(server, tmp_path, prompts_dir):
    ps, ss = samples_for(PROMPTS[:1], per_prompt=3)
    ss[2].text = ss[0].text  # Grow often repeats a completion
    results = pointwise(prompts_dir, backend(server, tmp_path))(ps, ss)
    assert len(server.requests) == 2 and results[2].score == results[0].score


def test_cache_prevents_repeated_calls_and_keys_on_model_and_params(server, tmp_path, prompts_dir):
    ps, ss = samples_for()
    pointwise(prompts_dir, backend(server, tmp_path))(ps, ss)
    assert len(server.requests) == 16
    b = backend(server, tmp_path)
    results = pointwise(prompts_dir, b)(ps, ss)
    assert len(server.requests) == 16 and b.usage.cached == 16 and b.usage.requests == 0
    assert all(r.status == "ok" for r in results)
    rationale(prompts_dir, backend(server, tmp_path))(ps, ss)  # other params and prompt: asked
    backend_b = backend(server, tmp_path, model="another-judge")
    pointwise(prompts_dir, backend_b)(ps, ss)  # another judge model: asked
    assert len(server.requests) == 48


def test_budget_stops_cleanly_and_a_new_budget_asks_only_the_rest(server, tmp_path, prompts_dir):
    ps, ss = samples_for()
    with pytest.raises(JudgeStopped, match="request budget spent"):
        pointwise(prompts_dir, backend(server, tmp_path, budget_requests=5, max_concurrency=2))(ps, ss)
    assert len(server.requests) == 5
    results = pointwise(prompts_dir, backend(server, tmp_path))(ps, ss)
    assert all(r.status == "ok" for r in results)
    asked = [r["messages"][0]["content"] for r in server.requests]
    assert len(asked) == 16 == len(set(asked))  # nothing asked twice


def test_token_budget(server, tmp_path, prompts_dir):
    ps, ss = samples_for()
    with pytest.raises(JudgeStopped, match="token budget spent"):
        pointwise(prompts_dir, backend(server, tmp_path, budget_tokens=200, max_concurrency=1))(ps, ss)
    assert 1 < len(server.requests) < 16


def test_server_dies_midway_stop_then_resume_reasks_nothing_answered(server, tmp_path, prompts_dir):
    server.die_after = 6
    ps, ss = samples_for()
    with pytest.raises(JudgeStopped, match="APIConnectionError"):
        rationale(prompts_dir, backend(server, tmp_path, max_retries=2, max_concurrency=2))(ps, ss)
    answered = [r["messages"][0]["content"] for r in server.answered]
    assert 6 <= len(answered) <= 7  # the other request in flight when it dies may still get its answer
    server.restart()
    results = rationale(prompts_dir, backend(server, tmp_path))(ps, ss)
    assert all(r.status == "ok" for r in results)
    answered = [r["messages"][0]["content"] for r in server.answered]
    assert len(answered) == 16 == len(set(answered))  # the first 6 were not asked again


def test_a_refused_key_stops_at_once(tmp_path, prompts_dir, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "wrong")
    with JudgeServer(arithmetic_oracle, api_key="right") as server:
        ps, ss = samples_for()
        with pytest.raises(JudgeStopped, match="401"):
            pointwise(prompts_dir, backend(server, tmp_path, api_key_env="JUDGE_KEY", max_concurrency=1))(ps, ss)
        assert len(server.requests) == 1
        monkeypatch.setenv("JUDGE_KEY", "right")
        results = pointwise(prompts_dir, backend(server, tmp_path, api_key_env="JUDGE_KEY"))(ps, ss)
        assert all(r.status == "ok" for r in results)


def test_the_key_comes_from_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="judge.api_key_env='NO_SUCH_KEY'"):
        OpenAIBackend(model="m", base_url="http://127.0.0.1:1/v1", api_key_env="NO_SUCH_KEY")


# Faults in bursts (issue 8): the judge either ends with every judgement ok, or stops with JudgeStopped
# and a message saying what to change; no score is ever made up, and the cache holds only real answers.


def scored_by_the_judge(results) -> bool:
    """Every judgement ok, and right (even samples) above wrong (odd ones), as the oracle grades."""
    return (all(r.status == "ok" for r in results) and all(r.score > 0.8 for r in results[0::2])
            and all(r.score < 0.3 for r in results[1::2]))


def test_a_burst_of_429s_and_5xx_is_ridden_out(server, tmp_path, prompts_dir):
    server.push_faults(*["429"] * 6, *["500"] * 4)  # hits whichever requests are in flight, several at once
    ps, ss = samples_for(PROMPTS[:2])
    b = backend(server, tmp_path, max_concurrency=4, max_retries=10)
    assert scored_by_the_judge(pointwise(prompts_dir, b)(ps, ss))
    assert (b.usage.retries, b.usage.errors, len(server.answered)) == (10, 0, 8)


@pytest.mark.parametrize("fault,fix", [
    ("429", "HTTP 429: Error code: 429 - injected rate limit (after 2 retries); the endpoint keeps refusing with 429: lower "
            "judge.max_concurrency or raise judge.backoff"),
    ("500", "HTTP 500: Error code: 500 - injected server error (after 2 retries); the endpoint keeps failing: check the server, "
            "or wait longer with judge.max_retries"),
])
def test_a_burst_longer_than_the_retries_stops_with_what_to_change(server, tmp_path, prompts_dir, fault, fix):
    server.push_faults(fault, fault, fault)  # the first request and both its retries
    ps, ss = samples_for(PROMPTS[:1])
    reward = Reward("r", {"judge": (pointwise(prompts_dir, backend(server, tmp_path, max_concurrency=1,
                                                                    max_retries=2)), 1.0)})
    with pytest.raises(JudgeStopped, match=re.escape(f"judge judge-test at {server.url}: {fix}")):
        reward({p.id: p for p in ps}, ss)  # no judgements at all, so none with a made-up score
    assert not server.answered and len(ReplyCache(tmp_path / "judge.sqlite")) == 0
    assert scored_by_the_judge(pointwise(prompts_dir, backend(server, tmp_path))(ps, ss))  # the resume


def test_a_slow_reply_within_the_timeout_is_waited_for(tmp_path, prompts_dir):
    with JudgeServer(arithmetic_oracle, faults=["timeout"] * 2, timeout_sleep=0.3) as server:
        ps, ss = samples_for(PROMPTS[:1], per_prompt=2)
        b = backend(server, tmp_path, timeout=5.0)
        assert scored_by_the_judge(pointwise(prompts_dir, b)(ps, ss))
        assert (b.usage.retries, len(server.requests)) == (0, 2)


def test_replies_slower_than_the_timeout_stop_with_what_to_change(tmp_path, prompts_dir):
    with JudgeServer(arithmetic_oracle, faults=["timeout"] * 2, timeout_sleep=5.0) as server:
        ps, ss = samples_for(PROMPTS[:1], per_prompt=1)
        b = backend(server, tmp_path, timeout=0.3, max_retries=1, max_concurrency=1)
        message = "(after 1 retries); no answer within judge.timeout=0.3 s: raise judge.timeout or lower"
        with pytest.raises(JudgeStopped, match=re.escape(message)):
            pointwise(prompts_dir, b)(ps, ss)
        assert len(server.requests) == 2 and b.usage.answered == 0 and len(b.cache) == 0
        assert scored_by_the_judge(pointwise(prompts_dir, backend(server, tmp_path, timeout=5.0))(ps, ss))


def test_a_dropped_connection_is_retried(tmp_path, prompts_dir):
    drops = [1, 2]  # the first two requests: the server closes the connection without a reply

    def flaky(body):
        if drops:
            drops.pop()
            raise ConnectionAbortedError("dropped on purpose")  # the handler dies; the socket is closed
        return arithmetic_oracle(body)

    with JudgeServer(flaky) as server:
        ps, ss = samples_for(PROMPTS[:1], per_prompt=2)
        b = backend(server, tmp_path, max_concurrency=1)
        assert scored_by_the_judge(pointwise(prompts_dir, b)(ps, ss))
        assert (b.usage.retries, len(server.requests), len(server.answered)) == (2, 4, 2)


def test_a_sampled_judge_asks_k_times_and_averages(server, tmp_path, prompts_dir):
    """samples=3 (Self-Rewarding's averaged judge): three requests a sample, each its own cache entry, the score
    their mean; asked again, every draw comes from the cache."""
    ps, ss = samples_for()
    judge = RationaleJudge("judge/rationale.j2", prompts_dir, backend(server, tmp_path), temperature=0.7, samples=3)
    results = judge(ps, ss)
    assert len(server.answered) == 3 * len(ss) and [r.status for r in results] == ["ok"] * len(ss)
    assert all(r.reason == "mean of 3 of 3 ratings" and len(r.raw["draws"]) == 3 for r in results)
    assert all(r.score == pytest.approx(sum(d["score"] for d in r.raw["draws"]) / 3) for r in results)
    right, wrong = [r.score for r in results[0::2]], [r.score for r in results[1::2]]
    assert min(right) > 0.8 and max(wrong) < 0.3
    again = RationaleJudge("judge/rationale.j2", prompts_dir, backend(server, tmp_path), temperature=0.7, samples=3)
    assert [r.score for r in again(ps, ss)] == [r.score for r in results] and len(server.answered) == 3 * len(ss)
    assert judge.version.endswith(":x3@0.7")


def pairwise_oracle(body: dict) -> str:
    """A pairwise judge that picks the answer matching the reference, whichever place it is shown in."""
    import re

    from rest_loop.improve.verifiers import extract_number

    text = body["messages"][-1]["content"]
    reference = extract_number(re.search(r"Reference answer: (.*)", text).group(1))
    a = re.search(r"Answer A:\n(.*?)\n\nAnswer B:", text, re.S).group(1)
    b = re.search(r"Answer B:\n(.*)\Z", text, re.S).group(1)
    right_a, right_b = extract_number(a) == reference, extract_number(b) == reference
    return f"Comparing with the reference.\nWinner: {'tie' if right_a == right_b else 'A' if right_a else 'B'}"


@pytest.mark.parametrize("respond,win,first_wins,consistency", [
    (pairwise_oracle, 0.75, 0.5, 1.0),                         # a fair judge: no bias, both orders agree
    (lambda body: "Both are fine.\nWinner: A", 0.5, 1.0, 0.0),  # a judge that always picks the first shown
])
def test_win_rate_asks_both_orders_and_measures_the_judges_position_bias(tmp_path, prompts_dir, respond, win,
                                                                        first_wins, consistency):
    """New answers right on 2 of 4 prompts where the old ones were wrong, the same on 1, both wrong but different on
    1: a fair judge gives 0.75 (2 wins, 2 ties); a judge that always names A gives 0.5 and shows its bias."""
    from rest_loop.prefer.winrate import PairwiseJudge, win_rate

    ps = [Prompt(f"p{i}", [], input=f"{i}+{i}=?", reference=str(2 * i)) for i in range(1, 5)]
    new = {"p1": "It is 2.", "p2": "It is 4.", "p3": "It is 6.", "p4": "It is 7."}
    old = {"p1": "It is 3.", "p2": "It is 5.", "p3": "It is 6.", "p4": "It is 9."}
    with JudgeServer(respond) as server:
        judge = PairwiseJudge("judge/pairwise.j2", prompts_dir, backend(server, tmp_path))
        result = win_rate(judge, ps, new, old)
        assert len(server.answered) == 6  # both orders of the 3 prompts whose answers differ
        shown = [body["messages"][0]["content"] for body in server.answered]
        assert sum("Answer A:\nIt is 2.\n\nAnswer B:\nIt is 3." in t for t in shown) == 1  # new first, then
        assert sum("Answer A:\nIt is 3.\n\nAnswer B:\nIt is 2." in t for t in shown) == 1  # new second
    assert result["win_rate"] == pytest.approx(win) and result["identical"] == 1 and result["judged"] == 3
    assert result["first_wins"] == pytest.approx(first_wins) and result["consistency"] == pytest.approx(consistency)

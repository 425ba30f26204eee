"""The three judge modes on the real local vLLM engine with the embedded SmolLM2-135M.

SmolLM2-135M cannot judge arithmetic (AUC about 0.45), so this checks mechanics only:
the judge shares the policy's engine, its answers are read and cached, and every
judgement is either a score in [0, 1] with status ok or no score at all.
"""

from __future__ import annotations

import pytest

from rest_loop.config import ModelConfig
from rest_loop.engine import close_engines, get_engine
from rest_loop.improve.backends import LocalBackend
from rest_loop.improve.judge import PointwiseJudge, RationaleJudge
from rest_loop.improve.ranking import RankingJudge
from rest_loop.improve.rewards import Reward
from rest_loop.records import Prompt, Sample
from tests.conftest import CACHE

pytestmark = pytest.mark.slow

PROMPT = Prompt("12+30", [], reference="42", input="What is 12 + 30?")
SAMPLES = [Sample(1, PROMPT.id, i, t, 1, "base", 0) for i, t in enumerate(["42", "12 + 30 = 42", "41", "turtles"])]


@pytest.fixture(scope="module")
def model():
    yield ModelConfig(source="embedded:smollm2-135m-instruct", cache_dir=str(CACHE / "models"), max_model_len=1024,
                      kv_cache_gb=1)
    close_engines()  # later tests start engines of their own


def assert_honest(results):
    assert len(results) == len(SAMPLES)
    for r in results:
        assert r.status in ("ok", "unparsed")
        assert (r.score is None) == (r.status != "ok")
        if r.status == "ok":
            assert 0.0 <= r.score <= 1.0


def test_pointwise_on_the_policy_engine_reads_rating_probabilities(smollm2, prompts_dir, model, tmp_path):
    policy_engine = get_engine(smollm2, model, seed=0)
    backend = LocalBackend(model, seed=0, cache=str(tmp_path / "judge.sqlite"))
    judge = PointwiseJudge("judge/pointwise.j2", prompts_dir, backend, min_rating_mass=0.2)
    results = judge([PROMPT] * 4, SAMPLES)
    assert_honest(results)
    assert all(set(r.raw["rating_probs"]) == {str(i) for i in range(1, 10)} for r in results)
    assert backend.usage.requests == 4
    assert get_engine(smollm2, model, seed=0) is policy_engine  # same model, same engine: no second copy

    # Demanding all the probability on the ratings gives "unparsed", never a number, when it falls short.
    strict = PointwiseJudge("judge/pointwise.j2", prompts_dir, backend, min_rating_mass=1.0)
    assert all((r.status, r.score) == ("unparsed", None) for r in strict([PROMPT] * 4, SAMPLES))
    assert backend.usage.requests == 4 and backend.usage.cached == 4  # same prompts: the cache answered

    judgements = Reward("judge", {"judge": (judge, 1.0)})({PROMPT.id: PROMPT}, SAMPLES)
    assert [j.sample_idx for j in judgements] == [0, 1, 2, 3]
    assert all((j.score is None) == (j.status != "ok") for j in judgements)


def test_rationale_and_ranking_generate_and_parse(prompts_dir, model, tmp_path):
    backend = LocalBackend(model, seed=0, cache=str(tmp_path / "judge.sqlite"))
    rationale = RationaleJudge("judge/rationale.j2", prompts_dir, backend, max_tokens=96)
    results = rationale([PROMPT] * 4, SAMPLES)
    assert_honest(results)
    assert all(r.raw["text"] for r in results if r.status != "error")

    ranking = RankingJudge("judge/ranking.j2", prompts_dir, backend, group_size=4, second_pass=True,
                           max_tokens=128)
    results = ranking([PROMPT] * 4, SAMPLES)
    assert_honest(results)
    if results[0].status == "ok":
        assert sorted(r.score for r in results) == pytest.approx([0, 1 / 3, 2 / 3, 1])  # one place each
    requests = backend.usage.requests
    assert requests == 4 + 2  # 4 rationales, then one group ranked in two passes
    ranking([PROMPT] * 4, SAMPLES)
    assert backend.usage.requests == requests  # asked again: all from the cache
    stats = ranking.stats(results)
    assert stats["status"]["ok"] + stats["status"]["unparsed"] == 4


def test_constrained_ranking_always_parses_on_a_small_judge(prompts_dir, model, tmp_path):
    """Unconstrained, SmolLM2-135M almost never writes the ranking format; constrained, it must."""
    backend = LocalBackend(model, seed=0, cache=str(tmp_path / "judge.sqlite"))
    ranking = RankingJudge("judge/ranking.j2", prompts_dir, backend, group_size=4, max_tokens=512,
                           temperature=0.7, constrain=True)
    prompts = [Prompt(f"p{i}", [], reference="42", input=f"What is 12 + 30? ({i})") for i in range(4)]
    ps = [p for p in prompts for _ in SAMPLES]
    ss = [Sample(1, p.id, s.sample_idx, s.text, 1, "base", 0) for p in prompts for s in SAMPLES]
    results = ranking(ps, ss)
    for r in results:
        assert r.raw["text" if r.status == "unparsed" else "texts"]
    assert [r.status for r in results] == ["ok"] * 16  # the format, and a consistent ranking, are forced

"""The pointwise judge on the real vLLM engine with the embedded SmolLM2-135M.

SmolLM2-135M cannot judge arithmetic (AUC about 0.45), so this checks mechanics only:
it shares the policy's engine, reads rating probabilities, and returns either a
score in [0, 1] with status ok or no score with status unparsed.
"""

from __future__ import annotations

import pytest

from rest_loop.config import ModelConfig
from rest_loop.engine import close_engines, get_engine
from rest_loop.improve.judge import PointwiseJudge
from rest_loop.improve.rewards import Reward
from rest_loop.records import Prompt, Sample
from tests.conftest import CACHE

pytestmark = pytest.mark.slow


@pytest.fixture
def model():
    yield ModelConfig(source="embedded:smollm2-135m-instruct", cache_dir=str(CACHE / "models"), max_model_len=512,
                      kv_cache_gb=1)
    close_engines()  # later tests start engines of their own


def test_judge_scores_on_the_policy_engine(smollm2, prompts_dir, model):
    policy_engine = get_engine(smollm2, model, seed=0)
    judge = PointwiseJudge("judge/pointwise.j2", prompts_dir, model, seed=0, min_rating_mass=0.5)
    assert judge.engine() is policy_engine  # same model, same engine: no second copy in memory

    prompt = Prompt("12+30", [], reference="42", input="What is 12 + 30?")
    texts = ["42", "12 + 30 = 42", "41", "I like turtles"]
    samples = [Sample(1, prompt.id, i, t, 1, "base", 0) for i, t in enumerate(texts)]
    results = judge([prompt] * len(samples), samples)

    assert len(results) == 4
    for r in results:
        assert r.status in ("ok", "unparsed")
        assert set(r.raw["rating_probs"]) == {str(i) for i in range(1, 10)}
        if r.status == "ok":
            assert 0.0 <= r.score <= 1.0
        else:
            assert r.score is None

    # A judge that demands all its probability on the ratings gets "unparsed", never a number, when it falls short.
    strict = PointwiseJudge("judge/pointwise.j2", prompts_dir, model, seed=0, min_rating_mass=1.0)
    for r in strict([prompt] * len(samples), samples):
        assert (r.status, r.score) == ("unparsed", None) or r.raw["rating_probs"] and r.status == "ok"

    reward = Reward("judge", {"judge": (judge, 1.0)})
    judgements = reward({prompt.id: prompt}, samples)
    assert [j.sample_idx for j in judgements] == [0, 1, 2, 3]
    assert all((j.score is None) == (j.status != "ok") for j in judgements)

"""Rewards, judge scoring and filters: tables of input, expected status and score."""

from __future__ import annotations

import math

import pytest

from rest_loop.config import FilterConfig, ModelConfig
from rest_loop.improve.filters import histogram, select
from rest_loop.improve.judge import PointwiseJudge
from rest_loop.improve.rewards import Reward
from rest_loop.improve.verifiers import NumericMatch, Result, extract_number
from rest_loop.records import Judgement, Prompt, Sample


def sample(text: str, idx: int = 0, pid: str = "p") -> Sample:
    return Sample(round=1, prompt_id=pid, sample_idx=idx, text=text, num_tokens=1, policy="base", seed=0)


@pytest.mark.parametrize("text,expected", [
    ("68", "68"),
    ("The answer is 68.", "68"),
    ("12 + 56 = 68", "68"),
    ("First 10, then #### 42 and 7 more", "42"),
    (r"so \boxed{1,234} it is, not 5", "1234"),
    ("-5 degrees", "-5"),
    ("3.50 dollars", "3.50"),
    ("no digits here", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize("reference,text,score,status", [
    ("68", "68", 1.0, "ok"),
    ("68", "It is 68", 1.0, "ok"),
    ("68", "68.0", 1.0, "ok"),
    ("68", "67", 0.0, "ok"),
    ("68", "sixty-eight", 0.0, "ok"),       # a verifier's "wrong" is a real score
    (None, "68", None, "error"),            # no reference: cannot judge, no fake score
])
def test_numeric_match(reference, text, score, status):
    result = NumericMatch.one(reference, text)
    assert (result.score, result.status) == (score, status)


def judge(prompts_dir) -> PointwiseJudge:
    return PointwiseJudge("judge/pointwise.j2", prompts_dir, ModelConfig(), min_rating=1, max_rating=9)


@pytest.mark.parametrize("top,score,status", [
    ({"9": 0.0}, 1.0, "ok"),                                       # certain 9 -> top score
    ({"1": 0.0}, 0.0, "ok"),
    ({"5": math.log(0.5), "9": math.log(0.5)}, 0.75, "ok"),        # expected rating 7 -> (7-1)/8
    ({" 3": math.log(0.6), "3": math.log(0.2), "x": math.log(0.2)}, 0.25, "ok"),  # " 3" and "3" both count
    ({"The": math.log(0.9), "5": math.log(0.1)}, None, "unparsed"),  # 10% on ratings: no score
    ({}, None, "unparsed"),
])
def test_judge_score_from_rating_probabilities(prompts_dir, top, score, status):
    result = judge(prompts_dir).score(top)
    assert result.status == status
    if score is None:
        assert result.score is None
    else:
        assert result.score == pytest.approx(score)
    assert "rating_probs" in result.raw  # the raw judge output is kept beside the score


def test_judge_prompt_carries_input_completion_and_reference(prompts_dir):
    text = judge(prompts_dir).template.render(input="What is 2 + 3?", completion="5", reference="5",
                                              min_rating="1", max_rating="9")
    assert "What is 2 + 3?" in text and "Reference answer: 5" in text and "from 1 to 9" in text
    no_ref = judge(prompts_dir).template.render(input="Q", completion="A", reference=None,
                                                min_rating="1", max_rating="9")
    assert "Reference" not in no_ref


def test_judge_rejects_multi_token_rating_scale(prompts_dir):
    with pytest.raises(ValueError, match="single digits"):
        PointwiseJudge("judge/pointwise.j2", prompts_dir, ModelConfig(), min_rating=1, max_rating=10)


class Fixed:
    """A reward term that returns canned results, to test how terms combine."""

    name = "fixed"

    def __init__(self, results):
        self.results = results

    def __call__(self, prompts, samples):
        return self.results


def test_reward_weighted_mean_and_status_passthrough():
    samples = [sample("a", 0), sample("b", 1), sample("c", 2)]
    reward = Reward("mix", {
        "v": (Fixed([Result(1.0, "ok"), Result(0.0, "ok"), Result(1.0, "ok")]), 1.0),
        "j": (Fixed([Result(0.5, "ok"), Result(1.0, "ok"), Result(None, "unparsed", "no rating")]), 1.0),
    })
    out = reward({"p": Prompt("p", [])}, samples)
    assert [j.score for j in out] == [0.75, 0.5, None]
    assert [j.status for j in out] == ["ok", "ok", "unparsed"]
    assert out[2].reason == "j: no rating"
    assert set(out[0].parts) == {"v", "j"}


def test_reward_from_config_skips_zero_weight_terms():
    reward = Reward.from_config({"name": "r", "terms": {
        "correct": {"_target_": "rest_loop.improve.verifiers.NumericMatch", "weight": 1.0},
        "off": {"_target_": "rest_loop.improve.verifiers.NumericMatch", "weight": 0.0},
    }})
    assert list(reward.terms) == ["correct"]


def test_reward_rejects_negative_weight():
    with pytest.raises(ValueError, match=r"reward.terms.correct.weight=-1.0"):
        Reward.from_config({"terms": {"correct": {"_target_": "rest_loop.improve.verifiers.NumericMatch",
                                                  "weight": -1}}})


def test_filter_stages_threshold_dedup_cap():
    texts = ["68", " 68 ", "68", "67", "sixty-eight", "x"]
    samples = [sample(t, i) for i, t in enumerate(texts)] + [sample("5", 0, "q")]
    judgements = [Judgement("p", 0, 1.0, "ok"), Judgement("p", 1, 1.0, "ok"), Judgement("p", 2, 1.0, "ok"),
                  Judgement("p", 3, 0.0, "ok"), Judgement("p", 4, 0.9, "ok"), Judgement("p", 5, None, "error"),
                  Judgement("q", 0, 1.0, "ok")]
    kept, counts = select(samples, judgements, FilterConfig(threshold=0.9, max_per_prompt=1))
    assert counts == {"judged": 7, "ok": 6, "threshold": 5, "dedup": 3, "cap": 2}
    assert [(s.prompt_id, s.sample_idx) for s, _ in kept] == [("p", 0), ("q", 0)]  # best score, then lowest index


def test_filter_never_keeps_unscored_samples_even_at_threshold_zero():
    samples = [sample("a", 0), sample("b", 1)]
    judgements = [Judgement("p", 0, None, "unparsed"), Judgement("p", 1, 0.0, "ok")]
    kept, _ = select(samples, judgements, FilterConfig(threshold=0.0))
    assert [s.sample_idx for s, _ in kept] == [1]


def test_histogram_bins_cover_zero_to_one():
    h = histogram([0.0, 0.05, 0.5, 0.99, 1.0])
    assert sum(h.values()) == 5 and h["0.0-0.1"] == 2 and h["0.9-1.0"] == 2

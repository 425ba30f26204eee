"""Rewards and judge scoring: tables of input, expected status and score. Filters: test_filters.py."""

from __future__ import annotations

import math

import pytest

from rest_loop.improve.judge import PointwiseJudge
from rest_loop.calibrate import agreement, auc
from rest_loop.improve.ranking import kendall_tau, parse_ranking, split
from rest_loop.improve.rewards import Reward
from rest_loop.improve.verifiers import NumericMatch, Result, extract_number
from rest_loop.records import Prompt, Sample


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
    return PointwiseJudge("judge/pointwise.j2", prompts_dir, backend=None, min_rating=1, max_rating=9)


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
        PointwiseJudge("judge/pointwise.j2", prompts_dir, backend=None, min_rating=1, max_rating=10)


class Fixed:
    """A reward term that returns canned results, to test how terms combine."""

    name = "fixed"

    def __init__(self, results):
        self.results, self.asked = results, []

    def __call__(self, prompts, samples):
        self.asked.append([s.sample_idx for s in samples])
        return [self.results[s.sample_idx] for s in samples]


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


def test_gate_scores_failures_zero_and_spares_the_judge():
    samples = [sample("a", 0), sample("b", 1), sample("c", 2), sample("d", 3)]
    gate = Fixed([Result(1.0, "ok"), Result(0.0, "ok", "invalid JSON"), Result(None, "error", "no ref"),
                  Result(1.0, "ok")])
    judge = Fixed([Result(0.25, "ok"), Result(1.0, "ok"), Result(1.0, "ok"), Result(None, "unparsed", "?")])
    reward = Reward("gated", {"valid": (gate, 0.0), "judge": (judge, 1.0)}, gates={"valid": 1.0})
    out = reward({"p": Prompt("p", [])}, samples)
    assert judge.asked == [[0, 3]]  # only the samples that passed the gate reach the judge
    assert [(j.score, j.status) for j in out] == [(0.25, "ok"), (0.0, "ok"), (None, "error"), (None, "unparsed")]
    assert out[1].reason == "gate valid failed: invalid JSON" and "judge" not in out[1].parts
    assert reward.version.startswith("valid(gate):")


def test_weighted_sum_is_normalised():
    reward = Reward("mix", {"v": (Fixed([Result(1.0, "ok")]), 3.0), "j": (Fixed([Result(0.0, "ok")]), 1.0)})
    assert reward({"p": Prompt("p", [])}, [sample("a", 0)])[0].score == 0.75


@pytest.mark.parametrize("text,k,order,why", [
    ("Explanation: x\nAnswer: #2\nRanking: #2 > #1 > #3", 3, [2, 1, 3], None),
    ("**Ranking:** #3 > #1 > #2", 3, [3, 1, 2], None),                   # markdown, no answer line
    ("Ranking: 2, 1", 2, [2, 1], None),                                    # no '#'
    ("Answer: #1\nRanking: #2 > #1", 2, None, "'Answer: #1' is not the ranking's first, #2"),
    ("Ranking: #1 > #1 > #2", 3, None, "not an order of candidates #1..#3"),
    ("Ranking: #1 > #2", 3, None, "not an order of candidates #1..#3"),   # one missing: no guessing
    ("Candidate 2 is best.", 2, None, "no 'Ranking: #X > #Y ...' line"),
    ("", 2, None, "no 'Ranking"),
])
def test_parse_ranking(text, k, order, why):
    got, reason = parse_ranking(text, k)
    assert got == order
    assert (reason is None) if why is None else why in reason


@pytest.mark.parametrize("n,size,sizes", [(4, 4, [4]), (5, 4, [3, 2]), (6, 4, [3, 3]), (9, 4, [3, 3, 3]),
                                          (8, 4, [4, 4]), (2, 4, [2])])
def test_ranking_groups_are_near_equal(n, size, sizes):
    groups = split(list(range(n)), size)
    assert [len(g) for g in groups] == sizes and sorted(sum(groups, [])) == list(range(n))


def test_kendall_tau():
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [2, 1, 3]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("text,score,status", [
    ("Looks right.\nRating: 9", 1.0, "ok"),
    ("Rating: 3\nOn reflection... Rating: 5", 0.5, "ok"),   # the last rating line counts
    ("**Rating:** 1", 0.0, "ok"),
    ("Rating: 7/9", 0.75, "ok"),
    ("Rating: 10", None, "unparsed"),                        # out of range: no clamping
    ("Rating: 4.5", None, "unparsed"),
    ("I would give it a seven.", None, "unparsed"),
])
def test_rationale_parsing(prompts_dir, text, score, status):
    from rest_loop.improve.backends import Reply
    from rest_loop.improve.judge import RationaleJudge

    result = RationaleJudge("judge/rationale.j2", prompts_dir, backend=None).parse(Reply(text))
    assert (result.score, result.status) == (score, status)


@pytest.mark.parametrize("text,score,status", [
    ("Relevant and correct.\nScore: 5", 1.0, "ok"),
    ("Score: 0", 0.0, "ok"),
    ("**Score:** 2", 0.4, "ok"),
    ("Rating: 5", None, "unparsed"),   # the label the template asks for, not another
    ("Score: 6", None, "unparsed"),
])
def test_the_additive_judge_reads_its_score_line(prompts_dir, text, score, status):
    from rest_loop.improve.backends import Reply
    from rest_loop.improve.judge import RationaleJudge

    judge = RationaleJudge("judge/additive.j2", prompts_dir, backend=None, min_rating=0, max_rating=5, label="Score")
    result = judge.parse(Reply(text))
    assert (result.score, result.status) == (pytest.approx(score) if score is not None else None, status)


def test_a_judge_that_samples_needs_a_temperature_and_the_policy_judge_keys_its_cache_on_the_weights(prompts_dir,
                                                                                                     tmp_path):
    from rest_loop.config import ConfigError
    from rest_loop.engine import BASE, Policy
    from rest_loop.improve.backends import PolicyBackend
    from rest_loop.improve.judge import RationaleJudge

    with pytest.raises(ConfigError, match="temperature > 0"):
        RationaleJudge("judge/rationale.j2", prompts_dir, backend=None, samples=3, temperature=0.0)
    backend = PolicyBackend({"source": "embedded:smollm2-135m-instruct"})
    backend.use(BASE)
    base = dict(backend.identity)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"round 1")
    backend.use(Policy("round_001", str(adapter), 1))
    first = dict(backend.identity)
    (adapter / "adapter_model.safetensors").write_bytes(b"round 1, retrained")
    backend.use(Policy("round_001", str(adapter), 1))
    assert len({str(base), str(first), str(backend.identity)}) == 3  # other weights: other cache entries
    with pytest.raises(ConfigError, match="judge=policy"):
        backend.use(Policy("round_001", model=str(adapter)))


def test_calibration_metrics():
    report = agreement([0.9, 0.8, None, 0.2, 0.8, 0.1], [True, True, True, False, False, False], threshold=0.5)
    assert report["coverage"] == pytest.approx(5 / 6) and report["base_rate"] == 0.5
    assert report["auc"] == pytest.approx(5.5 / 6)  # 2 right x 3 wrong pairs: 5 ordered, one tie counts 1/2
    assert report["confusion"] == {"tp": 2, "fp": 1, "fn": 0, "tn": 2}
    assert report["precision"] == pytest.approx(2 / 3) and report["accuracy"] == 0.8
    assert auc([0.5, 0.5], [True, True]) is None  # no wrong samples: AUC undefined, not 0.5

"""Evaluation bookkeeping: which number is primary, pass@k from sampled completions, and the files behind them."""

from __future__ import annotations

import json
import logging

import pytest

from rest_loop.config import EvalConfig
from rest_loop.engine import BASE, Completion
from rest_loop.evaluate import evaluate
from rest_loop.improve.rewards import Reward
from rest_loop.improve.verifiers import NumericMatch, Result
from rest_loop.records import Prompt


class CannedEngine:
    """Stands in for vLLM: per prompt a list of texts, of which a call returns the first params["n"].

    Greedy (n=1) gets each prompt's first text. A completion has one token per word, so
    mean_tokens is checkable. Every call's params are kept, to check what was asked for.
    """

    seed, path, identity = 0, "canned/model", {}

    def __init__(self, texts_per_prompt):
        self.texts = [[t] if isinstance(t, str) else t for t in texts_per_prompt]
        self.calls = []

    def chat_prompt(self, messages):
        return messages[-1]["content"]

    def generate(self, prompts, params, policy, seed=None):
        assert len(prompts) == len(self.texts)
        self.calls.append(params)
        return [[Completion(t, list(range(len(t.split()))), "stop") for t in ts[:params["n"]]] for ts in self.texts]


class ByText:
    """A reward term that reads its score from the completion; "?" cannot be scored."""

    name = "by_text"

    def __call__(self, prompts, samples):
        return [Result(None, "unparsed", "no rating") if s.text == "?" else Result(float(s.text), "ok")
                for s in samples]


class Constant:
    """A reward term that gives every sample the same score: tells apart which reward was used."""

    def __init__(self, score):
        self.name, self.score = f"constant_{score}", score

    def __call__(self, prompts, samples):
        return [Result(self.score, "ok") for _ in samples]


def prompts_with(*references):
    return [Prompt(f"p{i}", [{"role": "user", "content": f"q{i}"}], reference=ref) for i, ref in enumerate(references)]


def run(engine, prompts, metric=None, reward=None, eval_reward=None, tmp_path=None, **cfg):
    return evaluate(engine, BASE, prompts, metric, reward, EvalConfig(max_tokens=4, **cfg), round=1, out=tmp_path,
                    eval_reward=eval_reward)


TRAINING, HELDOUT = Reward("train", {"t": (Constant(0.1), 1.0)}), Reward("judge", {"j": (Constant(0.9), 1.0)})


def test_training_reward_keeps_rows_aligned_when_some_are_unscored(tmp_path, caplog):
    reward = Reward("r", {"t": (ByText(), 1.0)})
    with caplog.at_level(logging.WARNING, logger="rest_loop.evaluate"):
        metrics = run(CannedEngine(["1.0", "?", "0.5"]), prompts_with(None, None, None), reward=reward,
                      tmp_path=tmp_path)
    assert (metrics["metric"], metrics["metric_source"], metrics["value"]) == ("mean_reward", "training reward", 0.75)
    assert (metrics["n"], metrics["scored"]) == (3, 2)
    assert "reward hacking cannot show" in caplog.text
    assert any("reward hacking cannot show" in note for note in metrics["notes"])
    rows = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["text"], r["score"], r["status"]) for r in rows] == [
        ("p0", "1.0", 1.0, "ok"), ("p1", "?", None, "unparsed"), ("p2", "0.5", 0.5, "ok")]


def test_accuracy_with_references(tmp_path):
    engine = CannedEngine(["so it is 2", "5"])
    metrics = run(engine, prompts_with("2", "4"), metric=NumericMatch(), reward=TRAINING, tmp_path=tmp_path)
    assert (metrics["metric"], metrics["metric_source"], metrics["value"]) == ("accuracy", "task.metric", 0.5)
    assert (metrics["scorer"], metrics["mean_tokens"], metrics["pass_at"]) == ("numeric_match", 2.5, None)
    assert engine.calls == [{"n": 1, "temperature": 0.0, "top_p": 1.0, "top_k": -1, "max_tokens": 4}]
    assert metrics["notes"] == []


# metric given, every prompt has a reference, eval reward given -> (metric, metric_source, value, eval_reward)
PRECEDENCE = [
    (True, True, True, ("accuracy", "task.metric", 1.0, 0.9)),
    (True, True, False, ("accuracy", "task.metric", 1.0, None)),
    (True, False, True, ("mean_reward", "eval.reward", 0.9, None)),  # a prompt without a reference: no accuracy
    (False, True, True, ("mean_reward", "eval.reward", 0.9, None)),
    (True, False, False, ("mean_reward", "training reward", 0.1, None)),
    (False, True, False, ("mean_reward", "training reward", 0.1, None)),
]


@pytest.mark.parametrize("has_metric, all_references, has_eval_reward, expected", PRECEDENCE)
def test_primary_metric_precedence(tmp_path, has_metric, all_references, has_eval_reward, expected):
    prompts = prompts_with("3", "7" if all_references else None)
    metrics = run(CannedEngine(["3", "7"]), prompts, metric=NumericMatch() if has_metric else None, reward=TRAINING,
                  eval_reward=HELDOUT if has_eval_reward else None, tmp_path=tmp_path)
    assert (metrics["metric"], metrics["metric_source"], metrics["value"], metrics["eval_reward"]) == expected
    warned = any("training reward" in note for note in metrics["notes"])
    assert warned == (expected[1] == "training reward")
    if has_metric and not all_references:
        assert any("1 of 2 held-out prompts have no reference" in note for note in metrics["notes"])


def test_eval_reward_beside_accuracy_is_kept_per_row(tmp_path):
    metrics = run(CannedEngine(["3", "8"]), prompts_with("3", "7"), metric=NumericMatch(), reward=TRAINING,
                  eval_reward=HELDOUT, tmp_path=tmp_path)
    assert (metrics["value"], metrics["eval_reward"]) == (0.5, 0.9)
    assert metrics["eval_reward_scorer"] == "judge [j:constant_0.9]"
    rows = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [(r["score"], r["eval_reward_score"], r["eval_reward_status"]) for r in rows] == [
        (1.0, 0.9, "ok"), (0.0, 0.9, "ok")]


def test_nothing_to_score_with_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to score"):
        run(CannedEngine(["3"]), prompts_with(None), metric=NumericMatch(), tmp_path=tmp_path)


def test_pass_at_k_from_sampled_correct_counts(tmp_path):
    # p0: 2 of 4 samples correct, p1: none. Greedy sees the first text of each.
    engine = CannedEngine([["2", "3", "2", "5"], ["1", "1", "1", "1"]])
    metrics = run(engine, prompts_with("2", "4"), metric=NumericMatch(), tmp_path=tmp_path, pass_k=4, temperature=0.7)
    assert metrics["value"] == 0.5
    assert [(c["n"], c["temperature"]) for c in engine.calls] == [(1, 0.0), (4, 0.7)]
    # p0: pass@1 = 2/4, pass@2 = 1 - C(2,2)/C(4,2) = 5/6, pass@4 = 1; p1: 0 for every k
    assert metrics["pass_at"].keys() == {"1", "2", "4"}
    assert metrics["pass_at"]["1"] == pytest.approx(0.25)
    assert metrics["pass_at"]["2"] == pytest.approx(5 / 12)
    assert metrics["pass_at"]["4"] == pytest.approx(0.5)
    # 8 one-word samples, 4 distinct words, no bigrams
    assert metrics["sampled"] == {"distinct_1": 0.5, "distinct_2": 0.0, "mean_chars": 1.0, "mean_tokens": 1.0,
                                  "n_per_prompt": 4, "temperature": 0.7}
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["sample_idx"], r["text"], r["score"], r["correct"]) for r in rows] == [
        ("p0", 0, "2", 1.0, True), ("p0", 1, "3", 0.0, False), ("p0", 2, "2", 1.0, True), ("p0", 3, "5", 0.0, False),
        ("p1", 0, "1", 0.0, False), ("p1", 1, "1", 0.0, False), ("p1", 2, "1", 0.0, False),
        ("p1", 3, "1", 0.0, False)]


class PartialCredit:
    """A verifier with partial credit and a failure: "a" is right, "b" half right, "x" cannot be judged."""

    name = "partial"

    def __call__(self, prompts, samples):
        return [{"a": Result(1.0, "ok"), "b": Result(0.5, "ok"), "x": Result(None, "error", "boom")}[s.text]
                for s in samples]


def test_pass_at_k_counts_only_full_marks(tmp_path):
    engine = CannedEngine([["a", "b", "x"]])
    metrics = run(engine, prompts_with("ref"), metric=PartialCredit(), tmp_path=tmp_path, pass_k=3)
    assert metrics["pass_at"]["1"] == pytest.approx(1 / 3)  # b's 0.5 and x's error are both misses
    assert metrics["pass_at"].keys() == {"1", "2", "3"}
    assert any("1 of 3 samples could not be scored" in note for note in metrics["notes"])


def test_pass_at_k_needs_the_task_metric(tmp_path):
    engine = CannedEngine([["0.5", "1.0"], ["0.5", "0.0"]])
    metrics = run(engine, prompts_with(None, None), reward=TRAINING, eval_reward=HELDOUT, tmp_path=tmp_path, pass_k=2)
    assert (metrics["pass_at"], metrics["sampled"]) == (None, None)
    assert any("pass@k not computed" in note for note in metrics["notes"])
    assert len(engine.calls) == 1  # no samples drawn that nothing could score
    assert not (tmp_path / "samples.jsonl").exists()


def test_pass_k_zero_draws_no_samples(tmp_path):
    engine = CannedEngine([["2", "2"]])
    metrics = run(engine, prompts_with("2"), metric=NumericMatch(), tmp_path=tmp_path, pass_k=0)
    assert (metrics["pass_at"], len(engine.calls)) == (None, 1)
    assert not (tmp_path / "samples.jsonl").exists()


def test_greedy_diversity(tmp_path):
    metrics = run(CannedEngine(["The cat sat.", "the cat, ran"]), prompts_with(None, None), reward=TRAINING,
                  tmp_path=tmp_path)
    # words: the cat sat | the cat ran -> unigrams 4 unique of 6, bigrams 3 unique of 4
    assert metrics["distinct_1"] == pytest.approx(4 / 6)
    assert metrics["distinct_2"] == pytest.approx(3 / 4)
    assert (metrics["mean_chars"], metrics["mean_tokens"]) == (12.0, 3.0)


def test_metrics_are_json(tmp_path):
    """metrics.json is written by the loop with json.dumps: everything returned must survive it."""
    metrics = run(CannedEngine([["2", "3"]]), prompts_with("2"), metric=NumericMatch(), reward=TRAINING,
                  eval_reward=HELDOUT, tmp_path=tmp_path, pass_k=2)
    assert json.loads(json.dumps(metrics)) == metrics

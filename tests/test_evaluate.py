"""Evaluation bookkeeping: every held-out completion is kept beside its own score and status."""

from __future__ import annotations

import json

from rest_loop.engine import BASE, Completion
from rest_loop.evaluate import evaluate
from rest_loop.improve.rewards import Reward
from rest_loop.improve.verifiers import Result
from rest_loop.records import Prompt


class CannedEngine:
    """Stands in for vLLM: returns fixed completions, so only evaluate's own logic is under test."""

    seed = 0

    def __init__(self, texts):
        self.texts = texts

    def chat_prompt(self, messages):
        return messages[-1]["content"]

    def generate(self, prompts, params, policy):
        return [[Completion(t, [1, 2], "stop")] for t in self.texts]


class ByText:
    name = "by_text"

    def __call__(self, prompts, samples):
        return [Result(None, "unparsed", "no rating") if s.text == "?" else Result(float(s.text), "ok")
                for s in samples]


def test_mean_reward_keeps_rows_aligned_when_some_are_unscored(tmp_path):
    prompts = [Prompt(f"p{i}", [{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    metrics = evaluate(CannedEngine(["1.0", "?", "0.5"]), BASE, prompts, Reward("r", {"t": (ByText(), 1.0)}),
                       max_tokens=4, round=1, out=tmp_path)
    assert metrics["metric"] == "mean_reward" and metrics["value"] == 0.75
    assert (metrics["n"], metrics["scored"]) == (3, 2)
    rows = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["text"], r["score"], r["status"]) for r in rows] == [
        ("p0", "1.0", 1.0, "ok"), ("p1", "?", None, "unparsed"), ("p2", "0.5", 0.5, "ok")]


def test_accuracy_with_references(tmp_path):
    prompts = [Prompt("a", [{"role": "user", "content": "1+1"}], reference="2"),
               Prompt("b", [{"role": "user", "content": "2+2"}], reference="4")]
    metrics = evaluate(CannedEngine(["2", "5"]), BASE, prompts, None, max_tokens=4, round=0, out=tmp_path)
    assert (metrics["metric"], metrics["value"], metrics["mean_tokens"]) == ("accuracy", 0.5, 2.0)

"""rest-loop-synth end to end: the generator and the gate's judge are an OpenAI-compatible server on loopback.

The server (tests/judge_server.py) writes tasks when asked by prompts/synth/inputs.j2 and rates them when
asked by prompts/synth/gate.j2; it injects faults. The command runs as a subprocess, as a user runs it, so
exit codes and messages are checked too. The last test trains a round on the tiny model (slow).
"""

from __future__ import annotations

import doctest
import json
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rest_loop.store import read_json, read_jsonl
from rest_loop.synth.dedup import normalise
from tests.judge_server import JudgeServer

ROOT = Path(__file__).parents[1]
SEEDS = ROOT / "examples/seeds.jsonl"
VOCAB = [f"{a}{b}" for a in ("bal", "cor", "dun", "fel", "gar", "hob", "jin", "kel", "lum", "mor")
         for b in ("ax", "en", "ip", "ot", "us", "ek", "ir", "ad", "om", "uv")]  # 100 made-up words
VAGUE = "The task is vague: it does not say what to compute"
PLANTED = "What is the boiling point of water at sea level, in kelvin?"


class Writer:
    """The server's answers: tasks for a generation prompt, a rating for a gate prompt.

    Before the prompt lists mistakes, the first task of each reply is a vague one the judge rates 1;
    with `echo`, each reply also repeats the examples it was shown, one of them reworded."""

    def __init__(self, echo: bool = False):
        self.echo, self.n, self.lock = echo, 0, threading.Lock()

    def __call__(self, body: dict) -> str:
        text = body["messages"][-1]["content"]
        if text.startswith("You check new tasks"):
            task = text.split("New task:\n", 1)[1].split("\n", 1)[0]
            return f"{VAGUE}.\nRating: 1" if task.startswith("VAGUE") else "Nothing is wrong.\nRating: 5"
        count = int(re.search(r"Write (\d+) new task", text).group(1))
        with self.lock:
            self.n += 1
            rng = random.Random(self.n)
        tasks = [" ".join(rng.sample(VOCAB, 9)) + "?" for _ in range(count)]
        if "Earlier tasks had these mistakes" not in text:
            tasks[0] = "VAGUE " + tasks[0]
        if self.echo:
            shown = re.findall(r"Example \d+:\n(.+)", text)
            tasks += shown + [s.upper().rstrip("?") + " !" for s in shown]
        return json.dumps(tasks)


def synth(out: Path, server: JudgeServer, *extra: str, seeds: Path = SEEDS) -> subprocess.CompletedProcess:
    endpoint = [f"base_url={server.url}", "model=judge-test", "api_key_env=null", "max_retries=3", "backoff=0.01",
                "timeout=5", "max_concurrency=2", f"cache={out.parent / 'replies.sqlite'}"]
    cmd = [sys.executable, "-m", "rest_loop.synth", f"synth.seeds={seeds}", f"out={out}", "judge@synth.generator=openai",
           "judge=openai", *[f"synth.generator.{o}" for o in endpoint], *[f"judge.{o}" for o in endpoint],
           "synth.requests=6", "synth.count=4", "synth.review.first=8", "synth.review.worst=2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return run.stdout + run.stderr


def test_review_gate_dedup_and_the_dataset(tmp_path):
    with JudgeServer(Writer()) as server:
        server.push_faults("500", "429")  # retried: nothing is lost
        log = ok(synth(tmp_path / "run", server))
    run = tmp_path / "run"
    for stage in ("review", "generate", "gate", "dedup", "report"):
        assert (run / stage / "DONE").exists(), stage
    dataset = run / "report/dataset.jsonl"
    assert f"next: rest-loop task=from_file task.source={dataset}" in log

    review = read_json(run / "review/review.json")
    assert review["mistakes"] == [VAGUE + "."]  # the judge's reason, once, though several rows earned it
    first = review["made"]["prompt"][-1]["content"]
    second = read_json(run / "generate/stats.json")["prompt"][-1]["content"]
    assert "mistakes" not in first and f"- {VAGUE}." in second  # fed back into the full batch's prompt

    gate = read_json(run / "gate/stats.json")
    before, after = gate["quality"]["before_review"], gate["quality"]["after_review"]
    assert before["pass_rate"] == 0.75 and after["pass_rate"] == 1.0 and after["mean_score"] > before["mean_score"]

    rows = read_jsonl(dataset)
    assert len(rows) == 6 * 4 and len({r["input"] for r in rows}) == 24
    for r in rows:  # lineage: who wrote it, from what, and how it scored
        assert r["generator"] == "judge-test" and len(r["examples"]) == 3 and r["scores"]["gate"] == 1.0
    summary = read_json(run / "report/diversity.json")
    assert summary["rows"] == 24 and (run / "report/diversity.png").stat().st_size > 0
    assert read_json(run / "report/stats.json")["generate"]["rows"] == 24


def test_the_gate_drops_rows_under_the_threshold(tmp_path):
    with JudgeServer(Writer()) as server:
        ok(synth(tmp_path / "run", server, "synth.review.first=0"))  # no review: every reply keeps its vague task
    gate = read_json(tmp_path / "run/gate/stats.json")
    assert (gate["in"], gate["kept"], gate["below_threshold"], gate["unjudged"]) == (24, 18, 6, 0)
    judged = read_jsonl(tmp_path / "run/gate/rows.jsonl")
    low = [r for r in judged if r["scores"]["gate"] == 0.0]
    assert len(low) == 6 and all(r["input"].startswith("VAGUE") for r in low)
    assert not any(r["input"].startswith("VAGUE") for r in read_jsonl(tmp_path / "run/report/dataset.jsonl"))


def test_a_budget_stop_then_resume_asks_nothing_twice(tmp_path):
    with JudgeServer(Writer()) as server:
        stopped = synth(tmp_path / "run", server, "synth.generator.budget_requests=4")
        assert stopped.returncode == 4, stopped.stdout[-3000:]
        said = stopped.stdout + stopped.stderr  # Hydra logs to the console's stdout
        assert "request budget spent" in said and f"out={tmp_path / 'run'}" in said
        assert not (tmp_path / "run/report/DONE").exists()
        asked = len(server.answered)
        ok(synth(tmp_path / "run", server))
        prompts = [json.dumps(b["messages"]) for b in server.answered]
        assert len(prompts) == len(set(prompts)) and len(prompts) > asked  # went on; no prompt answered twice
        again = len(server.answered)
        ok(synth(tmp_path / "run", server))  # finished: every stage is read back
        assert len(server.answered) == again


def arithmetic_heldout() -> str:
    from rest_loop.config import build
    from tests.conftest import compose_config

    return build(compose_config().task).heldout[0].input


@pytest.mark.parametrize("given", ["file", "task"])
def test_no_heldout_prompt_survives(tmp_path, given):
    planted = PLANTED if given == "file" else arithmetic_heldout()
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text() + json.dumps({"input": planted, "reference": "0"}) + "\n")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"input": planted}) + "\n")
    where = f"synth.heldout={heldout}" if given == "file" else "synth.heldout=${task}"  # the arithmetic task's
    with JudgeServer(Writer(echo=True)) as server:  # it copies every example it is shown, and a reworded copy
        ok(synth(tmp_path / "run", server, where, "synth.k=4", seeds=seeds))
    kept = read_jsonl(tmp_path / "run/report/dataset.jsonl")
    made = read_jsonl(tmp_path / "run/generate/rows.jsonl")
    key = normalise(planted)[:30]
    assert any(normalise(r["input"]).startswith(key) for r in made)  # it was written...
    assert not any(normalise(r["input"]).startswith(key) for r in kept)  # ...and none came through
    seed_texts = {normalise(json.loads(line)["input"]) for line in seeds.read_text().splitlines()}
    assert not any(normalise(r["input"]) in seed_texts for r in kept)
    stages = {s["stage"]: s["in"] - s["out"] for s in read_json(tmp_path / "run/dedup/stages.json")}
    assert stages["exact_seeds"] > 0 and stages["near_seeds"] > 0
    assert read_json(tmp_path / "run/report/stats.json")["heldout"] == (1 if given == "file" else 100)


@pytest.mark.parametrize("override,names", [
    ("synth.k=0", "synth.k=0"),
    ("synth.requests=-1", "synth.requests=-1"),
    ("synth.gate.threshold=2", "synth.gate.threshold=2"),
    ("synth.gate.unjudged=maybe", "synth.gate.unjudged='maybe'"),
    ("synth.decks=nope.yaml", "synth.decks='nope.yaml'"),
    ("synth.heldout=nope.jsonl", "synth.heldout"),
    ("+synth.decks.topic=[]", "synth.decks.topic"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, override, names):
    with JudgeServer(Writer()) as server:
        run = synth(tmp_path / "run", server, override)
        assert run.returncode == 2, run.stdout[-3000:]
        assert names in run.stdout + run.stderr and not server.requests  # nothing was asked


def test_bad_seed_row_names_the_file_and_row(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text() + '{"question": "no input column"}\n')
    with JudgeServer(Writer()) as server:
        run = synth(tmp_path / "run", server, seeds=seeds)
        said = run.stdout + run.stderr
        assert run.returncode == 2 and f"{seeds}: row 11" in said and not server.requests, said[-3000:]


@pytest.mark.slow
def test_from_ten_examples_to_a_fine_tuned_round_on_the_tiny_model(tiny_model, tmp_path):
    """The tiny model writes (its replies held to a JSON list) and judges; the printed next command trains on it."""
    model = [f"model.source={tiny_model}", "model=hf", "model.max_model_len=1024", "model.kv_cache_gb=1"]
    cache = f"{tmp_path / 'replies.sqlite'}"
    cmd = [sys.executable, "-m", "rest_loop.synth", f"synth.seeds={SEEDS}", f"out={tmp_path / 'synth'}", *model,
           "synth.requests=6", "synth.count=2", "synth.with_reference=true", "synth.constrain=true",
           "synth.max_tokens=256", "synth.review.first=2", "synth.gate.threshold=0.0", "synth.gate.unjudged=keep",
           "synth.gate.terms.judge.max_tokens=128",
           "synth.gate.terms.judge.constrain=true", f"synth.generator.cache={cache}", f"judge.cache={cache}"]
    log = ok(subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT))
    rows = read_jsonl(tmp_path / "synth/report/dataset.jsonl")
    assert len(rows) >= 6 and all(r["reference"] and r["generator"] == tiny_model for r in rows), log[-3000:]
    replies = read_json(tmp_path / "synth/report/stats.json")["generate"]["replies"]
    assert sum(replies.values()) == 6 and set(replies) <= {"ok", "partial"}  # a list, maybe cut off at max_tokens

    [next_line] = [line for line in log.splitlines() if line.startswith("next: rest-loop ")]
    task = next_line.split()[2:]  # task=from_file task.source=<dataset> task.fields.reference=reference
    assert "task.fields.reference=reference" in task
    run = tmp_path / "run"
    ok(subprocess.run([sys.executable, "-m", "rest_loop", *task, *model, "reward=answer_match", "task.n_train=4",
                       "task.n_heldout=2", "sampler.n=2", "sampler.max_tokens=8", "loop.rounds=1", "eval.max_tokens=8",
                       "filter.threshold=0.0", "trainer.epochs=1", "trainer.batch_size=4",
                       f"paths.pools={tmp_path / 'pools'}", f"hydra.run.dir={run}"],
                      capture_output=True, text=True, timeout=900, cwd=ROOT))
    assert (run / "round_001/finetune/adapter/adapter_config.json").exists()
    assert (run / "round_001/eval/DONE").exists()


def test_help_is_ours():
    out = subprocess.run([sys.executable, "-m", "rest_loop.synth", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("rest-loop-synth: "), out.stderr[-2000:]
    assert re.findall(r"^  (\d)  ", out.stdout, re.M) == ["0", "1", "2", "4"]


def test_doctests():
    from rest_loop.synth import run

    assert doctest.testmod(run).failed == 0

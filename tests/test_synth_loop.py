"""A loop that synthesises its train prompts first (a `synth` block: experiment=complaints, persona_distill).

The generator is the fault-injecting OpenAI-compatible server (tests/judge_server.py); the policy is the
tiny model. The CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rest_loop.store import read_jsonl
from tests.judge_server import JudgeServer

ROOT = Path(__file__).parents[1]
HELDOUT = [json.loads(line)["input"] for line in (ROOT / "data/complaints/heldout.jsonl").read_text().splitlines()]
WORDS = ["fee", "payment", "letter", "branch", "phone", "statement", "interest", "month", "refund", "error",
         "manager", "account", "delay", "notice", "balance", "charge", "office", "online", "email", "form"]


class Complaints:
    """Writes `count` complaints for the product it is dealt; each reply also repeats a held-out complaint."""

    def __init__(self):
        self.n, self.lock = 0, threading.Lock()

    def __call__(self, body: dict) -> str:
        text = body["messages"][-1]["content"]
        count, product = re.search(r"Write (\d+) new complaints? about a (.+?),", text).groups()
        count = int(count)
        with self.lock:
            self.n += 1
            rng = random.Random(self.n)
        rows = [f"My {product} problem: " + " ".join(rng.sample(WORDS, 10)) + "." for _ in range(count)]
        return json.dumps(rows + [HELDOUT[self.n % len(HELDOUT)]])


def rest_loop(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rest_loop", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def generator(server: JudgeServer, cache: Path) -> list[str]:
    return ["judge@synth.generator=openai", *[f"synth.generator.{o}" for o in (
        f"base_url={server.url}", "model=writer", "api_key_env=null", "max_retries=2", "backoff=0.01", "timeout=5",
        f"cache={cache}")]]


@pytest.mark.parametrize("override,names", [
    ("task.source=/tmp/mine.jsonl", "task.source"),
    ("synth.reference_from=colour", "synth.reference_from"),
    ("task=arithmetic", "task=from_file"),
    ("synth.seeds=/nonexistent/seeds.jsonl", "/nonexistent/seeds.jsonl"),
])
def test_bad_synth_config_exits_2_before_any_model(override, names, tmp_path):
    with JudgeServer(Complaints()) as server:
        run = rest_loop("experiment=complaints", override, *generator(server, tmp_path / "c.sqlite"),
                        f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
        said = run.stdout + run.stderr
        assert run.returncode == 2 and names in said and not server.requests, said[-3000:]


@pytest.mark.slow
def test_complaints_synthesised_then_trained_and_resumed(tiny_model, tmp_path):
    """Synthesis writes the train prompts (labels from the product deck, no held-out complaint among them),
    then a round trains on them and is evaluated on the hand-written held-out rows; a resume asks nothing."""
    run = tmp_path / "run"
    model = [f"model.source={tiny_model}", "model=hf", "model.max_model_len=1024", "model.kv_cache_gb=1"]
    small = ["synth.requests=8", "synth.gate=null", "synth.review.first=0", "task.n_heldout=8", "sampler.n=2",
             "filter.threshold=0.0",  # a random tiny model labels no complaint right: keep its answers anyway
             "trainer.epochs=1", "trainer.batch_size=4", f"paths.pools={tmp_path / 'pools'}"]
    with JudgeServer(Complaints()) as server:
        done = rest_loop("experiment=complaints", *generator(server, tmp_path / "c.sqlite"), *model, *small,
                         f"hydra.run.dir={run}")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        asked = len(server.requests)
        assert asked == 8
        again = rest_loop(f"resume={run}")
        assert again.returncode == 0 and len(server.requests) == asked, again.stderr[-3000:]

    saved = OmegaConf.load(run / "config.yaml")
    assert saved.task.source == str(run / "synth/report/dataset.jsonl")
    rows = read_jsonl(run / "synth/report/dataset.jsonl")
    labels = ["credit card", "mortgage", "student loan", "bank account"]
    assert len(rows) == 16 and {r["reference"] for r in rows} == set(labels)  # 8 requests x 2; every product dealt
    assert all(r["input"].startswith(f"My {r['reference']} problem") for r in rows)
    assert not {r["input"] for r in rows} & set(HELDOUT)  # each reply repeated one: dedup dropped them all
    trained = read_jsonl(run / "round_001/finetune/train.jsonl")
    assert {t["messages"][-1]["content"].split("Text: ")[1].split("\n")[0] for t in trained} <= {
        r["input"] for r in rows}
    for stage in ("synth/report", "round_000/eval", "round_001/grow", "round_001/finetune", "round_001/eval"):
        assert (run / stage / "DONE").exists(), stage


def test_decks_given_on_the_command_line_compose():
    """The README's `'synth.decks={topic: [...]}'`: a mapping given for the default (null) decks."""
    out = subprocess.run([sys.executable, "-m", "rest_loop.synth", "synth.seeds=examples/seeds.jsonl",
                          "synth.decks={topic: [travel, cooking]}", "--cfg", "job"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert OmegaConf.create(out.stdout).synth.decks == {"topic": ["travel", "cooking"]}

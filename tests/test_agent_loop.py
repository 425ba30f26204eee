"""The agent loop end to end: real CLI, vLLM engine, tools and TRL trainer on the tiny model.

One run is uninterrupted. A second, with the same config and seed, rolls out the same trajectories
(the draw is a function of its inputs). A third is SIGKILLed in the middle of round 1's rollout and
resumed: it ends with the same trajectories, kept examples and held-out trajectories as the first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rest_loop.store import read_json, read_jsonl
from tests.test_loop_e2e import cli, run_ok
from tests.test_resume import Watched, after

pytestmark = pytest.mark.slow
FILES = ["round_000/eval/completions.jsonl", "round_001/grow/trajectories.jsonl", "round_001/improve/judgements.jsonl",
         "round_001/improve/kept.jsonl", "round_001/finetune/train.jsonl", "round_001/eval/completions.jsonl"]


def agent_cli(run_dir: Path, model: str, *extra: str) -> list[str]:
    return cli(run_dir, model, "experiment=agent_calculator", "task.n_train=4", "task.n_heldout=3", "sampler.n=3",
               "sampler.max_tokens=24", "eval.max_tokens=24", "env.max_steps=3", "filter.threshold=0.0",
               "filter.max_per_prompt=3", "trainer.epochs=1", "trainer.batch_size=4", "agent.train_on=step", *extra)


@pytest.fixture(scope="module")
def reference_run(tiny_model, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("agent") / "run"
    run_ok(agent_cli(run_dir, tiny_model))
    return run_dir


def test_one_agent_round_writes_trajectories_and_trains_on_their_tokens(reference_run):
    run = reference_run
    for stage in ["round_000/eval", "round_001/grow", "round_001/improve", "round_001/finetune", "round_001/eval"]:
        assert (run / stage / "DONE").exists(), stage
    trajectories = read_jsonl(run / "round_001/grow/trajectories.jsonl")
    assert len(trajectories) == 4 * 3 and {t["sample_idx"] for t in trajectories} == {0, 1, 2}
    for t in trajectories:
        assert t["policy"] == "base" and 1 <= len(t["steps"]) <= 3
        assert t["stop"] in ("finish", "max_steps", "no_action", "context")
        for s in t["steps"]:
            assert s["parse"] in ("ok", "unparsed") and s["token_ids"]
            if s["tool_status"] is not None:  # a tool ran: its reply is in the history as tokens
                assert s["observation"] is not None and s["observation_ids"]
    grow = read_json(run / "round_001/grow/DONE")
    assert grow["trajectories"] == 12 and grow["valid_action_rate"] is not None
    # every kept example is cut from a trajectory's own tokens: the prompt ids, then steps and observations
    by_key = {(t["prompt_id"], t["sample_idx"]): t for t in trajectories}
    kept = read_jsonl(run / "round_001/improve/kept.jsonl")
    assert kept and read_jsonl(run / "round_001/finetune/train.jsonl") == kept
    for e in kept:
        t = by_key[e["prompt_id"], e["sample_idx"]]
        history = t["prompt_ids"] + [i for s in t["steps"][:e["turn"]] for i in s["token_ids"] + s["observation_ids"]]
        assert e["input_ids"] == history + t["steps"][e["turn"]]["token_ids"]
        assert e["mask"] == [0] * len(history) + [1] * len(t["steps"][e["turn"]]["token_ids"])
    metrics = read_json(run / "round_001/eval/metrics.json")
    for key in ("value", "f1", "mean_steps", "valid_action_rate", "tool_error_rate", "stops"):
        assert key in metrics, key
    assert (run / "round_001/finetune/adapter/adapter_config.json").exists()


def test_same_seed_same_trajectories(reference_run, tiny_model, tmp_path):
    """A second run, with a pool cache of its own, draws the very same trajectories."""
    run_dir = tmp_path / "again"
    run_ok(agent_cli(run_dir, tiny_model, "loop.rounds=0"))
    assert (run_dir / FILES[0]).read_bytes() == (reference_run / FILES[0]).read_bytes()


def test_killed_mid_rollout_resumes_to_identical_trajectories(reference_run, tiny_model, tmp_path):
    run_dir = tmp_path / "killed"
    watched = Watched(agent_cli(run_dir, tiny_model))
    watched.kill_when(after("round 1: roll out", "Processed prompts"), "round 1's rollout")
    assert not (run_dir / "round_001/grow/DONE").exists()
    run_ok([sys.executable, "-m", "rest_loop", f"resume={run_dir}"])
    for name in FILES:
        assert (run_dir / name).read_bytes() == (reference_run / name).read_bytes(), name


def test_tool_call_format_rolls_out_with_tool_turns(tiny_model, smollm2, tmp_path):
    """The chat-template tool-call format (Hermes): constrained turns are tool calls, and each result comes
    back as a `tool` turn of the template, as token ids."""
    from transformers import AutoTokenizer

    run_dir = tmp_path / "calls"
    run_ok(agent_cli(run_dir, tiny_model, "agent=tool_calls", "agent.format.constrain=true", "loop.rounds=0",
                     "eval.max_tokens=64", "agent.format.max_chars=8", "eval.pass_k=8"))
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    trajectories = read_jsonl(run_dir / "round_000/eval/completions.jsonl") + \
        read_jsonl(run_dir / "round_000/eval/samples.jsonl")  # greedy, then 8 sampled per question
    steps = [s for t in trajectories for s in t["steps"]]
    assert steps and all(s["parse"] == "ok" and s["text"].startswith("<tool_call>") for s in steps
                         if s["finish_reason"] == "stop")
    ran = [s for s in steps if s["observation_ids"]]
    assert ran, "no tool ran"
    assert all("<|im_start|>tool\n" in tokenizer.decode(s["observation_ids"]) for s in ran)
    assert "<tools>" in tokenizer.decode(trajectories[0]["prompt_ids"])  # SmolLM2's template has no tools=


def test_kept_trajectories_export_as_tool_data_and_read_back(reference_run, tmp_path):
    from rest_loop.agent.data import load_tool_data
    from rest_loop.export import main as export_main

    export_main([str(reference_run), "--out", str(tmp_path / "out")])
    kept = {(e["prompt_id"], e["sample_idx"]) for e in read_jsonl(reference_run / "round_001/improve/kept.jsonl")}
    trajectories = {(t["prompt_id"], t["sample_idx"]): t
                    for t in read_jsonl(reference_run / "round_001/grow/trajectories.jsonl")}
    lineage = read_jsonl(tmp_path / "out/round_001.lineage.jsonl")
    assert {(r["prompt_id"], r["sample_idx"]) for r in lineage} == kept
    for name in ("round_001.tools_sharegpt.json", "round_001.tools_openai.jsonl"):
        back = load_tool_data(tmp_path / "out" / name)
        assert len(back) == len(kept)
        for row, conversation in zip(lineage, back):
            steps = trajectories[row["prompt_id"], row["sample_idx"]]["steps"]
            ran = [(s["tool"], s["arguments"], s["observation"]) for s in steps if s["observation"] is not None]
            assert [(s.tool, s.arguments, s.observation) for s in conversation.trajectory.steps
                    if s.observation is not None] == ran
    info = read_json(tmp_path / "out/dataset_info.json")
    assert info["round_001_tools"]["tags"]["function_tag"] == "function_call"

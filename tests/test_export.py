"""rest-loop-export: a run directory as the loop leaves it, exported and read back with `datasets`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset, load_from_disk

from rest_loop.export import collect, export, split_prompt, to_alpaca, to_sharegpt
from rest_loop.records import KeptExample, to_dict
from rest_loop.store import write_json, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = {"role": "system", "content": "You add numbers."}
SUM = [SYSTEM, {"role": "user", "content": "What is 2 + 3?"}]
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! Ask me a sum."},
        {"role": "user", "content": "Then 4 + 4?"}]
PLAIN = [{"role": "user", "content": "What is 3 + 4?"}]


def grown(r, step, prompt_id, messages, completion, idx=0, policy="base"):
    return KeptExample(round=r, step=step, prompt_id=prompt_id, sample_idx=idx, messages=messages,
                       completion=completion, score=1.0, policy=policy, seed=7, reward="correct:numeric_match")


def original(r, step):
    return KeptExample(round=r, step=step, prompt_id="3+4", sample_idx=-1, messages=PLAIN, completion="7",
                       score=None, policy="original", seed=7, reward="original", source="original")


@pytest.fixture
def run(tmp_path) -> Path:
    """Two rounds, round 2 with two Improve steps; round 2's second fine-tune never finished."""
    run = tmp_path / "runs" / "demo" / "2026-11-23_12-00-00"
    (run / "round_000" / "eval").mkdir(parents=True)  # the base model's evaluation: no training data
    stages = {
        "round_001/finetune": [grown(1, 1, "2+3", SUM, "5"), grown(1, 1, "chat", CHAT, "8", idx=3), original(1, 1)],
        "round_002/finetune": [grown(2, 1, "2+3", SUM, "5", idx=1, policy="round_001"),     # again: a duplicate
                               grown(2, 1, "2+3", SUM, "2 + 3 = 5", idx=2, policy="round_001"), original(2, 1)],
        "round_002/finetune_2": [grown(2, 2, "2+3", SUM, "2 + 3 = 5", idx=2, policy="round_002"), original(2, 2)],
        "round_001/improve": [grown(1, 1, "2+3", SUM, "5"), grown(1, 1, "chat", CHAT, "8", idx=3)],
    }
    for stage, rows in stages.items():
        write_jsonl(run / stage / ("kept.jsonl" if "improve" in stage else "train.jsonl"), rows)
        if stage != "round_002/finetune_2":
            write_json(run / stage / "DONE", {})
    return run


LINEAGE_ORDER = [  # (round, step, prompt_id, sample_idx, source) of every trained row, in order
    (1, 1, "2+3", 0, "grown"), (1, 1, "chat", 3, "grown"), (1, 1, "3+4", -1, "original"),
    (2, 1, "2+3", 1, "grown"), (2, 1, "2+3", 2, "grown"), (2, 1, "3+4", -1, "original"),
    (2, 2, "2+3", 2, "grown"), (2, 2, "3+4", -1, "original"),
]


def order(rows):
    return [(r["round"], r["step"], r["prompt_id"], r["sample_idx"], r["source"]) for r in rows]


def test_collect_reads_rounds_then_steps_with_lineage(run):
    rows = collect(run)
    assert order(rows) == LINEAGE_ORDER
    assert rows[3] | {"messages": None} == {
        "round": 2, "step": 1, "prompt_id": "2+3", "sample_idx": 1, "messages": None, "completion": "5",
        "score": 1.0, "policy": "round_001", "seed": 7, "reward": "correct:numeric_match", "source": "grown"}
    assert order(collect(run, rounds=[2])) == LINEAGE_ORDER[3:]
    assert order(collect(run, which="kept")) == LINEAGE_ORDER[:2]


def test_alpaca_and_sharegpt_records():
    rows = [to_dict(r) for r in (grown(1, 1, "2+3", SUM, "5"), grown(1, 1, "chat", CHAT, "8"), original(1, 1))]
    assert to_alpaca(rows) == [
        {"instruction": "What is 2 + 3?", "input": "", "output": "5", "system": "You add numbers."},
        {"instruction": "Then 4 + 4?", "input": "", "output": "8", "history": [["Hi", "Hello! Ask me a sum."]]},
        {"instruction": "What is 3 + 4?", "input": "", "output": "7"},
    ]
    assert to_sharegpt(rows) == [
        {"system": "You add numbers.", "conversations": [
            {"from": "human", "value": "What is 2 + 3?"}, {"from": "gpt", "value": "5"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello! Ask me a sum."},
                           {"from": "human", "value": "Then 4 + 4?"}, {"from": "gpt", "value": "8"}]},
        {"conversations": [{"from": "human", "value": "What is 3 + 4?"}, {"from": "gpt", "value": "7"}]},
    ]


@pytest.mark.parametrize("roles", [[], ["assistant"], ["user", "user"], ["user", "assistant"], ["system", "system"],
                                   ["user", "tool", "user"]])
def test_prompts_that_do_not_alternate_are_refused(roles):
    row = {"prompt_id": "p", "round": 1, "messages": [{"role": r, "content": "x"} for r in roles]}
    with pytest.raises(ValueError, match="'p' .* do not alternate"):
        split_prompt(row)


def test_a_prompt_the_formats_cannot_hold_stops_the_export_before_it_writes(run, tmp_path):
    bad = grown(2, 2, "tool", [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}], "z")
    write_jsonl(run / "round_002" / "finetune_2" / "train.jsonl", [bad])
    with pytest.raises(ValueError, match="'tool' .* do not alternate"):
        export(run, tmp_path / "out", ["sharegpt", "hf"])
    assert not (tmp_path / "out").exists()
    export(run, tmp_path / "out", ["hf"])  # the hf messages column holds any roles
    assert load_from_disk(str(tmp_path / "out" / "hf" / "round_002"))[-1]["messages"][1]["role"] == "tool"


def test_cli_exports_every_format_and_datasets_reads_it(run, tmp_path):
    done = subprocess.run([sys.executable, "-m", "rest_loop.export", str(run)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "round 1: 3 rows (2 grown, 1 original), steps 1" in done.stdout
    assert "round 2: 5 rows (3 grown, 2 original), steps 1, 2" in done.stdout
    assert "all: 4 rows (3 grown, 1 original); 4 duplicate (prompt, completion) pairs dropped" in done.stdout
    assert "round_002/finetune_2 has no DONE marker" in done.stdout
    out, cache = run / "export", str(tmp_path / "hf_cache")

    def read(name):
        return load_dataset("json", data_files=str(out / name), split="train", cache_dir=cache)

    alpaca = read("round_001.alpaca.json")
    assert set(alpaca.column_names) == {"instruction", "input", "output", "system", "history"}
    assert alpaca["system"] == ["You add numbers.", None, None]    # omitted where there is none
    assert alpaca["history"] == [None, [["Hi", "Hello! Ask me a sum."]], None]
    assert alpaca["output"] == ["5", "8", "7"]
    sharegpt = read("round_002.sharegpt.json")
    assert len(sharegpt) == 5 and sharegpt[1]["conversations"][-1] == {"from": "gpt", "value": "2 + 3 = 5"}

    union = read("all.sharegpt.json")
    lineage = [json.loads(line) for line in (out / "all.sharegpt.lineage.jsonl").read_text().splitlines()]
    assert len(union) == len(lineage) == len(read("all.alpaca.json")) == 4
    assert order(lineage) == [LINEAGE_ORDER[i] for i in (0, 1, 2, 4)]  # each pair at its first occurrence
    assert [c[-1]["value"] for c in union["conversations"]] == ["5", "8", "7", "2 + 3 = 5"]
    round_2 = [json.loads(line) for line in (out / "round_002.alpaca.lineage.jsonl").read_text().splitlines()]
    assert order(round_2) == LINEAGE_ORDER[3:] and round_2[0]["policy"] == "round_001"

    hf = load_from_disk(str(out / "hf" / "round_002"))
    assert len(hf) == 5 and set(hf.column_names) == {"messages", "round", "step", "prompt_id", "sample_idx",
                                                     "policy", "seed", "reward", "score", "source"}
    assert hf[0]["messages"] == [*SUM, {"role": "assistant", "content": "5"}]
    assert hf["score"] == [1.0, 1.0, None, 1.0, None] and hf["step"] == [1, 1, 1, 2, 2]
    assert len(load_from_disk(str(out / "hf" / "all"))) == 4

    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {f"{n}_{f}" for n in ("round_001", "round_002", "all") for f in ("alpaca", "sharegpt")}
    assert info["round_001_alpaca"] == {"file_name": "round_001.alpaca.json", "formatting": "alpaca", "columns": {
        "prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}}
    assert info["round_002_alpaca"]["columns"] == {"prompt": "instruction", "query": "input", "response": "output",
                                                   "system": "system"}  # no history column: none is named
    assert info["all_sharegpt"]["columns"] == {"messages": "conversations", "system": "system"}
    assert info["all_sharegpt"]["tags"]["user_tag"] == "human"
    for entry in info.values():  # LLaMA-Factory reads every named column from every record
        assert set(entry["columns"].values()) <= set(read(entry["file_name"]).column_names)
    assert not list(out.rglob("*.tmp"))


def test_export_some_rounds_in_one_format_keeps_earlier_entries(run, tmp_path):
    out = tmp_path / "out"
    write_json(out / "dataset_info.json", {"mine": {"file_name": "mine.json"}, "hub": {"hf_hub_url": "org/data"}})
    export(run, out, ["sharegpt"], rounds=[1])
    summary = export(run, out, ["alpaca", "hf"], rounds=[2], which="train")
    assert summary["rounds"] == {2: {"rows": 5, "grown": 3, "original": 2, "steps": [1, 2]}}
    assert summary["all"]["duplicates"] == 2  # within round 2: its step 2 retrained on step 1's pairs
    assert sorted(p.name for p in out.iterdir()) == [
        "all.alpaca.json", "all.alpaca.lineage.jsonl", "all.sharegpt.json", "all.sharegpt.lineage.jsonl",
        "dataset_info.json", "hf", "round_001.sharegpt.json", "round_001.sharegpt.lineage.jsonl",
        "round_002.alpaca.json", "round_002.alpaca.lineage.jsonl"]
    info = json.loads((out / "dataset_info.json").read_text())  # a user's own entries stay
    assert set(info) == {"mine", "hub", "round_001_sharegpt", "all_sharegpt", "round_002_alpaca", "all_alpaca"}
    assert len(json.loads((out / "all.sharegpt.json").read_text())) == len(  # each file beside its own lineage
        (out / "all.sharegpt.lineage.jsonl").read_text().splitlines()) == 3
    assert len((out / "all.alpaca.lineage.jsonl").read_text().splitlines()) == 3
    export(run, out, ["hf"], rounds=[1])  # a second save replaces the folder whole
    assert len(load_from_disk(str(out / "hf" / "all"))) == 3 and not list(out.rglob("*.tmp"))


def test_bad_run_dir_names_the_path(tmp_path, run):
    empty = tmp_path / "runs" / "demo"  # the run's parent: a common slip
    done = subprocess.run([sys.executable, "-m", "rest_loop.export", str(empty), "--format", "alpaca"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"no rounds with train data in {empty}" in done.stderr and str(run) in done.stderr  # and the run below
    with pytest.raises(FileNotFoundError, match=r"rounds \[3\] have no kept data .* rounds with data: \[1\]"):
        collect(run, rounds=[1, 3], which="kept")
    with pytest.raises(ValueError, match="which="):
        collect(run, which="samples")
    with pytest.raises(ValueError, match="formats="):
        export(run, tmp_path / "out", ["csv"])

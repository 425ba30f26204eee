"""Bad input stops the CLI with a message that names the culprit and says what to do, before anything runs.

Each case runs the real `python -m rest_loop` (or `rest_loop.calibrate`) and checks the message as a user
reads it, its exit code, and that nothing started: no engine, no stage folder (round_000/...). Data files
that hold no rows (empty, `[]`, one JSON object, a folder without a dataset), a GSM8K row without its
answer, a missing API key variable, held-out rows that repeat train rows, a reward that cannot score
the task's own gold answers: each is exit 2 with the file or key named. Covered elsewhere, so
not repeated here: values out of range or of the wrong type, one by one (test_configs.py
test_bad_values_name_the_key, test_cli_reports_bad_value_before_running); bad rows of every format
(test_formats.py); a filter that keeps nothing (test_loop_e2e.py
test_empty_filter_stops_cleanly_and_resumes_with_a_lower_threshold, exit 3); a judge that stops
(test_judge_openai.py, test_loop_e2e.py test_judge_server_dies_midway..., exit 4).

A full disk is real here: the CLI runs under a file-size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored), so the kernel fails the write that crosses it with EFBIG, as a full disk fails one with
ENOSPC; the CLI treats both alike (exit 5).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rest_loop.resources import CONF
from rest_loop.store import read_jsonl

DATA = Path(__file__).parent / "data"
TICKETS = str(DATA / "custom_tickets.jsonl")


def rest_loop(run_dir: Path, *overrides: str, max_file_bytes: int | None = None) -> tuple[int, str]:
    """Run the CLI into `run_dir`; (exit code, everything it printed)."""
    def limit_file_size():  # in the child: a write past the limit fails with EFBIG instead of killing it
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    env = {**os.environ, "HF_DATASETS_CACHE": str(run_dir.parent / "hf-datasets")}  # datasets caches every file
    out = subprocess.run([sys.executable, "-m", "rest_loop", f"hydra.run.dir={run_dir}", *overrides],
                         capture_output=True, text=True, timeout=600, env=env,
                         preexec_fn=limit_file_size if max_file_bytes else None)
    return out.returncode, out.stdout + out.stderr


def assert_stopped_before_running(run_dir: Path, log: str, code: int, message: str) -> None:
    """The message is printed and recorded in FAILED, and no engine started nor any stage began."""
    assert message in log, log[-3000:]
    assert "Traceback" not in log and "vLLM engine" not in log
    assert json.loads((run_dir / "FAILED").read_text()) == {"exit_code": code, "error": message}
    assert not list(run_dir.glob("round_*")) and not list(run_dir.rglob("*.tmp"))


def from_file(source: Path | str, *overrides: str) -> list[str]:
    return ["task=from_file", f"task.source={source}", "task.fields.input=body", "task.n_heldout=1", *overrides]


def test_a_broken_json_line_names_the_file_and_line(tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text('{"body": "The app crashes.", "queue": "bugs"}\n{"body": "Refund me", "queue": \n')
    code, log = rest_loop(tmp_path / "run", *from_file(data))
    assert code == 2 and "row 1" not in log  # datasets' own log line ("JSON parse error ... in row 1") is muted
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"bad data: task.source='{data}': could not read it as json: line 2, column 32: Expecting value: "
        f"{{\"body\": \"Refund me\", \"queue\":  (each line of JSON Lines is one object). Fix that line, or point "
        f"task.source at another file"))


def test_a_row_missing_a_field_names_the_row_and_the_setting(tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text('{"body": "The app crashes.", "queue": "bugs"}\n{"text": "Refund me", "queue": "billing"}\n')
    code, log = rest_loop(tmp_path / "run", *from_file(data))
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"bad data: {data}: row 2: missing 'body' (it has ['queue', 'text']); set task.fields.input to the column "
        f"that holds it. Fix the row, or drop the rows that do not fit with task.on_bad_row=skip"))


def test_a_template_variable_the_rows_lack_names_template_row_and_fixes(tmp_path):
    template = tmp_path / "prompts" / "tasks" / "ticket.j2"
    template.parent.mkdir(parents=True)
    template.write_text("{{ input }} (via {{ channel }})")  # only row 5 of the tickets has a channel
    code, log = rest_loop(tmp_path / "run", *from_file(TICKETS, "task.template=tasks/ticket.j2",
                                                       f"task.prompts_dir={tmp_path / 'prompts'}"))
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"bad data: {TICKETS}: row 1: {template}: 'channel' is undefined; variables given: ['body', 'customer', "
        f"'input', 'priority', 'queue', 'ticket']. Give it in the row or in task.variables (the same for every "
        f"row), or make it optional in the template with | default(''). Fix the row, or drop the rows that do "
        f"not fit with task.on_bad_row=skip"))


def test_a_template_that_is_not_there_lists_those_that_are(tmp_path):
    code, log = rest_loop(tmp_path / "run", *from_file(TICKETS, "task.template=tasks/tickets.j2"))
    assert code == 2
    prompts = Path(__file__).parent.parent / "prompts"
    there = ", ".join(sorted(p.name for p in (prompts / "tasks").glob("*.j2")))  # arithmetic.j2, classify.j2, ...
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"template error: template 'tasks/tickets.j2' not found under {prompts} (paths.prompts); "
        f"{prompts / 'tasks'} has {there}"))


@pytest.mark.parametrize("name,text,why", [
    ("empty.jsonl", "", "the file is empty: it has no rows"),
    ("blank.jsonl", "\n\n", "the file is empty: it has no rows"),
    ("empty.json", "[ ]\n", "the file is an empty JSON array ([]): it has no rows"),
])
def test_a_data_file_without_rows_says_so(tmp_path, name, text, why):
    """datasets said `StopIteration()` (empty JSON Lines) or `Instruction "train" corresponds to no data!`."""
    data = tmp_path / name
    data.write_text(text)
    code, log = rest_loop(tmp_path / "run", *from_file(data))
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, f"bad data: task.source='{data}': {why}")


def test_a_json_file_that_is_one_object_says_so_without_listing_every_key(tmp_path):
    """LLaMA-Factory's dataset_info.json names its datasets (104 of them): it is no data file."""
    info = {f"set_{i:03d}": {"file_name": f"set_{i:03d}.json"} for i in range(104)}
    data = tmp_path / "dataset_info.json"
    data.write_text(json.dumps(info, indent=2))
    code, log = rest_loop(tmp_path / "run", *from_file(data))
    assert code == 2 and "set_050" not in log
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"bad data: task.source='{data}': the file is one JSON object (keys 'set_000', 'set_001', 'set_002', "
        f"'set_003', 'set_004', ... (104 keys in all)), not rows: give a JSON array of row objects ([{{...}}, "
        f"{{...}}]) or JSON Lines (one object a line). It looks like LLaMA-Factory's dataset_info.json, which lists "
        f"datasets: point at the file one of them names, e.g. 'set_000.json'."))


def test_a_folder_that_holds_no_dataset_is_not_called_missing(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "notes.txt").write_text("not data")
    code, log = rest_loop(tmp_path / "run", *from_file(folder))
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"bad data: task.source='{folder}' is a folder but no dataset: it has neither what save_to_disk writes "
        f"(dataset_dict.json or state.json) nor data files (.csv, .json, .jsonl, .parquet); it holds notes.txt. "
        f"Point task.source at a data file or a save_to_disk folder"))


def test_a_gsm8k_row_without_its_final_answer_names_the_row(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"question": "2 + 2?", "answer": "2 + 2 = 4\\n#### 4"}\n{"question": "How many?", "answer": "It is 7."}\n')
    code, log = rest_loop(tmp_path / "run", "task=gsm8k", f"task.source={data}", "task.heldout_split=null",
                          "task.n_heldout=1")
    assert code == 2 and "Error in call to target" not in log
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        f"bad data: {data}: row 2: the answer has no final '#### <number>' line: ...'It is 7.'. Fix the row, or "
        f"drop it from the file"))


def test_a_missing_api_key_variable_is_a_config_error(tmp_path):
    code, log = rest_loop(tmp_path / "run", "reward=judge", "judge=openai", "judge.model=some-judge",
                          "judge.api_key_env=REST_LOOP_TEST_UNSET_KEY")
    assert code == 2 and "Error in call to target" not in log
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        "config error: judge.api_key_env='REST_LOOP_TEST_UNSET_KEY': that environment variable is not set (set it, "
        "or set judge.api_key_env=null for a server without a key)"))


def test_train_and_held_out_rows_with_the_same_text_are_refused(tmp_path):
    """The ids differ by split name, so an id check passes; the text is the same."""
    data = DATA / "gsm8k_tiny.jsonl"
    code, log = rest_loop(tmp_path / "run", "task=gsm8k", f"task.source={data}", f"task.heldout_source={data}",
                          "task.n_heldout=4")
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        "bad data: task gsm8k: 4 of 4 held-out prompts have the same text as a train prompt (e.g. gsm8k-test-1 and "
        "gsm8k-train-1), so held-out scores would partly measure recall. Hold out other rows (another file or "
        "split), or set task.allow_overlap=true to run anyway"))


def test_a_reward_that_cannot_score_the_gold_answers_is_refused_with_those_that_can(tmp_path):
    """identity-style data (answers without numbers, with {{name}} placeholders) and the default numeric reward."""
    data = DATA / "identity_placeholders.json"
    code, log = rest_loop(tmp_path / "run", "task=from_file", f"task.source={data}", "task.n_heldout=2")
    assert code == 2
    assert "12 rows" not in log and "11 rows still hold template placeholders {{author}}, {{name}}" in log
    message = json.loads((tmp_path / "run" / "FAILED").read_text())["error"]
    fit = message.split("Rewards that fit this task: ")[1].removesuffix(" (reward=<name>)").split(", ")
    assert {"judge", "judge_ranking", "judge_rationale"} <= set(fit)  # judges: nothing to check without an engine
    assert not {"verifier", "verifier_judge", "correct_then_judge", "label_match"} & set(fit)
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        "config error: reward=verifier counts only 1 of the 10 gold answers of task 'from_file' as correct, so it "
        "cannot tell a right completion from a wrong one here; its term correct (numeric_match) fails 9 of 10, e.g. "
        "from_file-0: 'no number in the completion' for its reference 'Hello! I am {{name}}, an assistant made by "
        "{{author}}. Wh...'. The run would grow samples, score them all alike and stop at the filter. Rewards that "
        f"fit this task: {', '.join(fit)} (reward=<name>)"))


def test_calibrate_with_a_samples_file_that_is_not_there_names_it(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rest_loop.calibrate", f"hydra.run.dir={tmp_path / 'run'}",
                          f"calibrate.samples={tmp_path / 'samples.jsonl'}"], capture_output=True, text=True,
                         timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in log and "vLLM engine" not in log
    assert (f"config error: calibrate.samples='{tmp_path / 'samples.jsonl'}': no such file; give a run's "
            f"round_NNN/grow/samples.jsonl, or leave it null to grow samples from the base model") in log


def test_a_string_where_a_number_goes_is_one_clear_line(tmp_path):
    code, log = rest_loop(tmp_path / "run", "filter.threshold=high")
    assert code == 2 and "reference_type" not in log  # OmegaConf's own wording stays out
    assert_stopped_before_running(tmp_path / "run", log, 2, "config error: filter.threshold='high': must be a number")
    assert not (tmp_path / "run" / "config.yaml").exists()  # checked before anything is written


def test_a_model_folder_that_does_not_exist_stops_before_data_or_engine(tmp_path):
    code, log = rest_loop(tmp_path / "run", "model=hf", "model.source=/no/such/dir")
    assert code == 2
    assert_stopped_before_running(tmp_path / "run", log, 2, (
        "config error: model.source='/no/such/dir': no such folder; give a local Hugging Face model folder (with "
        "config.json), a hub id such as Qwen/Qwen2.5-0.5B-Instruct, or embedded:smollm2-135m-instruct"))
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("group", ["model", "reward"])
def test_an_unknown_group_option_lists_the_choices(tmp_path, group):
    choices = sorted(p.stem for p in (CONF / group).glob("*.yaml"))  # model: hf, smollm2_135m; reward: ...
    code, log = rest_loop(tmp_path / "run", f"{group}=nope")
    assert code == 1  # Hydra reports it, before any run folder exists
    assert f"Could not find '{group}/nope'" in log and "Traceback" not in log
    assert f"Available options in '{group}':\n" + "".join(f"\t{c}\n" for c in choices) in log
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_writing_the_config_names_it_and_says_how_to_go_on(tmp_path):
    """The first file the run writes is config.yaml (hydra.output_subdir=null: Hydra keeps its own copy
    out), a few KB: a 1 KB limit stops it there, while FAILED still fits."""
    run_dir = tmp_path / "run"
    code, log = rest_loop(run_dir, "hydra.output_subdir=null", max_file_bytes=1024)
    assert code == 5
    assert_stopped_before_running(run_dir, log, 5, (
        f"a file reached the file-size limit (File too large) while writing {run_dir / 'config.yaml'}. Nothing "
        f"written so far is lost: every file is written whole or not at all, and finished stages are kept. To go "
        f"on, raise the limit (ulimit -f), then run the same command again (the run had not started). A new run "
        f"can write elsewhere: paths.runs=<dir> for runs, REST_LOOP_CACHE=<dir> for the caches (models, judge "
        f"replies, pools)"))
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "FAILED", "__main__.log"]  # .lock: whose run it is


@pytest.mark.slow
def test_a_disk_that_fills_midway_loses_nothing_and_the_run_resumes(tiny_model, tmp_path):
    """Round 0's evaluation fits under the limit; round 1's Grow pool (96 samples, ~30 KB) does not."""
    run_dir = tmp_path / "run"
    tiny = ["model=hf", f"model.source={tiny_model}", "model.max_model_len=512", "model.kv_cache_gb=1",
            "task.n_train=12", "task.n_heldout=4", "sampler.n=8", "sampler.max_tokens=16", "loop.rounds=1",
            "eval.max_tokens=8", "filter.threshold=0.0", "trainer.epochs=1", "trainer.batch_size=4",
            "filter.max_per_prompt=1", "paths.pools=null"]  # 12 examples to fine-tune on: a few steps
    code, log = rest_loop(run_dir, *tiny, max_file_bytes=12_000)
    assert code == 5, log[-3000:]
    samples = run_dir / "round_001" / "grow" / "samples.jsonl"
    message = f"a file reached the file-size limit (File too large) while writing {samples}. Nothing written so far"
    assert message in log and f"then run rest-loop resume={run_dir}. A new run" in log and "Traceback" not in log
    assert json.loads((run_dir / "FAILED").read_text())["exit_code"] == 5
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert not samples.exists() and not list(run_dir.rglob("*.tmp"))  # no half file for a resume to trust
    base_eval = run_dir / "round_000" / "eval" / "completions.jsonl"
    before = base_eval.read_bytes()

    code, log = rest_loop(run_dir, f"resume={run_dir}")  # the limit lifted, as after freeing space
    assert code == 0, log[-3000:]
    assert base_eval.read_bytes() == before  # round 0 was kept, not redone
    assert len(read_jsonl(samples)) == 12 * 8 and (run_dir / "round_001" / "eval" / "DONE").exists()
    assert not (run_dir / "FAILED").exists()

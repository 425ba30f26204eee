"""Storage, templates, tasks and model resolution."""

from __future__ import annotations

import errno
import json
import os

import pytest

from rest_loop.config import ConfigError
from rest_loop.models import resolve_model
from rest_loop.records import KeptExample, Sample
from rest_loop.store import Stage, atomic_write_text, read_jsonl, write_jsonl
from rest_loop.tasks.arithmetic import ArithmeticTask
from rest_loop.templates import Template, TemplateError


def test_jsonl_round_trip_keeps_types(tmp_path):
    rows = [Sample(1, "p", i, f"t{i}", 3, "base", 0, {"n": 2}) for i in range(3)]
    write_jsonl(tmp_path / "s.jsonl", rows)
    assert read_jsonl(tmp_path / "s.jsonl", Sample) == rows


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left behind


def test_a_full_disk_leaves_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    def onto_dev_full(fd, *args, **kw):  # the temporary file's bytes go to /dev/full: a real ENOSPC
        os.close(fd)
        return open("/dev/full", *args, **kw)

    monkeypatch.setattr(os, "fdopen", onto_dev_full)
    with pytest.raises(OSError) as raised:
        atomic_write_text(path, "new" * 10_000)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(path))  # what the CLI reports
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_stage_done_marker(tmp_path):
    stage = Stage(tmp_path / "round_001" / "grow")
    assert not stage.done
    write_jsonl(stage / "samples.jsonl", [{"text": "a"}, {"text": "b"}])
    stage.finish(samples=2)
    assert stage.done and stage.info == {"samples": 2}


def test_a_finished_stage_whose_records_were_cut_short_is_done_again(tmp_path, caplog):
    stage = Stage(tmp_path / "round_001" / "grow")
    write_jsonl(stage / "samples.jsonl", [{"text": "a"}, {"text": "b"}])
    stage.finish(samples=2)
    records = stage / "samples.jsonl"
    records.write_bytes(records.read_bytes()[:-5])  # e.g. a copy cut short, or a disk that lost a block
    assert not stage.done and not (stage / "DONE").exists()
    assert f"{records} does not match what its DONE recorded (cut short or changed after the stage finished)" \
        in caplog.text


def test_template_is_sandboxed_and_strict(tmp_path):
    (tmp_path / "t.j2").write_text("{{ input }} {{ missing }}")
    with pytest.raises(TemplateError, match="'missing' is undefined"):
        Template(tmp_path, "t.j2").render(input="x")
    (tmp_path / "evil.j2").write_text("{{ input.__class__.__mro__ }}")
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        Template(tmp_path, "evil.j2").render(input="x")
    (tmp_path / "bad.j2").write_text("line one\n{% if %}")
    with pytest.raises(TemplateError, match=r"bad.j2:2"):
        Template(tmp_path, "bad.j2")


def test_arithmetic_task_is_seeded_and_disjoint(prompts_dir):
    a = ArithmeticTask(n_train=50, n_heldout=20, seed=3, prompts_dir=prompts_dir)
    b = ArithmeticTask(n_train=50, n_heldout=20, seed=3, prompts_dir=prompts_dir)
    c = ArithmeticTask(n_train=50, n_heldout=20, seed=4, prompts_dir=prompts_dir)
    assert [p.id for p in a.train] == [p.id for p in b.train]
    assert [p.id for p in a.train] != [p.id for p in c.train]
    assert not {p.id for p in a.train} & {p.id for p in a.heldout}
    for p in a.train + a.heldout:
        x, y = map(int, p.id.split("+"))
        assert int(p.reference) == x + y and 10 <= x <= 99 and 10 <= y <= 99
        assert p.messages[-1]["role"] == "user" and "Reply with just the number." in p.messages[-1]["content"]


def test_arithmetic_task_rejects_too_many_problems(prompts_dir):
    with pytest.raises(ValueError, match="exceeds the 100 distinct operand pairs"):
        ArithmeticTask(n_train=90, n_heldout=20, seed=0, prompts_dir=prompts_dir, low=10, high=19)


def test_resolve_model_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"model.source=.*has no config.json"):
        resolve_model(str(tmp_path), tmp_path)
    with pytest.raises(ConfigError, match="neither"):
        resolve_model("not-a-model", tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(ConfigError, match=r"no safetensors weights \(pickles: pytorch_model.bin\). A pickle can run"
                                          r" code when loaded: convert it to safetensors, or set model.allow_pickle"):
        resolve_model(str(tmp_path), tmp_path)
    assert resolve_model(str(tmp_path), tmp_path, allow_pickle=True) == str(tmp_path.resolve())
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"


def test_embedded_model_converts_to_hf_folder(smollm2):
    from pathlib import Path

    folder = Path(smollm2)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    # resolving again reuses the cached folder
    assert resolve_model("embedded:smollm2-135m-instruct", folder.parent) == smollm2


def test_kept_example_names_its_origin():
    fields = set(KeptExample.__dataclass_fields__)
    assert {"round", "prompt_id", "sample_idx", "policy", "seed", "reward"} <= fields


def test_arithmetic_heldout_does_not_depend_on_train_size(prompts_dir):
    small = ArithmeticTask(n_train=10, n_heldout=20, seed=0, prompts_dir=prompts_dir)
    large = ArithmeticTask(n_train=200, n_heldout=20, seed=0, prompts_dir=prompts_dir)
    assert small.heldout == large.heldout
    assert [p.id for p in large.train[:10]] == [p.id for p in small.train]


def test_sweep_removes_what_a_killed_writer_left(tmp_path):
    from rest_loop.store import sweep_temporaries

    keep = tmp_path / "round_001" / "grow" / "samples.jsonl"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}\n")
    (tmp_path / ".manifest.json.ab12.tmp").write_text('{"half')
    adapter_tmp = tmp_path / "round_001" / "finetune" / ".adapter.tmp"
    adapter_tmp.mkdir(parents=True)
    (adapter_tmp / "adapter_model.safetensors").write_bytes(b"partial")
    assert sweep_temporaries(tmp_path) == 2
    assert not list(tmp_path.rglob("*.tmp")) and keep.read_text() == "{}\n"

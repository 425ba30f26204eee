"""Scale-out run for real on one machine: a fine-tune in two CPU processes (DDP over gloo, launch/ddp_cpu.yaml)
against one process with the same global batch, its checkpoint resume, and which process writes; the
accelerate configs that cannot train here stop before anything runs.

Measured on the tiny model (16 examples, 8 steps): the two-process losses equal the one-process ones to
1e-6 and the adapters to 7e-6 (weights of size ~0.1); the tolerances below are 1e-4 and 1e-4."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rest_loop.config import ConfigError, TrainerConfig
from rest_loop.finetune import check_method, finetune, launcher
from rest_loop.records import KeptExample
from rest_loop.replicas import devices, shares
from rest_loop.resources import SHIPPED
from rest_loop.store import read_json, read_jsonl, write_jsonl
from tests.test_loop_e2e import cli, run_ok

DDP_CPU = str(SHIPPED / "launch" / "ddp_cpu.yaml")

# Records, in each training process but the main one, every file it creates, writes, renames or removes
# under REST_LOOP_AUDIT_UNDER: Python's audit events, so what Python code writes (writes made inside C++ or
# Rust, such as torch.save's zip writer and safetensors, raise no event).
AUDIT = textwrap.dedent('''
    import os, sys
    if os.environ.get("RANK", "0") != "0" and os.environ.get("REST_LOOP_AUDIT_UNDER"):
        under, log = os.environ["REST_LOOP_AUDIT_UNDER"], os.environ["REST_LOOP_AUDIT_LOG"] + os.environ["RANK"]
        WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

        def hook(event, args):
            if event == "open":
                path, mode, flags = args
                writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE)
                paths = [path] if writes else []
            elif event == "os.mkdir":
                paths = [] if os.path.isdir(args[0]) else [args[0]]  # exist_ok on a folder that is there: nothing
            elif event in ("os.rename", "os.replace", "os.remove", "shutil.rmtree", "os.rmdir"):
                paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            else:
                return
            for p in paths:
                p = os.fsdecode(p) if not isinstance(p, int) else ""
                if p.startswith(under) and not p.startswith(log):
                    with open(log, "a") as f:  # under /tmp, not `under`
                        f.write(f"{event} {p}\\n")

        with open(log, "a") as f:
            f.write("audit on\\n")
        sys.addaudithook(hook)
''')


def examples(n: int = 16) -> list[KeptExample]:
    """Prompts and completions of different lengths, so batches pad differently in one and two processes."""
    return [KeptExample(round=1, prompt_id=f"{a}", sample_idx=0,
                        messages=[{"role": "user", "content": f"What is {a} + {a}?" + " please" * (a % 5)}],
                        completion=str(2 * a) + " yes" * (a % 3), score=1.0, policy="base", seed=0, reward="exact")
            for a in range(10, 10 + n)]


def settings(**changes) -> TrainerConfig:
    return TrainerConfig(**{"epochs": 2, "learning_rate": 1e-2, "logging_steps": 1, "lora_r": 4, "lora_alpha": 8,
                            **changes})


def losses(out: Path) -> list[float]:
    return [row["loss"] for row in read_jsonl(out / "metrics.jsonl") if "loss" in row]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """A folder on PYTHONPATH whose sitecustomize audits the writes of non-main training processes."""
    folder = tmp_path_factory.mktemp("audit")
    (folder / "sitecustomize.py").write_text(AUDIT)
    return folder


@pytest.fixture(scope="module")
def two_processes(tiny_model, audited, tmp_path_factory) -> tuple[Path, dict, Path]:
    """The 2-process fine-tune: 16 examples, 2 per process per step, 8 steps, a checkpoint every 2."""
    out, log = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("audit-log") / "rank"
    env = {"PYTHONPATH": os.pathsep.join([str(audited), os.environ.get("PYTHONPATH", "")]),
           "REST_LOOP_AUDIT_UNDER": str(out), "REST_LOOP_AUDIT_LOG": str(log)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        summary = finetune(tiny_model, examples(), settings(batch_size=2, save_steps=2, accelerate_config=DDP_CPU), out)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return out, summary, log


@pytest.mark.slow
def test_two_cpu_processes_train_as_one_with_the_same_global_batch(tiny_model, two_processes, tmp_path):
    two, summary, _ = two_processes
    assert summary["processes"] == 2 and summary["distributed"] == "MULTI_CPU" and summary["steps"] == 8
    one = finetune(tiny_model, examples(), settings(batch_size=4), tmp_path)
    assert one["processes"] == 1 and one["steps"] == 8
    assert losses(tmp_path) == pytest.approx(losses(two), abs=1e-4) and len(losses(two)) == 8
    assert summary["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    a, b = adapter(tmp_path), adapter(two)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert max(a[k].abs().max().item() for k in a) > 1e-2  # trained: the comparison is not of zeros


@pytest.mark.slow
def test_only_the_main_process_writes_the_stages_files(two_processes):
    out, _, log = two_processes
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "metrics.jsonl", "tensorboard"]
    on, *written = Path(f"{log}1").read_text().splitlines()
    assert on == "audit on"  # the hook ran in the second process
    # the second process writes its own random state into each checkpoint (making its folder when first
    # there), and nothing else
    checkpoint = re.compile(r"^(open .*/trainer/checkpoint-\d+/rng_state_1\.pth|os\.mkdir .*/trainer/checkpoint-\d+)$")
    others = [line for line in written if not checkpoint.match(line)]
    assert others == []
    assert not Path(f"{log}0").exists()  # the hook is off in the main process


@pytest.mark.slow
def test_a_two_process_fine_tune_killed_between_checkpoints_resumes(tiny_model, two_processes, tmp_path):
    whole, whole_summary, _ = two_processes
    cfg = settings(batch_size=2, save_steps=2, accelerate_config=DDP_CPU)
    job = tmp_path / "job.jsonl"
    write_jsonl(job, examples())
    script = textwrap.dedent(f"""
        from rest_loop.config import TrainerConfig
        from rest_loop.finetune import finetune
        from rest_loop.records import KeptExample
        from rest_loop.store import read_jsonl
        finetune({tiny_model!r}, read_jsonl({str(job)!r}, KeptExample), TrainerConfig(**{dataclasses.asdict(cfg)!r}),
                 {str(tmp_path / 'out')!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "out" / "trainer" / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both training processes
    proc.wait()
    assert checkpoint.exists() and not (tmp_path / "out" / "adapter").exists()

    resumed = finetune(tiny_model, examples(), cfg, tmp_path / "out")
    assert resumed["resumed_from"] and "checkpoint-" in resumed["resumed_from"]
    assert resumed["processes"] == 2 and resumed["steps"] == whole_summary["steps"]
    assert losses(tmp_path / "out") == pytest.approx(losses(whole), abs=1e-6)
    a, b = adapter(tmp_path / "out"), adapter(whole)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert not (tmp_path / "out" / "trainer").exists()


def test_cpu_processes_start_with_torchrun_and_the_rest_with_accelerate(tmp_path):
    env = {}
    cmd, processes, _ = launcher(Path(DDP_CPU), tmp_path / "job.json", env)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"] and processes == 2
    assert env["ACCELERATE_USE_CPU"] == "true" and int(env["OMP_NUM_THREADS"]) >= 1
    cmd, processes, _ = launcher(SHIPPED / "launch" / "ddp.yaml", tmp_path / "job.json", {})
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and processes == 2
    cmd, processes, _ = launcher(SHIPPED / "launch" / "cpu.yaml", tmp_path / "job.json", {})
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and processes == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, FSDP runs")
def test_fsdp_without_a_gpu_stops_before_training():
    with pytest.raises(ConfigError, match="FSDP needs GPUs; on CPU processes accelerate trains with DDP"):
        check_method(settings(accelerate_config=str(SHIPPED / "launch" / "fsdp.yaml")))


def test_a_file_that_is_not_an_accelerate_config_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("distributed_type: SIDEWAYS\n")
    with pytest.raises(ConfigError, match="bad.yaml: not an accelerate config"):
        check_method(settings(accelerate_config=str(tmp_path / "bad.yaml")))


# --- engine replicas (model.data_parallel_size) ---------------------------------------------------------

def test_prompts_are_shared_out_in_order():
    assert shares(5, 2) == [range(0, 3), range(3, 5)]
    assert shares(1, 3) == [range(0, 1), range(1, 1), range(1, 1)]
    assert [len(r) for r in shares(100, 8)] == [13, 13, 13, 13, 12, 12, 12, 12]
    assert devices(2, 1, gpu=False)[0]["VLLM_CPU_OMP_THREADS_BIND"] != devices(2, 1, gpu=False)[1]["VLLM_CPU_OMP_THREADS_BIND"]


@pytest.mark.slow
def test_two_replicas_answer_like_one_engine_in_prompt_order(tiny_model, monkeypatch):
    """The CPU's own vLLM refuses LLM(data_parallel_size=2) (single-process usage); replicas in two processes,
    each pinned to one core, give the one engine's greedy answers prompt by prompt, and repeat their draws."""
    from rest_loop.config import ModelConfig
    from rest_loop.engine import Engine
    from rest_loop.replicas import Replicas

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in_process_core(), for this test only
    model = ModelConfig(source=tiny_model, max_model_len=256, kv_cache_gb=1)
    prompts = [f"{a} plus {a * 7 % 13} is" for a in range(9)]
    greedy, sampled = {"max_tokens": 6, "temperature": 0}, {"max_tokens": 6, "temperature": 1.0, "n": 3}
    one = Engine(tiny_model, model, seed=0)
    try:
        expected = [c[0].token_ids for c in one.generate(prompts, greedy)]
    finally:
        one.close()
    two = Replicas(tiny_model, dataclasses.replace(model, data_parallel_size=2), seed=0)
    try:
        assert [c[0].token_ids for c in two.generate(prompts, greedy)] == expected
        assert len(set(map(tuple, expected))) > 1  # different prompts, different answers: the order is checked
        first, again = two.generate(prompts, sampled), two.generate(prompts, sampled)
        assert [[c.token_ids for c in cs] for cs in first] == [[c.token_ids for c in cs] for cs in again]
        assert [len(cs) for cs in first] == [3] * 9
        assert two.identity["data_parallel_size"] == 2 and two.max_model_len == 256
    finally:
        two.close()
    assert not any(p.is_alive() for p in two.procs)


@pytest.mark.slow
def test_a_round_with_two_engine_replicas(tiny_model, tmp_path):
    """`model.data_parallel_size=2` through the CLI: a whole round, the base's held-out answers the same as
    with one engine, and the pool recorded as drawn by two replicas (another pool than one engine's)."""
    run_ok(cli(tmp_path / "one", tiny_model, "loop.rounds=0"))
    run_ok(cli(tmp_path / "two", tiny_model, "model.data_parallel_size=2"))
    for stage in ["round_000/eval", "round_001/grow", "round_001/improve", "round_001/finetune", "round_001/eval"]:
        assert (tmp_path / "two" / stage / "DONE").exists(), stage
    answers = [[row["text"] for row in read_jsonl(tmp_path / run / "round_000/eval/completions.jsonl")]
               for run in ("one", "two")]
    assert answers[0] == answers[1] and len(answers[0]) == 4
    pools = [read_json(p) for p in (tmp_path / "pools").rglob("*.json")]
    assert any(p["inputs"]["engine"].get("data_parallel_size") == 2 and p["samples"] == 12 for p in pools)


def test_a_fine_tune_across_machines_is_refused(tmp_path):
    config = (SHIPPED / "launch" / "ddp.yaml").read_text().replace("num_machines: 1", "num_machines: 2")
    (tmp_path / "two_nodes.yaml").write_text(config)
    with pytest.raises(ConfigError, match="num_machines=2; the fine-tune starts its processes on this machine only"):
        check_method(settings(accelerate_config=str(tmp_path / "two_nodes.yaml")))

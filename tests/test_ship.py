"""The trained policy as a model: rest-loop-export --model writes the adapter, the merged model and a model
card, and the merged folder, loaded by transformers alone, answers the held-out prompts as the run's own
evaluation (vLLM with the adapter) recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rest_loop.store import read_json, read_jsonl
from tests.test_loop_e2e import cli, run_ok

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ship") / "run"
    run_ok(cli(run_dir, tiny_model, "task.n_heldout=8", "eval.max_tokens=12", "trainer.learning_rate=5e-3"))
    return run_dir


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model"
    done = export(str(tiny_run), "--model", "round_001", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rest_loop.export", *args], capture_output=True, text=True,
                          timeout=600)


def test_merged_model_answers_the_held_out_prompts_as_the_run_evaluated(tiny_run, exported):
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rest_loop.config import build

    out = exported
    assert {"adapter", "merged", "README.md"} <= {p.name for p in out.iterdir()}
    assert (out / "merged/model.safetensors").is_file() and (out / "merged/generation_config.json").is_file()
    card = (out / "README.md").read_text()
    assert "| 1 | round_001 |" in card and "method: lora" in card and "```yaml" in card

    model = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)  # no PEFT, no rest-loop
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    assert tokenizer.chat_template
    base = AutoModelForCausalLM.from_pretrained(read_json(tiny_run / "manifest.json")["base_model"], dtype=torch.float32)
    changed = [n for n, w in model.state_dict().items() if not torch.equal(w, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # the adapter is in the weights, only where LoRA was
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    heldout = {p.id: p for p in build(cfg.task).heldout}
    recorded = read_jsonl(tiny_run / "round_001/eval/completions.jsonl")
    assert len(recorded) == len(heldout) == 8
    same = 0
    for row in recorded:
        ids = tokenizer.apply_chat_template(heldout[row["prompt_id"]].messages, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, do_sample=False, max_new_tokens=cfg.eval.max_tokens)
        text = tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        same += text == row["text"]
    assert same == len(recorded), f"{same} of {len(recorded)} greedy completions match the run's eval"


def test_export_model_names_what_is_wrong(tiny_run, tmp_path):
    for args, says in ((["--model", "round_000"], "round 0 is the base model"),
                       (["--model", "round_009"], "has no finished fine-tune"),
                       (["--model", "last"], "use best, round_NNN"),
                       (["--model", "round_001", "--dtype", "int3"], "--dtype 'int3'")):
        done = export(str(tiny_run), *args, "--out", str(tmp_path / "x"))
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr[-500:])
    assert read_json(tiny_run / "manifest.json")["rounds_done"] == 1


def test_the_exported_adapter_serves_through_vllms_openai_server(tiny_run, exported, tiny_model, tmp_path):
    """The README's way to serve a result on CPU: the base with --enable-lora --lora-modules, chatted with
    through the openai client; its greedy answers are the run's held-out ones."""
    import json
    import os
    import signal
    import socket
    import time
    import urllib.request

    import openai
    from omegaconf import OmegaConf

    from rest_loop.config import build

    out = exported
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": cores, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model, "--host", "127.0.0.1",
         "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
         "--kv-cache-memory-bytes", str(2**30), "--seed", "0", "--generation-config", "vllm",
         "--enable-lora", "--max-lora-rank", "16", "--lora-modules", f"policy={out / 'adapter'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 400
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "the server did not come up in 400 s"
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    served = {m["id"] for m in json.load(r)["data"]}
                    break
            except OSError:
                time.sleep(2)
        assert "policy" in served
        cfg = OmegaConf.load(tiny_run / "config.yaml")
        heldout = {p.id: p for p in build(cfg.task).heldout}
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
        recorded = read_jsonl(tiny_run / "round_001/eval/completions.jsonl")
        answers = [client.chat.completions.create(model="policy", messages=heldout[row["prompt_id"]].messages,
                                                  temperature=0.0, max_tokens=cfg.eval.max_tokens)
                   .choices[0].message.content for row in recorded]
        assert answers == [row["text"] for row in recorded]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_rest_loop_eval_gives_the_exported_model_the_runs_held_out_result(tiny_run, exported, tmp_path):
    """rest-loop-eval like_run=<run> model.source=<merged>: the loop's evaluation, now of the merged folder in a
    fresh engine, reproduces round 1's recorded completions and metric; a bad like_run exits 2."""
    def evaluate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rest_loop.ship.evaluate", *args,
                               f"paths.pools={tmp_path / 'pools'}", f"hydra.run.dir={tmp_path / 'eval'}"],
                              capture_output=True, text=True, timeout=600)

    done = evaluate(f"like_run={tiny_run}", f"model.source={exported / 'merged'}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    mine = read_json(tmp_path / "eval/round_000/eval/metrics.json")
    theirs = read_json(tiny_run / "round_001/eval/metrics.json")
    assert (mine["metric"], mine["n"], mine["value"]) == (theirs["metric"], theirs["n"], theirs["value"])
    texts = [r["text"] for r in read_jsonl(tmp_path / "eval/round_000/eval/completions.jsonl")]
    assert texts == [r["text"] for r in read_jsonl(tiny_run / "round_001/eval/completions.jsonl")]
    assert read_json(tmp_path / "eval/manifest.json")["base_model"] == str(exported / "merged")
    assert f"{tiny_run} recorded:" in done.stdout and "round 1 step 1" in done.stdout

    for args, says in (([f"like_run={tmp_path / 'nope'}"], "no config.yaml there"),
                       ([f"like_run={tiny_run}", "task=gsm8k"], "with like_run the groups are the run's")):
        done = evaluate(*args)
        assert done.returncode == 2 and says in done.stdout + done.stderr, (args, done.stderr[-1500:])


def test_gguf_files_by_llama_cpps_tools_read_back_close_to_the_merged_model(tiny_run, tmp_path):
    """--gguf q8_0,q4_k_m: llama.cpp's converter and quantizer write the files. Read back by transformers, each
    picks the merged model's next token on the run's held-out completions, and llama.cpp itself (the chat
    template from the GGUF) answers the held-out prompts as the run did; export.json and the card say how often."""
    from gguf import GGUFReader

    out = tmp_path / "model"
    done = export(str(tiny_run), "--model", "round_001", "--gguf", "q8_0,q4_k_m", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    ggufs = read_json(out / "export.json")["gguf"]
    assert list(ggufs) == ["q8_0", "q4_k_m"] and sorted(p.name for p in (out / "gguf").iterdir()) == [
        "model-q4_k_m.gguf", "model-q8_0.gguf"]  # the float32 intermediate is gone
    recorded = read_json(tiny_run / "round_001/eval/metrics.json")["value"]
    for t, g in ggufs.items():
        fid = g["fidelity"]
        assert fid["completions"] == 8 and fid["tokens"] > 0, (t, fid)
        # measured: agreement 1.0, 8 of 8 the same, the run's metric, for both
        assert fid["next_token_agreement"] >= 0.95 and fid["greedy_same"] >= 7, (t, fid)
        assert abs(fid["metric"] - recorded) <= 1 / 8, (t, fid, recorded)
    assert ggufs["q8_0"]["fidelity"]["max_logit_diff"] < ggufs["q4_k_m"]["fidelity"]["max_logit_diff"]
    card = (out / "README.md").read_text()
    assert "| gguf/model-q8_0.gguf |" in card and "![held-out metric per round](heldout.png)" in card
    assert (out / "heldout.png").stat().st_size > 1000
    fields = GGUFReader(out / "gguf/model-q4_k_m.gguf").fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert "tokenizer.chat_template" in fields


def test_gguf_options_name_what_is_wrong(tiny_run, tmp_path):
    for args, says in ((["--model", "round_001", "--gguf", "q3_k_xl"], "--gguf 'q3_k_xl': use a comma-separated"),
                       (["--gguf", "q8_0"], "name the policy to convert with --model"),
                       (["--model", "round_001", "--gguf", "q8_0", "--llama-cpp", str(tmp_path)],
                        "no convert_hf_to_gguf.py there")):
        done = export(str(tiny_run), *args, "--out", str(tmp_path / "x"))
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr[-500:])

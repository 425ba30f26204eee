"""A run's policy as a model people can load: the adapter, the merged model and a model card.

    rest-loop-export runs/demo/<time> --model best          # the best held-out evaluation's policy
    rest-loop-export runs/demo/<time> --model round_002     # round 2's (round_002_2: its Improve step 2)

What `<out>` (default `<run_dir>/export/model_<policy>`) holds:

    adapter/      the PEFT adapter as the fine-tune saved it (LoRA policies)
    merged/       the base with the adapter merged in (PEFT's merge_and_unload), as safetensors, with the
                  tokenizer, its chat template and generation_config.json: `AutoModelForCausalLM.
                  from_pretrained(out / "merged")` needs neither rest-loop nor PEFT
    README.md     the model card, from the run: base, method, init, each round's kept examples and
                  held-out result, the reward, the config, the command that made it

The merged model is saved in the base's dtype unless `--dtype` names another (float32, bfloat16, float16).
`--gguf q8_0,q4_k_m` adds `gguf/model-<type>.gguf`, made by llama.cpp's converter and quantizer, each read
back and compared with the merged model on the held-out completions (rest_loop/ship/gguf.py); the card
shows the result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

from rest_loop.manifest import stage_name
from rest_loop.store import atomic_write_text, read_json

POLICY = re.compile(r"round_(\d+)(?:_(\d+))?")
DTYPES = ("float32", "bfloat16", "float16")


def chosen(manifest: dict, which: str, run_dir: Path) -> tuple[int, int]:
    """(round, step) of the policy `which` names: `best` is the run's best held-out evaluation."""
    if which == "best":
        best = manifest.get("best")
        if not best:
            raise ValueError(f"{run_dir}/manifest.json has no evaluation yet: name a round, e.g. --model round_001")
        r, step = int(best["round"]), int(best.get("step", 1))
    elif m := POLICY.fullmatch(which):
        r, step = int(m.group(1)), int(m.group(2) or 1)
    else:
        raise ValueError(f"--model {which!r}: use best, round_NNN, or round_NNN_S for Improve step S")
    if r == 0:
        raise ValueError(f"--model {which}: round 0 is the base model ({manifest.get('base_model')}), which this "
                         "run did not train; it is best when no round beat it")
    return r, step


def trained(run_dir: Path, r: int, step: int) -> dict:
    """The fine-tune stage that made round r's policy: its DONE record."""
    done = run_dir / f"round_{r:03d}" / stage_name("finetune", step) / "DONE"
    if not done.is_file():
        raise ValueError(f"{done} is missing: round {r}, step {step} has no finished fine-tune in {run_dir}")
    return read_json(done)


def merge(base: str, info: dict, dtype: str | None, out: Path) -> str:
    """The policy as one model folder: the adapter merged into the base, or the fully tuned model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source = info["output"] if info["method"] == "full" else base
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype) if dtype else "auto")
    if info["method"] != "full":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, info["output"]).merge_and_unload()
    saved_dtype = str(model.dtype).removeprefix("torch.")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)  # the chat template goes with it
    try:
        GenerationConfig.from_pretrained(base).save_pretrained(out)
    except OSError:  # a base without one: what the model config implies
        GenerationConfig.from_model_config(model.config).save_pretrained(out)
    return saved_dtype


def heldout_plot(run_dir: Path, manifest: dict, path: Path) -> bool:
    """The run's held-out metric per round, as rest-loop-report draws it; False when nothing was scored."""
    from rest_loop import plots
    from rest_loop.manifest import Manifest
    from rest_loop.report import rows

    table = rows(Manifest(run_dir / "manifest.json", manifest))
    if not any(row["held_out"] is not None for row in table):
        return False
    plots.heldout({manifest.get("name", run_dir.name): table}, path)
    return True


def gguf_lines(ggufs: dict, metric: str, recorded: float | None) -> list[str]:
    if not ggufs:
        return []
    lines = ["## GGUF (llama.cpp, Ollama)", "",
             "Made by llama.cpp's converter and quantizer. Next-token agreement: the file read back by transformers "
             "and `merged/`, fed the run's held-out completions, pick the same most likely next token this often. "
             f"Then llama.cpp itself answers the held-out prompts greedily: how many answers equal the run's, and "
             f"their {metric}.", "",
             f"| file | MB | next-token agreement | llama.cpp answers the same | llama.cpp {metric} |",
             "| --- | --- | --- | --- | --- |",
             f"| merged/ (the run's evaluation, vLLM) | - | 1 | all | {'-' if recorded is None else f'{recorded:.3f}'} "
             "|"]
    for g in ggufs.values():
        fid = g.get("fidelity") or {}
        agreement = (f"{fid['next_token_agreement']:.3f} of {fid['tokens']} tokens"
                     if fid.get("next_token_agreement") is not None else g.get("note", "-"))
        same = f"{fid['greedy_same']} of {fid['completions']}" if fid else "-"
        value = "-" if fid.get("metric") is None else f"{fid['metric']:.3f}"
        lines.append(f"| gguf/{Path(g['path']).name} | {g['bytes'] / 1e6:.1f} | {agreement} | {same} | {value} |")
    return [*lines, ""]


def card(run_dir: Path, manifest: dict, r: int, step: int, info: dict, dtype: str, command: str,
         plot: bool = False, ggufs: dict | None = None) -> str:
    def cell(x) -> str:
        return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    rows = []  # the lineage of each round's policy: samples grown, kept by Improve, originals mixed in, trained on
    for key, entry in sorted(manifest.get("rounds", {}).items(), key=lambda kv: int(kv[0])):
        grow, improve, ft, ev = (entry.get(k, {}) for k in ("grow", "improve", "finetune", "eval"))
        kept = improve.get("kept_trajectories", improve.get("kept"))
        rows.append("| " + " | ".join([key, ev.get("policy", "-"), *map(cell, (
            grow.get("trajectories", grow.get("samples")), kept, ft.get("original"), ft.get("examples"),
            ev.get("value")))]) + " |")
    recorded = manifest.get("rounds", {}).get(str(r), {}).get(stage_name("eval", step), {}).get("value")
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else "(not found)"
    metric = next((e.get("eval", {}).get("metric") for e in manifest.get("rounds", {}).values()
                   if e.get("eval", {}).get("metric")), "held-out")
    return "\n".join([
        f"# {manifest.get('name', run_dir.name)}: {stage_name(f'round_{r:03d}', step)}",
        "",
        f"Self-trained with rest-loop (ReST-style rounds of Grow, Improve, "
        f"fine-tune) from `{manifest.get('base_model')}`.",
        "",
        f"- base model: `{manifest.get('base_model')}`",
        f"- method: {info['method']}, init: {info.get('init')}, learning rate {info.get('learning_rate')}, "
        f"{info.get('steps')} steps on {info.get('examples')} examples (train loss {info.get('train_loss')})",
        f"- merged weights: {dtype}",
        f"- reward: `{manifest.get('reward')}`; seed {manifest.get('seed')}; rest-loop commit {manifest.get('git_sha')}",
        f"- run: `{run_dir}`",
        f"- made by: `{command}`",
        "",
        f"## Rounds ({metric} on the held-out prompts)",
        "",
        "| round | policy | grown | kept | original | trained on | held-out |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *(["![held-out metric per round](heldout.png)", ""] if plot else []),
        *gguf_lines(ggufs or {}, metric, recorded),
        "## Load it",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained('merged')",
        "tokenizer = AutoTokenizer.from_pretrained('merged')",
        "```",
        "",
        "## The run's config",
        "",
        "```yaml",
        config.rstrip(),
        "```",
        "",
    ])


def export_model(run_dir: Path, which: str = "best", out: Path | None = None, dtype: str | None = None,
                 gguf: list[str] = (), llama_cpp: Path | None = None) -> dict:
    """Write the adapter, the merged model (and GGUF files of it) and the model card of the policy `which` names."""
    run_dir = Path(run_dir)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if gguf:  # before the merge: llama-cpp-python missing, or a --llama-cpp without the converter, stops here
        from rest_loop.ship.gguf import converter

        script = converter(Path(os.environ.get("REST_LOOP_CACHE", "~/.cache/rest_loop")).expanduser(), llama_cpp)
    manifest = read_json(run_dir / "manifest.json")
    r, step = chosen(manifest, which, run_dir)
    info = trained(run_dir, r, step)
    policy = stage_name(f"round_{r:03d}", step)
    out = Path(out) if out else run_dir / "export" / f"model_{policy}"
    out.mkdir(parents=True, exist_ok=True)
    if info["method"] != "full":
        shutil.copytree(info["output"], out / "adapter", dirs_exist_ok=True)
    saved = merge(manifest["base_model"], info, dtype, out / "merged")
    ggufs = gguf_files(run_dir, r, step, out, gguf, script) if gguf else {}
    command = (" ".join(["rest-loop-export", *sys.argv[1:]]) if sys.argv[1:]
               else f"export_model({str(run_dir)!r}, {which!r})")
    plot = heldout_plot(run_dir, manifest, out / "heldout.png")
    atomic_write_text(out / "README.md", card(run_dir, manifest, r, step, info, saved, command, plot, ggufs))
    summary = {"policy": policy, "round": r, "step": step, "out": str(out), "dtype": saved,
               "adapter": info["method"] != "full", "gguf": ggufs}
    atomic_write_text(out / "export.json", json.dumps(summary, indent=2) + "\n")
    return summary


def gguf_files(run_dir: Path, r: int, step: int, out: Path, types: list[str], script: Path) -> dict:
    """GGUF files of `out/merged`, each with its fidelity on the held-out completions the run recorded for it."""
    from rest_loop.ship.gguf import fidelity, write_gguf

    written = write_gguf(script, out / "merged", types, out / "gguf")
    prompts, texts, max_tokens, metric, why = heldout_completions(run_dir, r, step)
    return {t: {"path": str(path), "bytes": path.stat().st_size,
                **({"fidelity": fidelity(path, out / "merged", prompts, texts, max_tokens, metric)} if prompts
                   else {"note": why})}
            for t, path in written.items()}


def heldout_completions(run_dir: Path, r: int, step: int) -> tuple[list, list, int, object, str]:
    """The held-out prompts, the greedy completions round r's evaluation recorded for them, the eval's token limit
    and the task's metric (not for an agent's runs, whose answers are multi-turn trajectories)."""
    from omegaconf import OmegaConf

    from rest_loop.config import build
    from rest_loop.store import read_jsonl

    cfg = OmegaConf.load(run_dir / "config.yaml")
    if cfg.get("env") is not None:
        return [], [], 0, None, "not compared: an agent's held-out answers are multi-turn trajectories"
    task = build(cfg.task)
    heldout = {p.id: p for p in task.heldout}
    rows = [row for row in read_jsonl(run_dir / f"round_{r:03d}" / stage_name("eval", step) / "completions.jsonl")
            if row["prompt_id"] in heldout]
    return [heldout[row["prompt_id"]] for row in rows], [row["text"] for row in rows], cfg.eval.max_tokens, \
        task.metric, ""

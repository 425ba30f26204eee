"""Export an agent run's kept trajectories as tool-calling data, for training elsewhere.

    rest-loop-export runs/rest_react_agent/<time>          # an agent run: what Improve kept, per round

`rest-loop-export` sends agent runs here. For each round, the trajectories whose examples Improve
kept (`round_NNN/improve*/kept.jsonl`, read back to `grow/trajectories.jsonl`) are written as
LLaMA-Factory/Glaive ShareGPT rows (`function_call` and `observation` turns, `tools` as a JSON
string) and as OpenAI chat messages with `tool_calls`. The questions and the tools' schemas come
from the run's own config (`config.yaml`), built again as the run built them.

    <out>/round_NNN.tools_sharegpt.json   round_NNN.tools_openai.jsonl   round_NNN.lineage.jsonl
    <out>/dataset_info.json               LLaMA-Factory's registry entries for the ShareGPT files
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from rest_loop.agent.data import export_openai, export_sharegpt
from rest_loop.agent.records import Trajectory
from rest_loop.store import read_json, read_jsonl, write_json, write_jsonl

SHAREGPT_TOOLS = {  # how LLaMA-Factory reads Glaive-style rows (its data/dataset_info.json does the same)
    "formatting": "sharegpt",
    "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
             "function_tag": "function_call", "observation_tag": "observation"},
}


def is_agent_run(run_dir: Path) -> bool:
    return any(Path(run_dir).glob("round_*/grow/trajectories.jsonl"))


def kept_trajectories(run_dir: Path) -> dict[int, list[Trajectory]]:
    """Per round, the trajectories Improve kept (any step of the round), in the order they were kept."""
    out = {}
    for grow in sorted(Path(run_dir).glob("round_*/grow/trajectories.jsonl")):
        round_dir = grow.parent.parent
        by_key = {(t.prompt_id, t.sample_idx): t for t in read_jsonl(grow, Trajectory)}
        keys: dict[tuple, None] = {}
        for kept in sorted(round_dir.glob("improve*/kept.jsonl")):
            keys.update({(e["prompt_id"], e["sample_idx"]): None for e in read_jsonl(kept)})
        if keys:
            out[int(re.sub(r"\D", "", round_dir.name))] = [by_key[k] for k in keys]
    return out


def export_agent(run_dir: Path, out: Path | None = None) -> dict:
    from rest_loop.loop import build  # here: building the task and tools imports the heavy parts

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task, env = build(cfg.task), build(cfg.env)
    prompts = {p.id: p for p in task.train + task.heldout}
    tools = env.specs()
    registry, written = {}, {}
    for r, trajectories in kept_trajectories(run_dir).items():
        name = f"round_{r:03d}"
        write_json(out / f"{name}.tools_sharegpt.json", export_sharegpt(trajectories, prompts, tools))
        write_jsonl(out / f"{name}.tools_openai.jsonl", export_openai(trajectories, prompts, tools))
        write_jsonl(out / f"{name}.lineage.jsonl", [{"round": t.round, "prompt_id": t.prompt_id,
                                                     "sample_idx": t.sample_idx, "policy": t.policy, "stop": t.stop,
                                                     "answer": t.answer} for t in trajectories])
        registry[f"{name}_tools"] = {"file_name": f"{name}.tools_sharegpt.json", **SHAREGPT_TOOLS}
        written[r] = len(trajectories)
    if registry:
        info = out / "dataset_info.json"
        write_json(info, {**(read_json(info) if info.exists() else {}), **registry})
    return {"run_dir": str(run_dir), "out": str(out), "trajectories": written}

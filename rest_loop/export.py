"""Export a run's training data, to train on it outside this tool (LLaMA-Factory, TRL, ...).

    rest-loop-export runs/demo/<time>                                # every format, what was trained on
    rest-loop-export runs/demo/<time> --format sharegpt --rounds 1,2 --out data/demo
    rest-loop-export runs/demo/<time> --which kept                   # grown samples Improve kept, no originals
    rest-loop-export runs/demo/<time> --model best                   # the policy as a model (rest_loop/ship/)

`--which train` (the default) reads each fine-tune's `round_NNN/finetune*/train.jsonl`: exactly
what the trainer saw, the task's original data included. `--which kept` reads Improve's
`round_NNN/improve*/kept.jsonl`. A round with several Improve steps exports every step, in order,
because the trainer saw every step. What `<out>` (default `<run_dir>/export`) holds:

    round_NNN.alpaca.json, round_NNN.sharegpt.json   one round, in LLaMA-Factory's two formats
    all.alpaca.json, all.sharegpt.json               every round; an identical (prompt, completion) once
    round_NNN.alpaca.lineage.jsonl, ...              row i's round, step, prompt id, policy, score, ...
    hf/round_NNN/, hf/all/                           `datasets.load_from_disk`: a `messages` column
                                                     (TRL's conversational format) beside the lineage
    dataset_info.json                                LLaMA-Factory's registry of the json files

Lineage sits in a sibling file, not in the records, so the records stay what a trainer expects;
the two keep the same order. Entries already in `dataset_info.json` stay, so `--out` may be
LLaMA-Factory's own data folder. LLaMA-Factory: `dataset_dir: <out>`, `dataset: all_sharegpt`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

from rest_loop.records import KeptExample, to_dict
from rest_loop.store import atomic_write_text, read_json, read_jsonl, write_json, write_jsonl

SOURCES = {"train": ("finetune", "train.jsonl"), "kept": ("improve", "kept.jsonl")}
FORMATS = ("alpaca", "sharegpt", "hf")
LINEAGE = ("round", "step", "prompt_id", "sample_idx", "policy", "seed", "reward", "score", "source")
ROUND_DIR = re.compile(r"round_(\d+)")


def stages(run_dir: Path, which: str = "train") -> list[Path]:
    """The data files of a run, by round then step: `round_002/finetune_2/train.jsonl` is round 2, step 2."""
    if which not in SOURCES:
        raise ValueError(f"which={which!r}: use one of {sorted(SOURCES)}")
    stage, name = SOURCES[which]
    step_dir = re.compile(rf"{stage}(?:_(\d+))?")  # not finetune_backup or the like
    found = []
    for round_dir in Path(run_dir).glob("round_*"):
        r = ROUND_DIR.fullmatch(round_dir.name)
        for path in round_dir.glob(f"{stage}*/{name}"):
            s = step_dir.fullmatch(path.parent.name)
            if r and s:
                found.append(((int(r.group(1)), int(s.group(1) or 1)), path))
    return [path for _, path in sorted(found)]


def collect(run_dir: Path, rounds: str | Iterable[int] = "all", which: str = "train") -> list[dict]:
    """The rows of a run's training data, by round then step, each with its lineage (see `LINEAGE`)."""
    run_dir = Path(run_dir)
    paths = stages(run_dir, which)
    if not paths:
        stage, name = SOURCES[which]
        runs = sorted({p.parent for p in run_dir.glob("*/round_*")})[:3]  # given runs/<name>, not runs/<name>/<time>?
        hint = f"; runs below it: {', '.join(map(str, runs))}" if runs else ""
        raise FileNotFoundError(f"no rounds with {which} data in {run_dir}: expected "
                                f"{run_dir}/round_NNN/{stage}*/{name}{hint}")
    # through KeptExample: rows written before a field existed get its default, unknown keys drop out
    rows = [to_dict(x) for path in paths for x in read_jsonl(path, KeptExample)]
    if rounds == "all":
        return rows
    wanted, have = set(rounds), {row["round"] for row in rows}
    if wanted - have:
        raise FileNotFoundError(f"rounds {sorted(wanted - have)} have no {which} data in {run_dir}; "
                                f"rounds with data: {sorted(have)}")
    return [row for row in rows if row["round"] in wanted]


def split_prompt(row: dict) -> tuple[str | None, list[list[str]], str]:
    """A prompt's system message, earlier [user, assistant] turns and final user message.

    Both LLaMA-Factory formats need the turns to alternate user, assistant, ..., user;
    it drops a conversation that does not, so we refuse it here, by name.
    """
    messages = list(row["messages"])
    system = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else None
    roles = [m["role"] for m in messages]
    if not roles or roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        raise ValueError(f"prompt {row['prompt_id']!r} (round {row['round']}): roles {roles} do not "
                         "alternate user, assistant, ..., user; alpaca and sharegpt cannot hold it")
    history = [[messages[i]["content"], messages[i + 1]["content"]] for i in range(0, len(messages) - 1, 2)]
    return system or None, history, messages[-1]["content"]


def to_alpaca(rows: list[dict]) -> list[dict]:
    """LLaMA-Factory's alpaca records; `system` and `history` only where the prompt has them."""
    out = []
    for row in rows:
        system, history, user = split_prompt(row)
        record = {"instruction": user, "input": "", "output": row["completion"]}
        if system:
            record["system"] = system
        if history:
            record["history"] = history
        out.append(record)
    return out


def to_sharegpt(rows: list[dict]) -> list[dict]:
    """LLaMA-Factory's sharegpt records: human/gpt turns, the system prompt under its own key."""
    out = []
    for row in rows:
        system, history, user = split_prompt(row)
        turns = [turn for h, g in history for turn in ({"from": "human", "value": h}, {"from": "gpt", "value": g})]
        record = {"conversations": turns + [{"from": "human", "value": user},
                                            {"from": "gpt", "value": row["completion"]}]}
        if system:
            record["system"] = system
        out.append(record)
    return out


def to_hf(rows: list[dict]) -> list[dict]:
    """The whole chat, the completion as its last assistant message, beside the lineage columns."""
    return [{"messages": [*row["messages"], {"role": "assistant", "content": row["completion"]}], **lineage(row)}
            for row in rows]


def lineage(row: dict) -> dict:
    return {key: row[key] for key in LINEAGE}


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    """Each (prompt, completion) once, at its first occurrence: rounds retrain on the same kept samples."""
    seen, out = set(), []
    for row in rows:
        key = json.dumps([row["messages"], row["completion"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out, len(rows) - len(out)


def write_records(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, json.dumps(records, ensure_ascii=False, indent=2) + "\n")


def save_dataset(path: Path, rows: list[dict]) -> None:
    """`save_to_disk` into a temporary folder, then rename it into place, like every other write."""
    from datasets import Dataset  # slow to import: only an hf export pays for it

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        Dataset.from_list(to_hf(rows)).save_to_disk(str(tmp))
        old = tmp.with_name(f".{path.name}.old.tmp")  # a folder cannot be renamed over a folder
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def dataset_entry(name: str, fmt: str, records: list[dict]) -> dict:
    """A dataset_info.json entry; `system` and `history` are named only when the file has them,
    since LLaMA-Factory reads a named column from every record."""
    has = {key for record in records for key in record}
    if fmt == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        columns.update({key: key for key in ("system", "history") if key in has})
        return {"file_name": name, "formatting": "alpaca", "columns": columns}
    columns = {"messages": "conversations", **({"system": "system"} if "system" in has else {})}
    return {"file_name": name, "formatting": "sharegpt", "columns": columns,
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}


def export(run_dir: Path, out: Path | None = None, formats: Iterable[str] = FORMATS,
           rounds: str | Iterable[int] = "all", which: str = "train") -> dict:
    """Write the files the module docstring lists; return what was written, per round and in all."""
    run_dir, formats = Path(run_dir), list(formats)
    out = Path(out) if out is not None else run_dir / "export"
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats={formats}: use some of {list(FORMATS)}")
    rows = collect(run_dir, rounds, which)
    if {"alpaca", "sharegpt"} & set(formats):
        for row in rows:  # refuse a prompt the formats cannot hold before writing anything
            split_prompt(row)
    union, duplicates = dedupe(rows)
    parts = {f"round_{r:03d}": [row for row in rows if row["round"] == r] for r in sorted({x["round"] for x in rows})}
    parts["all"] = union
    registry, files = {}, []
    unfinished = [str(path.parent) for path in stages(run_dir, which)  # resumed, such a stage is redone
                  if not (path.parent / "DONE").exists() and path.parent.parent.name in parts]
    for name, part in parts.items():
        for fmt, convert in (("alpaca", to_alpaca), ("sharegpt", to_sharegpt)):
            if fmt in formats:
                records = convert(part)
                write_jsonl(out / f"{name}.{fmt}.lineage.jsonl", [lineage(row) for row in part])
                write_records(out / f"{name}.{fmt}.json", records)
                registry[f"{name}_{fmt}"] = dataset_entry(f"{name}.{fmt}.json", fmt, records)
                files += [f"{name}.{fmt}.json", f"{name}.{fmt}.lineage.jsonl"]
        if "hf" in formats:
            save_dataset(out / "hf" / name, part)
            files.append(f"hf/{name}/")
    if registry:  # last: it names files that now exist. Other entries stay: --out may be LLaMA-Factory's data/
        info_path = out / "dataset_info.json"
        write_json(info_path, {**(read_json(info_path) if info_path.exists() else {}), **registry})
        files.append("dataset_info.json")
    return {"run_dir": str(run_dir), "out": str(out), "which": which, "files": files, "unfinished": unfinished,
            "rounds": {int(name[6:]): counts(part) for name, part in parts.items() if name != "all"},
            "all": {**counts(union), "duplicates": duplicates}}


def counts(rows: list[dict]) -> dict:
    sources = Counter(row["source"] for row in rows)
    return {"rows": len(rows), "grown": sources["grown"], "original": sources["original"],
            "steps": sorted({row["step"] for row in rows})}


def render(summary: dict) -> str:
    def line(c: dict) -> str:
        return f"{c['rows']} rows ({c['grown']} grown, {c['original']} original)"

    lines = [f"exported {summary['which']} data of {summary['run_dir']} to {summary['out']}"]
    for r, c in summary["rounds"].items():
        lines.append(f"  round {r}: {line(c)}, steps {', '.join(map(str, c['steps']))}")
    lines.append(f"  all: {line(summary['all'])}; {summary['all']['duplicates']} duplicate (prompt, completion) "
                 "pairs dropped")
    lines += [f"  note: {path} has no DONE marker: its stage did not finish" for path in summary["unfinished"]]
    lines.append(f"  wrote {len(summary['files'])}: {', '.join(summary['files'])}")
    return "\n".join(lines)


def parse_rounds(text: str) -> str | list[int]:
    if text == "all":
        return "all"
    try:
        rounds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        rounds = []
    if not rounds:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'all' or round numbers like 1,2")
    return rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rest-loop-export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/demo/<time>")
    parser.add_argument("--format", default="all", choices=[*FORMATS, "all"], help="what to write (default: all)")
    parser.add_argument("--rounds", default="all", type=parse_rounds, help="'all' or a list like 1,2 (default: all)")
    parser.add_argument("--which", default="train", choices=sorted(SOURCES),
                        help="train: what each fine-tune saw, originals included (default); kept: Improve's kept")
    parser.add_argument("--out", type=Path, help="output folder (default: <run_dir>/export)")
    parser.add_argument("--model", metavar="POLICY", help="export a policy as a model instead of data: best, "
                        "round_NNN or round_NNN_S (the adapter, the merged model and a model card)")
    parser.add_argument("--dtype", help="the merged model's dtype (default: the base's): float32, bfloat16, float16")
    parser.add_argument("--gguf", metavar="TYPES", help="with --model, also GGUF files by llama.cpp's tools: a list "
                        "of q8_0, f16, bf16, f32, q4_k_m, q4_0, q5_k_m, q6_k (e.g. q8_0,q4_k_m)")
    parser.add_argument("--llama-cpp", type=Path, metavar="DIR", help="with --gguf: a llama.cpp checkout whose "
                        "converter to use (default: the installed llama-cpp-python's, fetched once)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # one bar per saved folder drowns the summary
    if not args.run_dir.is_dir():
        parser.exit(2, f"{parser.prog}: error: {args.run_dir} is not a directory\n")
    if args.gguf and not args.model:
        parser.exit(2, f"{parser.prog}: error: --gguf {args.gguf}: name the policy to convert with --model\n")
    if args.model:
        from rest_loop.ship.gguf import parse_types
        from rest_loop.ship.model import export_model

        try:
            types = parse_types(args.gguf) if args.gguf else []
            summary = export_model(args.run_dir, args.model, args.out, args.dtype, types, args.llama_cpp)
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        ggufs = "".join(f", gguf/{Path(g['path']).name}" for g in summary["gguf"].values())
        print(f"{summary['policy']} written to {summary['out']}: merged/ ({summary['dtype']})"
              f"{', adapter/' if summary['adapter'] else ''}{ggufs}, README.md (the model card)", flush=True)
        return
    formats = FORMATS if args.format == "all" else [args.format]
    from rest_loop.agent.export import export_agent, is_agent_run

    if is_agent_run(args.run_dir):  # trajectories: tool-calling data, not prompt-completion pairs
        summary = export_agent(args.run_dir, args.out)
        print(f"kept trajectories per round {summary['trajectories']} written to {summary['out']} "
              "(ShareGPT with function_call/observation turns, and OpenAI tool_calls messages)", flush=True)
        return
    try:
        summary = export(args.run_dir, args.out, formats, args.rounds, args.which)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(render(summary), flush=True)


if __name__ == "__main__":
    main()

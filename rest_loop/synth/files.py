"""Synthesis on disk: the seed examples in, the dataset and its reports out.

    seeds = load_seeds("data/seeds.jsonl")              # Alpaca, ShareGPT or plain columns, as task=from_file reads
    save(stage_dir, kept, stats, summary)                # dataset.jsonl, stats.json, diversity.json, diversity.png

`dataset.jsonl` has one SynthRow a line: `input` and `reference` for the task, the rest lineage.
Read it back with

    rest-loop task=from_file task.source=<run>/synth/dataset.jsonl task.fields.reference=reference

(the `fields.reference` only when the rows carry references). Every file is written atomically; the
stage that calls `save` writes its DONE marker after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rest_loop.store import write_json, write_jsonl
from rest_loop.synth.records import SynthRow
from rest_loop.tasks import formats
from rest_loop.tasks.data import load_rows

DATASET = "dataset.jsonl"


def load_seeds(source: str, format: str = "auto", fields: dict[str, Any] | None = None, on_bad_row: str = "error",
               split: str | None = None, key: str = "synth.seeds") -> list[formats.Example]:
    """The seed examples (or other rows, read the same way: `key` names the setting an error blames); a row
    that does not fit names the file and row, as the tasks' reader does."""
    rows = load_rows(source, split, key=key)
    bad = formats.BadRows(source, on_bad_row, key="synth.on_bad_row")
    _, examples = formats.read(rows, source, format, fields, bad=bad)
    bad.done(len(rows), len(examples))
    return examples


def save(folder: str | Path, kept: list[SynthRow], stats: dict[str, Any], summary: dict[str, Any]) -> None:
    from rest_loop.synth.report import plot

    folder = Path(folder)
    write_jsonl(folder / DATASET, kept)
    write_json(folder / "stats.json", stats)
    write_json(folder / "diversity.json", summary)
    plot(summary, folder / "diversity.png")

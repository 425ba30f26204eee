"""The one place task data is loaded: a local file, a `save_to_disk` folder, or a hub id, as plain rows.

Everything goes through the `datasets` library, so a file, a folder and a hub
dataset give the same rows (dicts of column -> value):

    load_rows("/data/gsm8k/train.jsonl")               # .jsonl .json .parquet .csv: the file is the split
    load_rows("/data/alpaca.json")                     # JSON lines or one JSON array of objects, either suffix
    load_rows("/data/gsm8k_saved", split="test")       # a folder written by Dataset(Dict).save_to_disk
    load_rows("openai/gsm8k", split="train", name="main")  # a hub id, or a local dataset repo folder

`key` is the config key the source came from (e.g. "task.source"): every error
names it, so a wrong path is fixed in the config, not hunted in a traceback: an empty file,
an empty JSON array, a JSON file that is one object rather than rows, a folder that holds no
dataset. Tasks check their columns with `require_fields`, which names the file and row.

`datasets` caches what it reads (as Arrow files): under $HF_DATASETS_CACHE when that is set, else
under $REST_LOOP_CACHE/datasets when REST_LOOP_CACHE is set, else in its own ~/.cache/huggingface/datasets.

    >>> rows = load_rows("tests/data/gsm8k_tiny.jsonl")
    >>> require_fields(rows, ["question", "answer"], "tests/data/gsm8k_tiny.jsonl")
    >>> sorted(rows[0])
    ['answer', 'question']
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterable

from rest_loop.config import ConfigError, DataError
from rest_loop.records import Prompt

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # suffix -> datasets builder
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes: DatasetDict, Dataset


def load_rows(source: str, split: str | None = None, *, name: str | None = None, key: str = "source",
              **kw: Any) -> list[dict[str, Any]]:
    """The rows of one split of `source`. `name` is the hub config (GSM8K's "main"); `kw` goes to load_dataset.

    A single file has no splits, so `split` is ignored for it: it IS the split.
    """
    import datasets  # heavy (pyarrow, pandas): only when a task actually loads data

    path = Path(source).expanduser()
    kw.setdefault("cache_dir", datasets_cache())
    if path.is_file():
        builder = FORMATS.get("".join(path.suffixes[-1:]).lower())
        if builder is None:
            raise ConfigError(f"{key}={source!r}: unknown file type; use one of {sorted(FORMATS)}")
        if why := shape_problem(path, builder):
            raise DataError(f"{key}={source!r}: {why}")
        chatty = logging.getLogger(f"datasets.packaged_modules.{builder}.{builder}")  # logs a failure, then raises
        level = chatty.level
        chatty.setLevel(logging.CRITICAL)  # ... it: our message below says it better, with the line
        try:
            data = datasets.load_dataset(builder, data_files=str(path), split="train", **kw)
        except (datasets.exceptions.DatasetGenerationError, ValueError) as e:  # its own: "an error occurred"
            if isinstance(e.__cause__, OSError):  # writing its Arrow cache failed (a full disk): not the file's fault
                raise
            where = json_problem(path) if builder == "json" else None
            why = f"{where}. Fix that line" if where else f"{e.__cause__ or e}"
            raise DataError(f"{key}={source!r}: could not read it as {builder}: {why}, or point {key} at "
                            f"another file") from e
        finally:
            chatty.setLevel(level)
        return some_rows(data.to_list(), source, key)
    if path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS):
        return some_rows(one_split(datasets.load_from_disk(str(path)), split, source, key).to_list(), source, key)
    if path.is_dir() and not data_files(path):
        held = sorted(p.name for p in path.iterdir())
        shown = ", ".join(held[:5]) + (f", ... ({len(held)} in all)" if len(held) > 5 else "") if held else "nothing"
        raise DataError(f"{key}={source!r} is a folder but no dataset: it has neither what save_to_disk writes "
                        f"({' or '.join(SAVED_MARKERS)}) nor data files ({', '.join(sorted(FORMATS))}); it holds "
                        f"{shown}. Point {key} at a data file or a save_to_disk folder")
    if looks_local(source) and not path.is_dir():  # a typo in a path must not turn into a hub request
        raise ConfigError(f"{key}={source!r}: no such file or folder")
    try:
        data = datasets.load_dataset(source, name, split=split, **kw)
    except ConnectionError as e:  # datasets raises ConnectionError for offline mode and for no network alike
        raise ConfigError(
            f"{key}={source!r}: not found locally (no such file or folder) and the Hugging Face Hub could "
            f"not be reached ({e}). Point {key} at a local .jsonl/.parquet/.csv file or a save_to_disk "
            f"folder, or run once with network access so the hub copy is cached") from None
    except FileNotFoundError as e:  # includes datasets' DatasetNotFoundError
        raise ConfigError(f"{key}={source!r}: not found locally nor on the Hugging Face Hub: {e}") from None
    except ValueError as e:  # an unknown split or config name: datasets lists the known ones
        raise ConfigError(f"{key}={source!r} (split={split!r}, name={name!r}): {e}") from None
    return some_rows(one_split(data, split, source, key).to_list(), source, key)


def datasets_cache() -> str | None:
    """Where `datasets` keeps its Arrow copies: $REST_LOOP_CACHE/datasets when REST_LOOP_CACHE is set and
    HF_DATASETS_CACHE is not, so one variable moves every cache; None leaves it to `datasets`."""
    root = os.environ.get("REST_LOOP_CACHE")
    if os.environ.get("HF_DATASETS_CACHE") or not root:
        return None
    return str(Path(root).expanduser() / "datasets")


def data_files(folder: Path) -> list[Path]:
    """The data files `datasets` would read from a folder (a dataset repo: the folder or its data/)."""
    return [p for d in (folder, folder / "data") if d.is_dir() for p in d.iterdir()
            if p.is_file() and p.suffix.lower() in FORMATS]


def some_rows(rows: list[dict[str, Any]], source: str, key: str) -> list[dict[str, Any]]:
    if not rows:
        raise DataError(f"{key}={source!r}: has no rows")
    return rows


PEEK = 1 << 16  # bytes read to tell an empty file or an empty array from rows
LISTING = {"file_name", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url"}  # dataset_info.json's "where" keys


def shape_problem(path: Path, builder: str) -> str | None:
    """What makes a data file hold no rows, said plainly: it is empty, an empty JSON array, or one JSON
    object spread over lines (a settings file such as LLaMA-Factory's dataset_info.json, not rows)."""
    with open(path, "rb") as f:
        head = f.read(PEEK).decode("utf-8", errors="replace")
    text = head.strip()
    if not text:
        return "the file is empty: it has no rows"
    if builder != "json":
        return None
    if text.startswith("[") and text[1:].lstrip().startswith("]"):
        return "the file is an empty JSON array ([]): it has no rows"
    first = text.splitlines()[0].strip()
    if not text.startswith("{") or first.endswith("}"):
        return None  # an array of rows, or JSON Lines whose first line is a row
    try:
        whole = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError:
        return None  # broken JSON Lines: load_rows says where
    if not isinstance(whole, dict):
        return None
    keys = list(whole)
    shown = ", ".join(map(repr, keys[:5])) + (f", ... ({len(keys)} keys in all)" if len(keys) > 5 else "")
    hint = ""
    files = [v["file_name"] for v in whole.values() if isinstance(v, dict) and "file_name" in v]
    listed = [v for v in whole.values() if isinstance(v, dict) and LISTING & set(v)]
    if files and len(listed) * 2 >= len(keys):  # most entries say where a dataset is: a listing, not data
        hint = (f" It looks like LLaMA-Factory's dataset_info.json, which lists datasets: point at the file one "
                f"of them names, e.g. {files[0]!r}.")
    return (f"the file is one JSON object (keys {shown}), not rows: give a JSON array of row objects "
            f"([{{...}}, {{...}}]) or JSON Lines (one object a line).{hint}")


def json_problem(path: Path) -> str | None:
    """Where a .json/.jsonl file stops being rows of JSON objects, as `line N, column C: why: <line>`.
    `datasets` says only "Expected object or value at position 25", or nothing at all."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
        return None  # one JSON document: an array of rows
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):
            return f"line {e.lineno}, column {e.colno}: {e.msg} (the file is one JSON array)"
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            return f"line {n}, column {e.colno}: {e.msg}: {clip(line)} (each line of JSON Lines is one object)"
        if not isinstance(row, dict):
            return f"line {n}: a row must be a JSON object {{...}}, not {type(row).__name__}: {clip(line)}"
    return None


def clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def one_split(data, split: str | None, source: str, key: str):
    """A Dataset from a Dataset or DatasetDict; `split` may be None only when there is one split."""
    if not hasattr(data, "keys"):  # a single Dataset: it has no split names to choose from
        return data
    if split is None and len(data) == 1:
        return next(iter(data.values()))
    if split not in data:
        raise ConfigError(f"{key}={source!r} has no split {split!r}; its splits are {sorted(data)}")
    return data[split]


def looks_local(source: str) -> bool:
    """A path, not a hub id: starts like a path or ends with a data-file suffix."""
    return source.startswith(("/", ".", "~")) or Path(source).suffix.lower() in FORMATS


def is_single_file(source: str) -> bool:
    return Path(source).expanduser().is_file()


def require_fields(rows: Iterable[dict[str, Any]], fields: Iterable[str], source: str) -> None:
    """Raise DataError naming the source, the 1-based row and the field of the first row that lacks one.

    A field is missing when absent or None: `datasets` fills a key that only
    some JSON lines have with None in the others, so absent becomes None.
    """
    fields = list(fields)
    for i, row in enumerate(rows, start=1):
        for f in fields:
            if row.get(f) is None:
                present = sorted(k for k, v in row.items() if v is not None)
                raise DataError(f"{source}: row {i}: missing field {f!r} (it has {present}); add it to that "
                                f"row, or drop the row")


# Picking rows: shared by every file-backed task, so all split the same way.


def pick(prompts: list[Prompt], n: int | None, seed: int, key: str) -> list[Prompt]:
    """All prompts (n is None), or n of them chosen by seed, kept in row order."""
    if n is None:
        return prompts
    if not 0 <= n <= len(prompts):
        raise ConfigError(f"{key}={n}: must be between 0 and the {len(prompts)} rows available")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    return [prompts[i] for i in sorted(order[:n])]


def split_off(prompts: list[Prompt], n_heldout: int | None, n_train: int | None,
              seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """(held-out, train) from one list. Held-out rows are drawn first, so they stay put when n_train changes."""
    if n_heldout is None:
        raise ConfigError("task.n_heldout=None: with task.heldout_split=null the held-out rows are split off the "
                          "train rows, so give a number (null would hold out every row)")
    if not 0 <= n_heldout <= len(prompts):
        raise ConfigError(f"task.n_heldout={n_heldout}: must be between 0 and the {len(prompts)} rows available")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    held, rest = order[:n_heldout], order[n_heldout:]
    if n_train is not None:
        if not 0 <= n_train <= len(rest):
            raise ConfigError(f"task.n_train={n_train}: must be between 0 and the {len(rest)} rows left "
                              f"after holding out task.n_heldout={n_heldout}")
        rest = rest[:n_train]
    return [prompts[i] for i in sorted(held)], [prompts[i] for i in sorted(rest)]

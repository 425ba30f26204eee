"""A task made only of config: a data file (Alpaca, ShareGPT or plain columns) plus a template in prompts/.

    rest-loop task=from_file task.source=/data/my_tasks.jsonl task.n_heldout=50

or, for a task of your own, conf/task/my_task.yaml (see conf/task/from_file.yaml for every key):

    _target_: rest_loop.tasks.dataset.DatasetTask
    name: tickets
    source: /data/tickets.jsonl
    format: plain
    fields: {input: body, reference: queue}
    template: tasks/tickets.j2          # sees `input` and every column of the row: {{ customer }}, ...
    n_heldout: 50
    seed: ${seed}
    prompts_dir: ${paths.prompts}
    metric: {_target_: rest_loop.improve.verifiers.LabelMatch, labels: [billing, bugs, sales]}

Rows are read by `formats` into (input, system, context, target, reference); each
becomes a Prompt whose messages are [system] + context + [user: the template
rendered with `variables`, the row's columns and `input`]. A row without a system
prompt gets `system_prompt`.

Held-out prompts come from `heldout_source` (its `heldout_split`); or from the
`heldout_split` of `source` (a folder or hub id with splits); else `n_heldout`
rows of `source` are held out by seed, drawn first so they stay put when n_train
changes. Ids are "<name>-<row>" (0-based row of `source`) and "<name>-heldout-<row>"
(row of `heldout_source`), so a prompt can be traced to its row. A held-out prompt whose
text is a train prompt's stops the task (Task.check_disjoint), unless `allow_overlap`.

Data written for another tool may still hold its placeholders, as LLaMA-Factory's
identity.json does ("I am {{name}}, an AI assistant developed by {{author}}."). They are named
in a warning; with `fill_placeholders` they are filled from `variables` in every text of a row
(input, system, earlier turns, target, reference), and one without a value stops the task.

    >>> task = DatasetTask("tests/data/custom_tickets.jsonl", "prompts", fields={"input": "body", "reference": "queue"},
    ...                    n_heldout=2, name="tickets")
    >>> len(task.heldout), task.heldout[0].id.startswith("tickets-"), task.formats
    (2, True, {'task.source': 'plain'})
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from rest_loop.config import ConfigError, DataError
from rest_loop.records import Prompt
from rest_loop.tasks import formats
from rest_loop.tasks.base import Task
from rest_loop.tasks.data import is_single_file, load_rows, pick, split_off
from rest_loop.templates import TemplateError

log = logging.getLogger(__name__)


class DatasetTask(Task):
    """Prompts from rows of a file, folder or hub dataset; every choice is a config key (conf/task/from_file.yaml)."""

    def __init__(self, source: str, prompts_dir: str, name: str = "dataset", format: str = "auto",
                 fields: dict[str, str | None] | None = None, template: str = "tasks/plain.j2",
                 system_prompt: str | None = None, variables: dict[str, Any] | None = None,
                 source_split: str | None = None, subset: str | None = None, heldout_source: str | None = None,
                 heldout_split: str | None = None, n_train: int | None = None, n_heldout: int | None = None,
                 seed: int = 0, metric=None, on_bad_row: str = "error", allow_overlap: bool = False,
                 fill_placeholders: bool = False):
        super().__init__(template, prompts_dir, system_prompt, metric, allow_overlap)
        self.fill_placeholders = fill_placeholders
        if format not in formats.FORMATS:
            raise ConfigError(f"task.format={format!r}: must be one of {', '.join(formats.FORMATS)}")
        formats.check_on_bad_row(on_bad_row)
        self.name, self.declared, self.on_bad_row, self.subset = name, format, on_bad_row, subset
        self.formats: dict[str, str] = {}  # per source key: the format read (auto resolves per file)
        self.fields = formats.check_fields(plain(fields))
        self.variables = plain(variables) or {}
        self.skipped = 0
        if heldout_source is None and heldout_split is not None:
            if is_single_file(source):
                raise ConfigError(f"task.heldout_split={heldout_split!r}: task.source={source!r} is a single file, "
                                  f"which has no splits; set task.heldout_source=<file> for the held-out rows, "
                                  f"or task.heldout_split=null to hold out task.n_heldout of its rows")
            heldout_source = source
        if heldout_source == source and heldout_split == source_split:
            raise ConfigError(f"task.heldout_source={heldout_source!r} (split {heldout_split!r}) is the train data "
                              f"itself; name another file or split, or leave it null to hold out task.n_heldout rows")
        self.source, self.heldout_source = source, heldout_source
        prompts = self._prompts(source, source_split, "task.source", f"{name}-")
        if heldout_source is not None:
            held = self._prompts(heldout_source, heldout_split, "task.heldout_source", f"{name}-heldout-")
            self.heldout = pick(held, n_heldout, seed, "task.n_heldout")
            self.train = pick(prompts, n_train, seed, "task.n_train")
        else:
            if n_heldout is None:
                raise ConfigError("task.n_heldout=None: without task.heldout_source the held-out rows are split "
                                  "off task.source by seed, so give a number")
            self.heldout, self.train = split_off(prompts, n_heldout, n_train, seed)
        self.check_disjoint()

    def _prompts(self, source: str, split: str | None, key: str, id_prefix: str) -> list[Prompt]:
        rows = load_rows(source, split, name=self.subset, key=key)
        bad = formats.BadRows(source, self.on_bad_row)
        self.formats[key], examples = formats.read(rows, source, self.declared, self.fields, bad=bad)
        if self.fill_placeholders:
            examples = [fill(ex, self.variables, source) for ex in examples]
        else:
            warn_placeholders(examples, source)
        prompts = []
        for ex in examples:
            try:
                prompts.append(self.make_prompt(
                    id=f"{id_prefix}{ex.index}", input=ex.input, reference=ex.reference, target=ex.target,
                    context=ex.context, system=ex.system, columns={**self.variables, **columns(rows[ex.index])}))
            except TemplateError as e:  # names the template file and the variable; `bad` adds the row
                bad.add(ex.index, f"{e}. Give it in the row or in task.variables (the same for every row), or "
                                  f"make it optional in the template with | default('')")
        bad.done(len(rows), len(prompts))
        self.skipped += len(bad.rows)
        return prompts

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source, "heldout_source": self.heldout_source,
                "formats": self.formats, "skipped_rows": self.skipped}


def columns(row: dict[str, Any]) -> dict[str, Any]:
    """A row's present columns as template variables. None stays undefined, so a strict template names a
    column a row lacks (`datasets` gives such a row None) instead of printing "None"."""
    return {k: v for k, v in row.items() if v is not None}


def plain(value: Any) -> Any:
    """Hydra hands nested config as DictConfig/ListConfig; templates and checks want dicts and lists."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")  # {{name}}, {{ author }}: another tool's template slots


def texts(ex: formats.Example) -> dict[str, str]:
    """The texts of a row that reach the model or the reward, by what they are."""
    found = {"input": ex.input, "system": ex.system, "target": ex.target, "reference": ex.reference}
    found.update({f"turn {i + 1}": turn["content"] for i, turn in enumerate(ex.context)})
    return {k: v for k, v in found.items() if v}


def warn_placeholders(examples: list[formats.Example], source: str) -> None:
    """Name the placeholders left in the targets and references (and any other text) of a file, once."""
    rows = {}
    for ex in examples:
        names = {where: PLACEHOLDER.findall(text) for where, text in texts(ex).items()}
        if any(names.values()):
            rows[ex.index] = names
    if not rows:
        return
    every = sorted({n for names in rows.values() for found in names.values() for n in found})
    where = sorted({w for names in rows.values() for w, found in names.items() if found})
    first, names = next(iter(rows.items()))
    field = next(w for w, found in names.items() if found)
    example = texts(next(ex for ex in examples if ex.index == first))[field]
    log.warning("%s: %d rows still hold template placeholders %s in their %s (row %d %s: %r). A model trained "
                "or scored on them learns the braces. To fill them: task.fill_placeholders=true %s", source, len(rows),
                ", ".join("{{%s}}" % n for n in every), "/".join(where), first + 1, field, clip(example),
                " ".join(f"+task.variables.{n}=..." for n in every))


def fill(ex: formats.Example, variables: dict[str, Any], source: str) -> formats.Example:
    """The row with every {{name}} replaced by task.variables.name; a name without a value stops the task."""
    def one(text: str | None, where: str) -> str | None:
        if not text:
            return text

        def value(match: re.Match) -> str:
            name = match.group(1)
            if name not in variables or isinstance(variables[name], (dict, list)):
                raise DataError(f"{source}: row {ex.index + 1}: the {where} holds {{{{{name}}}}} but task.variables "
                                f"gives no text for {name!r} (it has {sorted(variables)}); add it, e.g. "
                                f"+task.variables.{name}=..., or set task.fill_placeholders=false")
            return str(variables[name])

        return PLACEHOLDER.sub(value, text)

    context = [{**turn, "content": one(turn["content"], f"turn {i + 1}")} for i, turn in enumerate(ex.context)]
    return dataclasses.replace(ex, input=one(ex.input, "input"), system=one(ex.system, "system"), context=context,
                               target=one(ex.target, "target"), reference=one(ex.reference, "reference"))


def clip(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."

"""GSM8K grade-school math word problems, the ReST-EM paper's math task, from a file, a folder or the hub.

Each row has a `question` and an `answer` that works the problem with calculator
annotations and ends in a `#### N` line:

    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n...\\n#### 72"

The reference is N with commas dropped, for NumericMatch. The target (the original
solution, ReST's dataset D, mixed in by trainer.mix_original) is the answer with
the `<<...>>` annotations removed and the last line written `#### N`: the template
asks the model to finish that way, so the original data shows the format the
verifier reads rather than a calculator syntax no sample will ever produce.

Held-out prompts come from `heldout_source` if given; else from the `heldout_split`
of `source` (the hub's "test"); else (heldout_split: null) `n_heldout` train rows
are held out by seed. Prompt ids are "gsm8k-<split>-<row index>", 0-based like
`dataset[split][i]`, so a prompt can be traced to its row.

    rest-loop task=gsm8k task.source=/data/gsm8k/train.jsonl task.heldout_source=/data/gsm8k/test.jsonl

    >>> task = GSM8KTask("prompts", source="tests/data/gsm8k_tiny.jsonl", heldout_split=None, n_heldout=4)
    >>> len(task.train), len(task.heldout), task.train[0].target.splitlines()[-1] == "#### " + task.train[0].reference
    (12, 4, True)
"""

from __future__ import annotations

import re

from rest_loop.config import ConfigError, DataError
from rest_loop.records import Prompt
from rest_loop.tasks.base import Task
from rest_loop.tasks.data import is_single_file, load_rows, pick, require_fields, split_off

ANNOTATION = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator calls: "48/2 = <<48/2=24>>24"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_answer(answer: str) -> tuple[str, str] | None:
    """(reference, target) from a GSM8K answer, or None when it has no numeric `#### N` line.

    >>> parse_answer("She sold 48/2 = <<48/2=24>>24 clips.\\n#### 1,024")
    ('1024', 'She sold 48/2 = 24 clips.\\n#### 1024')
    """
    working, marker, final = answer.rpartition("####")
    reference = final.strip().replace(",", "")
    if not marker or not NUMBER.fullmatch(reference):
        return None
    steps = "\n".join(line.rstrip() for line in ANNOTATION.sub("", working).strip().splitlines())
    return reference, (f"{steps}\n#### {reference}" if steps else f"#### {reference}")


class GSM8KTask(Task):
    name = "gsm8k"

    def __init__(self, prompts_dir: str, seed: int = 0, source: str = "openai/gsm8k", subset: str | None = "main",
                 train_split: str = "train", heldout_split: str | None = "test", heldout_source: str | None = None,
                 n_train: int | None = None, n_heldout: int | None = None, template: str = "tasks/gsm8k.j2",
                 system_prompt: str | None = None, metric=None, allow_overlap: bool = False):
        super().__init__(template, prompts_dir, system_prompt, metric, allow_overlap)
        self.source, self.heldout_source = source, heldout_source
        rows = self._prompts(source, train_split, subset, "task.source")
        if heldout_source is not None:
            held = self._prompts(heldout_source, heldout_split, subset, "task.heldout_source")
            self.heldout = pick(held, n_heldout, seed, "task.n_heldout")
            self.train = pick(rows, n_train, seed, "task.n_train")
        elif heldout_split is not None:
            if is_single_file(source):
                raise ConfigError(f"task.heldout_split={heldout_split!r}: task.source={source!r} is a single file, "
                                  f"which has no splits; set task.heldout_source=<file> for the held-out rows, "
                                  f"or task.heldout_split=null to hold out task.n_heldout of its rows")
            held = self._prompts(source, heldout_split, subset, "task.source")
            self.heldout = pick(held, n_heldout, seed, "task.n_heldout")
            self.train = pick(rows, n_train, seed, "task.n_train")
        else:
            self.heldout, self.train = split_off(rows, n_heldout, n_train, seed)
        self.check_disjoint()

    def _prompts(self, source: str, split: str | None, subset: str | None, key: str) -> list[Prompt]:
        rows = load_rows(source, split, name=subset, key=key)
        require_fields(rows, ["question", "answer"], source)
        label = split or "heldout"
        prompts = []
        for i, row in enumerate(rows):
            parsed = parse_answer(str(row["answer"]))
            if parsed is None:
                raise DataError(f"{source}: row {i + 1}: the answer has no final '#### <number>' line: "
                                f"...{str(row['answer'])[-60:]!r}. Fix the row, or drop it from the file")
            reference, target = parsed
            prompts.append(self.make_prompt(id=f"gsm8k-{label}-{i}", input=str(row["question"]).strip(),
                                            reference=reference, target=target))
        return prompts

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source, "heldout_source": self.heldout_source}



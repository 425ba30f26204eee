"""Two-digit arithmetic word problems, generated from a seed, with exact answers.

The demo task: a verifiable reward (numeric match) gives ReST-EM a clean signal
on a model too small to judge. Train and held-out problems never share an
operand pair, so held-out accuracy measures skill, not recall.

    >>> task = ArithmeticTask(n_train=3, n_heldout=2, seed=0, prompts_dir="prompts")
    >>> len(task.train), len(task.heldout), task.train[0].reference.isdigit()
    (3, 2, True)
"""

from __future__ import annotations

import random

from rest_loop.config import ConfigError
from rest_loop.tasks.base import Task

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam"]
ITEMS = ["apple", "marble", "sticker", "book", "coin", "shell", "card", "pencil", "stamp", "cookie"]
FRAMES = {
    "+": [
        "{name} has {a} {item}s and gets {b} more. How many {item}s does {name} have now?",
        "A shop sold {a} {item}s in the morning and {b} in the afternoon. How many {item}s did it sell in total?",
        "There are {a} {item}s in one box and {b} in another. How many {item}s are there altogether?",
        "What is {a} + {b}?",
    ],
    "-": [
        "{name} has {a} {item}s and gives away {b}. How many {item}s are left?",
        "What is {a} - {b}?",
    ],
}
APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}


class ArithmeticTask(Task):
    name = "arithmetic"

    def __init__(self, n_train: int, n_heldout: int, seed: int, prompts_dir: str,
                 template: str = "tasks/arithmetic.j2", ops: tuple[str, ...] = ("+",),
                 low: int = 10, high: int = 99, system_prompt: str | None = None, metric=None,
                 allow_overlap: bool = False):
        super().__init__(template, prompts_dir, system_prompt, metric, allow_overlap)
        unknown = set(ops) - set(FRAMES)
        if unknown:
            raise ConfigError(f"task.ops: unknown operators {sorted(unknown)}; known: {sorted(FRAMES)}")
        pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
        if n_train + n_heldout > len(pairs):
            raise ConfigError(f"task.n_train + task.n_heldout = {n_train + n_heldout} exceeds the "
                             f"{len(pairs)} distinct operand pairs in [{low}, {high}]")
        rng = random.Random(seed)
        rng.shuffle(pairs)
        # Held-out problems are drawn first, so they stay the same when n_train changes (a sweep over it).
        problems = [self._problem(rng, rng.choice(ops), a, b) for a, b in pairs[: n_heldout + n_train]]
        self.heldout, self.train = problems[:n_heldout], problems[n_heldout:]
        self.check_disjoint()

    def _problem(self, rng: random.Random, op: str, a: int, b: int):
        if op == "-" and b > a:
            a, b = b, a  # keep answers non-negative
        question = rng.choice(FRAMES[op]).format(a=a, b=b, name=rng.choice(NAMES), item=rng.choice(ITEMS))
        answer = str(APPLY[op](a, b))  # the template asks for just the number: that is also the original target
        return self.make_prompt(id=f"{a}{op}{b}", input=question, reference=answer, target=answer)

"""Multi-hop questions about a seeded offline world (rest_loop/agent/world.py), for the search agent.

The world (corpus.jsonl, questions.jsonl, world.json) is built in `world_dir`, or reused when the
files there are exactly what the seed gives. `self.corpus` is the corpus path the search tool reads;
the config names it too (`corpus: ${task.world_dir}/corpus.jsonl`) so that `${task.corpus}` resolves.

Held-out and train questions are about different people: people are taken into a held-out group,
in seeded order, until the questions whose every support article is about someone in the group
are enough for `n_heldout`; train questions are those whose every support article is about
someone outside it. Only if that leaves fewer than `n_train` are questions that merely name
someone outside the group added (their second hop may be a held-out person), with a warning.

    rest-loop task=multihop env=search

    >>> import tempfile
    >>> task = MultiHopTask(seed=0, n_people=12, n_train=4, n_heldout=3, hops=[2],
    ...                     world_dir=tempfile.mkdtemp(), prompts_dir="prompts")
    >>> len(task.train), len(task.heldout), len(task.heldout[0].support)
    (4, 3, 2)
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rest_loop.agent.world import Question, make_world
from rest_loop.config import ConfigError
from rest_loop.records import Prompt
from rest_loop.tasks.base import Task

log = logging.getLogger(__name__)


class MultiHopTask(Task):
    name = "multihop"

    def __init__(self, seed: int, n_people: int, n_train: int, n_heldout: int, world_dir: str, prompts_dir: str,
                 hops: list[int] | tuple[int, ...] = (1, 2), corpus: str | None = None,
                 template: str = "tasks/question.j2", system_prompt: str | None = None, metric=None,
                 allow_overlap: bool = False):
        super().__init__(template, prompts_dir, system_prompt, metric, allow_overlap)
        hops = sorted({int(h) for h in hops})  # Hydra hands a ListConfig
        if not hops or not set(hops) <= {1, 2}:
            raise ConfigError(f"task.hops={hops}: must be a non-empty list of 1 and/or 2")
        for key, n in (("n_train", n_train), ("n_heldout", n_heldout)):
            if not isinstance(n, int) or n < 0:
                raise ConfigError(f"task.{key}={n!r}: must be a whole number >= 0")
        try:
            world = make_world(seed, n_people)
        except ValueError as e:
            raise ConfigError(f"task.n_people={n_people}: {e}") from None
        folder = Path(world_dir).expanduser()
        self.world_dir, self.corpus = str(folder), str(folder / "corpus.jsonl")
        if corpus is not None and Path(corpus).expanduser().resolve() != Path(self.corpus).resolve():
            raise ConfigError(f"task.corpus={corpus!r}: must be the world's corpus {self.corpus!r} "
                              f"(leave it as ${{task.world_dir}}/corpus.jsonl)")
        if not world.matches(folder):  # a world of this seed and size, written by this generator version
            world.write(folder)
        self.world = world
        questions = [q for q in world.questions if q.hops in hops]
        held, train = split(questions, [p.id for p in world.people], n_heldout, n_train, seed)
        self.heldout, self.train = [self.prompt(q) for q in held], [self.prompt(q) for q in train]
        self.check_disjoint()

    def prompt(self, q: Question) -> Prompt:
        prompt = self.make_prompt(id=f"multihop-{q.id}", input=q.question, reference=q.answer)
        prompt.aliases, prompt.support = list(q.aliases), list(q.support)
        return prompt

    def describe(self) -> dict:
        return {**super().describe(), "corpus": self.corpus, "docs": len(self.world.docs)}


def split(questions: list[Question], people: list[str], n_heldout: int, n_train: int,
          seed: int) -> tuple[list[Question], list[Question]]:
    """(held-out, train): see the module docstring. Held-out is drawn first, so it stays put when n_train changes."""
    rng = random.Random(f"{seed}-multihop-split")
    group: set[str] = set()
    for person in rng.sample(people, len(people)):
        if sum(set(q.support) <= group for q in questions) >= n_heldout:
            break
        group.add(person)
    pool = [q for q in questions if set(q.support) <= group]
    if len(pool) < n_heldout:
        raise ConfigError(f"task.n_heldout={n_heldout}: the world has only {len(pool)} questions of these hops; "
                          f"lower it or raise task.n_people")
    held = rng.sample(pool, n_heldout)
    train_pool = [q for q in questions if not set(q.support) & group]
    if len(train_pool) < n_train:
        extra = [q for q in questions if q.subject not in group and set(q.support) & group]
        log.warning("task multihop: only %d train questions avoid every held-out person; adding %d whose second "
                    "hop is one", len(train_pool), min(len(extra), n_train - len(train_pool)))
        train_pool += rng.sample(extra, min(len(extra), n_train - len(train_pool)))
    if len(train_pool) < n_train:
        raise ConfigError(f"task.n_train={n_train}: only {len(train_pool)} questions are about people outside the "
                          f"held-out ones; lower it or raise task.n_people")
    train = rng.sample(train_pool, n_train) if n_train < len(train_pool) else train_pool
    return held, train

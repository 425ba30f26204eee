"""The seeded multi-hop world and its task: determinism, answers stated in their support, disjoint splits."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest
from hydra.utils import instantiate

from rest_loop.agent import world as world_module
from rest_loop.agent.world import load_world, make_world
from rest_loop.config import ConfigError
from rest_loop.tasks import multihop
from rest_loop.tasks.multihop import MultiHopTask
from tests.conftest import compose_config

FILES = ["corpus.jsonl", "questions.jsonl", "world.json"]


def task(tmp_path, **kw):
    args = {"seed": 0, "n_people": 40, "n_train": 100, "n_heldout": 40, "hops": [1, 2],
            "world_dir": str(tmp_path / "world"), "prompts_dir": "prompts", **kw}
    return MultiHopTask(**args)


@pytest.mark.parametrize("seed,n_people", [(0, 40), (1, 40), (7, 12), (3, 100)])
def test_same_seed_same_bytes(seed, n_people, tmp_path):
    make_world(seed, n_people).write(tmp_path / "a")
    make_world(seed, n_people).write(tmp_path / "b")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert make_world(seed + 1, n_people).files()["corpus.jsonl"] != make_world(seed, n_people).files()["corpus.jsonl"]


def test_same_bytes_in_another_process():
    """No dependence on hash order (PYTHONHASHSEED) or anything else a new interpreter changes."""
    code = "from rest_loop.agent.world import make_world; import sys; sys.stdout.write(make_world(5).files()['{}'])"
    for name in ("corpus.jsonl", "questions.jsonl"):
        out = subprocess.run([sys.executable, "-c", code.format(name)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
        assert out == make_world(5).files()[name]


@pytest.mark.parametrize("seed,n_people", [(0, 40), (1, 40), (2, 12), (3, 100)])
def test_every_answer_is_stated_in_its_support(seed, n_people):
    world = make_world(seed, n_people)
    docs = {d.id: d for d in world.docs}
    assert len(docs) == len(world.docs) == n_people and len({d.title for d in world.docs}) == n_people
    assert len({q.id for q in world.questions}) == len(world.questions)
    for q in world.questions:
        assert q.hops == len(q.support) and set(q.support) <= set(docs) and q.support[0] == q.subject
        assert docs[q.subject].title in q.question
        last = docs[q.support[-1]].text
        assert any(gold in last for gold in [q.answer, *q.aliases]), q
        if q.hops == 2:  # the first article names the bridge person, whose article holds the answer
            assert docs[q.support[1]].title in docs[q.support[0]].text, q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_hop_questions_need_both_docs(seed):
    world = make_world(seed)
    docs = {d.id: d for d in world.docs}
    two = [q for q in world.questions if q.hops == 2]
    assert len(two) > len(world.people)  # plenty of them
    for q in two:
        assert q.support[0] != q.support[1]
        assert q.answer not in docs[q.support[0]].text, q  # the subject's own article does not give it


def test_the_world_loads_back(tmp_path):
    world = make_world(4, 20)
    world.write(tmp_path)
    assert load_world(tmp_path) == world and world.matches(tmp_path)
    assert not make_world(5, 20).matches(tmp_path)


def test_too_many_people_is_an_error():
    with pytest.raises(ValueError, match="name lists run out"):
        make_world(0, 10_000)


def test_splits_are_disjoint_in_prompts_and_people(tmp_path):
    t = task(tmp_path)
    assert (len(t.train), len(t.heldout)) == (100, 40)
    assert not {p.id for p in t.train} & {p.id for p in t.heldout}
    train_people = {d for p in t.train for d in p.support}
    held_people = {d for p in t.heldout for d in p.support}
    assert not train_people & held_people  # at this size no train question touches a held-out person
    assert {len(p.support) for p in t.heldout + t.train} == {1, 2}


def test_prompts_carry_answers_aliases_and_support(tmp_path):
    t = task(tmp_path)
    by_id = {q.id: q for q in t.world.questions}
    for p in t.train + t.heldout:
        q = by_id[p.id.removeprefix("multihop-")]
        assert (p.reference, p.aliases, p.support, p.input) == (q.answer, q.aliases, q.support, q.question)
        assert p.messages == [{"role": "user", "content": q.question}]  # tasks/question.j2: just the question
    assert any(p.aliases for p in t.train)


def test_heldout_stays_when_n_train_changes(tmp_path):
    a, b = task(tmp_path, n_train=50), task(tmp_path, n_train=120)
    assert [p.id for p in a.heldout] == [p.id for p in b.heldout]


@pytest.mark.parametrize("hops", [[1], [2], [2, 1]])
def test_hops_pick_the_questions(hops, tmp_path):
    t = task(tmp_path, hops=hops, n_train=30, n_heldout=20)
    assert {len(p.support) for p in t.train + t.heldout} == set(hops)


def test_the_world_is_written_once_and_reused(tmp_path):
    t = task(tmp_path)
    stamps = {n: os.stat(os.path.join(t.world_dir, n)).st_mtime_ns for n in FILES}
    again = task(tmp_path)
    assert {n: os.stat(os.path.join(t.world_dir, n)).st_mtime_ns for n in FILES} == stamps
    assert again.corpus == t.corpus == os.path.join(t.world_dir, "corpus.jsonl")
    with open(t.corpus, "a") as f:
        f.write("{}\n")  # a stale or damaged world is rebuilt
    task(tmp_path)
    assert make_world(0, 40).matches(t.world_dir)


@pytest.mark.parametrize("kw,message", [
    ({"corpus": "/elsewhere/corpus.jsonl"}, "task.corpus='/elsewhere/corpus.jsonl': must be the world's corpus"),
    ({"hops": [3]}, "task.hops=[3]: must be a non-empty list of 1 and/or 2"),
    ({"n_heldout": 10_000}, "task.n_heldout=10000: the world has only"),
    ({"n_train": 10_000}, "task.n_train=10000: only"),
    ({"n_train": -1}, "task.n_train=-1: must be a whole number >= 0"),
    ({"n_people": 1}, "task.n_people=1: n_people=1: a world needs at least 2 people"),
])
def test_bad_config(kw, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        task(tmp_path, **kw)


def test_small_worlds_fall_back_to_sharing_second_hops(tmp_path, caplog):
    t = task(tmp_path, n_people=12, n_train=85, n_heldout=30)  # 77 train questions avoid the held-out people
    held = {d for p in t.heldout for d in p.support}
    assert all(p.support[0] not in held for p in t.train)  # subjects stay apart
    assert "avoid every held-out person" in caplog.text


def test_the_configs_build_the_tasks(tmp_path):
    cfg = compose_config("task=multihop", f"paths.cache={tmp_path}", "task.n_people=20", "task.n_train=40",
                         "task.n_heldout=20")
    t = instantiate(cfg.task)
    assert cfg.task.corpus == t.corpus == f"{tmp_path}/worlds/multihop_s{cfg.seed}_p20/corpus.jsonl"
    assert t.metric.name == "answer_normalised" and os.path.isfile(t.corpus)
    arithmetic = instantiate(compose_config("task=arithmetic_agent").task)
    assert (len(arithmetic.train), len(arithmetic.heldout)) == (60, 60)
    prompt = arithmetic.train[0]
    assert prompt.messages == [{"role": "user", "content": prompt.input}]  # no "reply with just the number"


@pytest.mark.parametrize("module", [world_module, multihop])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0

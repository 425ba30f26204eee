"""Prompt synthesis without a model: decks, requests, parsing, dedup, the diversity report and the dataset file.

The generator's replies are written here by hand; the dataset is read back with the real
`task=from_file` reader (DatasetTask).
"""

from __future__ import annotations

import doctest
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from rest_loop.config import ConfigError, DataError
from rest_loop.synth import decks, dedup as dedup_module, parse as parse_module, prompt
from rest_loop.synth.decks import Deck, check_decks
from rest_loop.synth.dedup import dedup, normalise, rouge_l, tokens
from rest_loop.synth.files import DATASET, load_seeds, save
from rest_loop.synth.parse import parse, rows, tally
from rest_loop.synth.prompt import build_requests
from rest_loop.synth.records import Request, SynthRow
from rest_loop.synth.report import report
from rest_loop.tasks.dataset import DatasetTask
from rest_loop.tasks.formats import Example

DATA = Path(__file__).parent / "data"
PROMPTS = str(Path(__file__).parents[1] / "prompts")


@pytest.mark.parametrize("module", [decks, prompt, parse_module, dedup_module])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


# --- decks ---------------------------------------------------------------------------------------------------

def test_a_deck_deals_every_entry_once_before_any_repeats():
    entries = [f"e{i}" for i in range(7)]
    deck = Deck(entries, seed=3, name="topic")
    cards = [deck.deal(i)[0] for i in range(70)]
    for c in range(10):  # each cycle of 7 requests is the whole list
        assert sorted(cards[7 * c:7 * c + 7]) == entries
    assert set(Counter(cards).values()) == {10}
    assert len({tuple(cards[7 * c:7 * c + 7]) for c in range(10)}) > 1  # reshuffled each cycle, not one order


def test_a_deal_is_a_pure_function_of_seed_name_and_index():
    entries = list(range(11))
    first = [Deck(entries, seed=0, name="topic").deal(i) for i in range(40)]
    assert Deck(entries, seed=0, name="topic").deal(37) == first[37]  # no replay of 0..36 needed
    assert [Deck(entries, seed=1, name="topic").deal(i) for i in range(40)] != first
    assert [Deck(entries, seed=0, name="mood").deal(i) for i in range(40)] != first  # decks shuffle apart


@pytest.mark.parametrize("n,k", [(10, 3), (7, 4), (9, 3), (5, 5), (20, 6)])
def test_hands_never_repeat_an_entry_and_spread_evenly(n, k):
    deck = Deck(range(n), seed=0, name="examples", hand=k)
    hands = [deck.deal(i) for i in range(50)]
    assert all(len(set(h)) == k for h in hands)
    cards = [c for h in hands for c in h]
    for c in range(len(cards) // n):  # every seed shown once per cycle of n cards
        assert sorted(cards[c * n:(c + 1) * n]) == list(range(n))
    counts = Counter(cards)
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("items,hand,match", [
    ([], 1, r"synth.decks.topic: the list is empty"),
    (["a", "b"], 3, r"a hand of 3 from 2 entries; it must be 1 to 2"),
    (["a", "b", "c", "d", "e"], 4, r"a multiple of 4 or at least 6"),
])
def test_deck_bad_settings_name_the_key(items, hand, match):
    with pytest.raises(ConfigError, match=match):
        Deck(items, seed=0, name="topic", hand=hand)


@pytest.mark.parametrize("given,match", [
    ({"topic": []}, r"synth.decks.topic=\[\]: must be a non-empty list"),
    ({"topic": "birds"}, r"synth.decks.topic='birds'"),
    ({"topic": ["birds", 3]}, r"synth.decks.topic\[1\]=3: must be a non-empty string"),
    ({"topic": ["birds", "  "]}, r"synth.decks.topic\[1\]"),
    ({"topic": ["Birds", "cars", "birds "]}, r"synth.decks.topic\[2\]='birds ' repeats entry 0"),
])
def test_deck_config_is_checked(given, match):
    with pytest.raises(ConfigError, match=match):
        check_decks(given)


# --- requests --------------------------------------------------------------------------------------------------

SEEDS = [Example(10 + i, f"Seed question number {i}?", reference=f"answer {i}") for i in range(6)]
DECKS = {"occupation": ["baker", "pilot", "nurse"], "difficulty": ["easy", "hard"]}


def test_requests_record_the_examples_shown_and_the_attributes_dealt():
    reqs = build_requests(SEEDS, DECKS, k=2, n=12, seed=0, prompts_dir=PROMPTS, count=4)
    assert [r.index for r in reqs] == list(range(12))
    for r in reqs:
        text = r.messages[-1]["content"]
        assert len(r.examples) == 2 and all(10 <= j < 16 for j in r.examples)  # the seeds' own rows
        for j in r.examples:
            assert f"Seed question number {j - 10}?" in text
        assert f"occupation: {r.attributes['occupation']}" in text
        assert f"difficulty: {r.attributes['difficulty']}" in text
        assert "Write 4 new tasks" in text and r.count == 4 and r.template.startswith("synth/inputs.j2@")
        assert "answer" not in text and "mistakes" not in text  # no references asked for, no review yet
    assert Counter(r.attributes["occupation"] for r in reqs) == {"baker": 4, "pilot": 4, "nurse": 4}
    assert Counter(j for r in reqs for j in r.examples) == {j: 4 for j in range(10, 16)}


def test_requests_resume_where_they_stopped():
    whole = build_requests(SEEDS, DECKS, k=3, n=10, seed=5, prompts_dir=PROMPTS)
    assert build_requests(SEEDS, DECKS, k=3, n=4, seed=5, prompts_dir=PROMPTS, start=6) == whole[6:]


def test_the_prompt_shows_references_and_mistakes_when_asked():
    [r] = build_requests(SEEDS, {}, k=2, n=1, seed=0, prompts_dir=PROMPTS, with_reference=True, count=1,
                         mistakes=["asks two questions at once"], system_prompt="Be careful.")
    system, user = r.messages
    text = user["content"]
    assert system == {"role": "system", "content": "Be careful."}
    assert text.count("Reference answer: answer") == 2 and "Write 1 new task " in text
    assert "avoid them:\n- asks two questions at once" in text and '"reference"' in text
    assert r.attributes == {} and "Shape them around" not in text


@pytest.mark.parametrize("kw,match", [
    ({"seeds": []}, "synth.seeds: no seed examples"),
    ({"k": 7}, "synth.k=7 with 6 seed rows: a hand of 7"),
    ({"count": 0}, "synth.count=0"),
    ({"decks": {"examples": ["a"]}}, "synth.decks.examples: the name is taken"),
    ({"template": "synth/nope.j2"}, "template 'synth/nope.j2' not found"),
])
def test_bad_request_settings_name_the_key(kw, match):
    args = {"seeds": SEEDS, "decks": DECKS, "k": 2, "n": 1, "seed": 0, "prompts_dir": PROMPTS, **kw}
    with pytest.raises(ConfigError, match=match):
        build_requests(**args)


# --- parsing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,status,form,items", [
    ('["Name a river.", "Name a lake."]', "ok", "json", [("ok", "Name a river.", None), ("ok", "Name a lake.", None)]),
    ('Here you go:\n```json\n[{"input": " Add 2 and 3. ", "reference": 5}]\n```\nEnjoy!', "ok", "json",
     [("ok", "Add 2 and 3.", "5")]),
    ('{"tasks": ["One?", "", {"question": "x"}, 7, {"input": ["a"]}]}', "ok", "json",
     [("ok", "One?", None), ("empty", "", None), ("invalid", "", None), ("invalid", "", None),
      ("invalid", "", None)]),
    ('["One?", "Two?", "Thr', "partial", "json", [("ok", "One?", None), ("ok", "Two?", None)]),
    ('```json\n[{"input": "One?"}, {"input": "Tw\n```', "partial", "json", [("ok", "One?", None)]),
    ('["One?", "Two?", oops, "Four?"]', "partial", "json", [("ok", "One?", None), ("ok", "Two?", None)]),
    ("1. Name a bird.\n2) Name a tree\nthat grows in sand.\n   Answer: palm\n3: Name a fish.\n\nHope it helps!",
     "ok", "numbered", [("ok", "Name a bird.", None), ("ok", "Name a tree\nthat grows in sand.", "palm"),
                        ("ok", "Name a fish.", None)]),
    ("I wrote [2] tasks:\n1. First task.\n2. Second task.", "ok", "numbered",
     [("ok", "First task.", None), ("ok", "Second task.", None)]),
    ("In 2024 things changed.\n2. Not a list from 1.", "unparsed", None, []),
    ("I cannot help with that.", "unparsed", None, []),
    ("   \n", "empty", None, []),
    (None, "empty", None, []),
])
def test_parse_table(reply, status, form, items):
    p = parse(reply)
    assert (p.status, p.form) == (status, form)
    assert [(i.status, i.input, i.reference) for i in p.items] == items
    assert all(i.reason for i in p.items if i.status != "ok")
    assert bool(p.reason) == (status != "ok")


def test_rows_are_only_what_the_reply_holds_and_the_shortfall_is_counted():
    reqs = [Request(i, [3, 5], {"topic": t}, [], 3, "synth/inputs.j2@abc") for i, t in enumerate(["a", "b", "c"])]
    replies = [parse('["One?", "", "Three?"]'), parse("no list here"), parse('["A?", "B?", "C?", "D?"]')]
    made = [row for r, p in zip(reqs, replies) for row in rows(r, p, "teacher-1b")]
    assert [(r.id, r.input, r.item) for r in made] == [
        ("synth-0-0", "One?", 0), ("synth-0-2", "Three?", 2), ("synth-2-0", "A?", 0), ("synth-2-1", "B?", 1),
        ("synth-2-2", "C?", 2), ("synth-2-3", "D?", 3)]
    assert made[0].examples == [3, 5] and made[0].attributes == {"topic": "a"} and made[0].generator == "teacher-1b"
    assert made[0].scores is None and made[0].template == "synth/inputs.j2@abc"
    made[0].examples.append(9)
    assert reqs[0].examples == [3, 5]  # rows hold copies of the lineage
    t = tally(reqs, replies)
    assert t == {"requests": 3, "asked": 9, "rows": 6, "replies": {"ok": 2, "unparsed": 1}, "forms": {"json": 2},
                 "items": {"ok": 6, "empty": 1}, "missing": 1 + 3, "extra": 1}


# --- dedup -----------------------------------------------------------------------------------------------------

def row(i, text):
    return SynthRow(f"r{i}", text, None, "gen", "t", i, 0, [], {})


@pytest.mark.parametrize("a,b,score", [
    ("the cat sat on the mat".split(), "the cat sat on the mat".split(), 1.0),
    ("a b c d".split(), "a c d".split(), 6 / 7),
    ("a b c".split(), "x y z".split(), 0.0),
    ([], ["a"], 0.0),
    ("a b c d".split(), "d c b a".split(), 0.25),  # order matters: not a bag of words
])
def test_rouge_l(a, b, score):
    assert rouge_l(a, b) == pytest.approx(score)
    assert rouge_l(b, a) == pytest.approx(score)


BASE = "Explain how a heat pump moves warmth from cold outdoor air into a house in winter."
DEDUP_TABLE = [  # (text, kept?, the stage that drops it)
    (BASE, True, None),
    ("explain how a HEAT PUMP moves warmth from cold outdoor air into a house in winter.", False, "exact"),
    ("Explain how a heat pump moves warmth from cold outdoor air into a house in winter?!", False, "near"),
    ("Explain, how a heat-pump moves warmth from cold outdoor air into a house, in winter", False, "near"),
    ("Explain how a heat pump moves warmth from cold outdoor air into a home in winter.", False, "near"),
    ("Explain   how a heat pump moves\nwarmth from cold outdoor air into a house in winter.", False, "exact"),
    ("Write a limerick about a cat who learns to play the violin badly.", True, None),
    ("Write a short sonnet about a lighthouse keeper and her lonely winter nights.", True, None),
    ("List four causes of the French Revolution and rank them by importance.", True, None),
    ("What is the capital city of Australia?", False, "exact_heldout"),
    ("Which year did the Berlin Wall fall, and why did it fall?", False, "near_heldout"),
    ("Give three tips for staying healthy.", False, "exact_seeds"),
    ("Give three tips for staying healthy!!", False, "near_seeds"),
    ("How many bones are in the adult human hand?", True, None),
]
HELDOUT = ["What is the capital city of Australia?", "In which year did the Berlin Wall fall, and why did it fall?"]
SEED_TEXTS = ["Give three tips for staying healthy."]


def test_dedup_table():
    texts = [t for t, _, _ in DEDUP_TABLE]
    kept, stages = dedup([row(i, t) for i, t in enumerate(texts)], against={"seeds": SEED_TEXTS, "heldout": HELDOUT})
    assert [r.input for r in kept] == [t for t, k, _ in DEDUP_TABLE if k]
    by_stage = {s["stage"]: {d["id"] for d in s["dropped"]} for s in stages}
    for i, (_, k, where) in enumerate(DEDUP_TABLE):
        if not k:
            assert f"r{i}" in by_stage[where], (i, where, by_stage)
    assert [s["stage"] for s in stages] == ["exact", "exact_seeds", "exact_heldout", "near_seeds", "near_heldout",
                                            "near"]
    assert all(a["out"] == b["in"] for a, b in zip(stages, stages[1:]))
    near = next(s for s in stages if s["stage"] == "near")
    assert all(d["like"] == "r0" and 0.7 <= d["score"] < 1.0 or d["score"] == 1.0 for d in near["dropped"])
    heldout = next(s for s in stages if s["stage"] == "exact_heldout")["dropped"]
    assert heldout == [{"id": "r9", "like": "heldout[0]", "score": 1.0}]


def test_the_threshold_is_the_line():
    """The same words, three moved to the front: an LCS of 7 in 10 (the bands surely pair them)."""
    a, b = "one two three four five six seven eight nine ten", "eight nine ten one two three four five six seven"
    score = rouge_l(tokens(a), tokens(b))
    assert score == pytest.approx(0.7)
    assert len(dedup([row(0, a), row(1, b)], threshold=0.7)[0]) == 1
    assert len(dedup([row(0, a), row(1, b)], threshold=0.71)[0]) == 2


def sentences(n: int, seed: int) -> list[str]:
    """n distinct sentences of 12 words drawn from 400: any two share little."""
    rng = random.Random(seed)
    vocab = [f"word{i}" for i in range(400)]
    return [" ".join(rng.sample(vocab, 12)) for _ in range(n)]


def test_no_held_out_prompt_survives_among_many_rows():
    """Planted among 1,500 distinct rows: 60 held-out prompts copied, recased, repunctuated, one word changed."""
    rng = random.Random(1)
    heldout = sentences(60, seed=7)
    distinct = sentences(1500, seed=8)
    planted = []
    for i, h in enumerate(heldout):
        words = h.split()
        kind = i % 4
        if kind == 1:
            h = h.upper()
        elif kind == 2:
            h = ", ".join(words[:6]) + "; " + " ".join(words[6:]) + "?"
        elif kind == 3:
            words[rng.randrange(12)] = "changed"
            h = " ".join(words)
        planted.append(h)
    texts = distinct[:]
    for h in planted:
        texts.insert(rng.randrange(len(texts)), h)
    kept, stages = dedup([row(i, t) for i, t in enumerate(texts)], against={"heldout": heldout})
    assert {r.input for r in kept} == set(distinct)  # every planted row gone, no distinct row lost
    dropped = {s["stage"]: s["in"] - s["out"] for s in stages}
    assert dropped == {"exact": 0, "exact_heldout": 30, "near_heldout": 30, "near": 0}  # copies and recased: exact


def test_near_duplicates_within_many_rows_are_found():
    distinct = sentences(2000, seed=3)
    rng = random.Random(4)
    texts = distinct[:]
    for s in distinct[:200]:  # a one-word change of 200 of them, placed after their original
        words = s.split()
        words[rng.randrange(12)] = "other"
        texts.append(" ".join(words))
    kept, stages = dedup([row(i, t) for i, t in enumerate(texts)])
    assert [r.input for r in kept] == distinct
    near = stages[-1]
    assert near["in"] - near["out"] == 200 and len(near["dropped"]) == 20
    assert near["compared"] < 3 * len(texts)  # LSH hands ROUGE-L a few candidates a row, not the pool


def test_normalise():
    assert normalise("  Ｈｅｌｌｏ\tWORLD \n") == "hello world"  # NFKC folds full-width letters
    assert tokens("Heat-pump, ok?") == ["heat", "pump", "ok"]


# --- report and the dataset file ------------------------------------------------------------------------------

def synth_rows():
    reqs = build_requests(SEEDS, DECKS, k=2, n=6, seed=0, prompts_dir=PROMPTS, count=2, with_reference=True)
    texts = iter(sentences(12, seed=11))
    replies = [parse(json.dumps([{"input": f"{next(texts)} ({r.attributes['occupation']})",
                                  "reference": f"ref {r.index}-{j}"} for j in range(2)])) for r in reqs]
    return reqs, replies, [x for r, p in zip(reqs, replies) for x in rows(r, p, "gen")]


def test_report_counts_attributes_and_rates():
    _, _, made = synth_rows()
    made.append(SynthRow("dup", made[0].input + "!", None, "gen", "t", 9, 0, [10], {"occupation": "baker"}))
    kept, stages = dedup(made, against={"heldout": [made[3].input]})
    summary = report(kept, stages, {**DECKS, "occupation": DECKS["occupation"] + ["astronaut"]}, seeds=8)
    assert summary["rows"] == 11 and summary["reached_dedup"] == 13
    assert summary["attributes"]["occupation"]["astronaut"] == 0  # dealt to none: shown as a zero bar
    assert sum(summary["attributes"]["difficulty"].values()) == 11
    assert summary["distinct"] == {"occupation": 3, "difficulty": 2}
    assert summary["examples_shown"] == {"distinct": 6, "min": 0, "max": 4}
    assert summary["near_duplicate_rate"] == round(1 / 13, 4) and summary["duplicate_rate"] == round(1 / 13, 4)
    assert summary["leaked"] == {"exact_heldout": 1, "near_heldout": 0}
    assert 0 < summary["distinct_2"] <= 1 and summary["mean_chars"] > 20


def test_the_dataset_is_read_by_task_from_file(tmp_path):
    reqs, replies, made = synth_rows()
    kept, stages = dedup(made, against={"seeds": [s.input for s in SEEDS]})
    summary = report(kept, stages, DECKS, seeds=len(SEEDS))
    save(tmp_path, kept, {"parse": tally(reqs, replies), "dedup": stages}, summary)
    assert (tmp_path / "diversity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "diversity.json").read_text())["rows"] == 12
    assert json.loads((tmp_path / "stats.json").read_text())["parse"]["rows"] == 12
    lines = [json.loads(x) for x in (tmp_path / DATASET).read_text().splitlines()]
    assert lines[0]["examples"] and lines[0]["attributes"] and lines[0]["scores"] is None
    task = DatasetTask(str(tmp_path / DATASET), PROMPTS, name="synth", fields={"reference": "reference"}, n_heldout=2)
    assert task.formats == {"task.source": "plain"}
    got = {p.id: p for p in task.train + task.heldout}
    assert len(got) == 12
    for i, r in enumerate(kept):
        assert got[f"synth-{i}"].input == r.input and got[f"synth-{i}"].reference == r.reference


@pytest.mark.parametrize("name", ["alpaca_mixed.json", "sharegpt_chats.jsonl", "custom_tickets.jsonl"])
def test_seeds_in_every_format_the_tasks_read(name):
    fields = {"input": "body", "reference": "queue"} if name == "custom_tickets.jsonl" else None
    seeds = load_seeds(str(DATA / name), fields=fields)
    assert seeds and all(s.input.strip() for s in seeds)
    [r] = build_requests(seeds, {}, k=2, n=1, seed=0, prompts_dir=PROMPTS)
    assert all(next(s for s in seeds if s.index == j).input in r.messages[-1]["content"] for j in r.examples)


def test_a_bad_seed_row_names_the_file_and_row():
    with pytest.raises(DataError, match=r"sharegpt_some_bad.jsonl: row 2: .*synth.on_bad_row=skip"):
        load_seeds(str(DATA / "sharegpt_some_bad.jsonl"))
    assert len(load_seeds(str(DATA / "sharegpt_some_bad.jsonl"), on_bad_row="skip")) < 6


def templated(n: int, seed: int) -> list[str]:
    """n rows of one template with four two-word slots: every pair shares the template's words."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    return ["Write a short story where a {} loses the {} and has to find {} before {}.".format(
        *(" ".join(rng.sample(vocab, 2)) for _ in range(4))) for _ in range(n)]


def test_templated_rows_keep_candidates_per_row_bounded():
    """Rows of one template fill the buckets of their shared words; full buckets are skipped, so ROUGE-L
    runs about as often per row at 4x the rows, and a one-word change of a row is still found."""
    per_row = {}
    for n in (1000, 4000):
        texts = templated(n, seed=n)
        texts.append(texts[n // 2].replace("loses", "misplaces"))
        kept, stages = dedup([row(i, t) for i, t in enumerate(texts)])
        near = stages[-1]
        assert texts[-1] not in {r.input for r in kept}
        assert near["full"] > 0
        per_row[n] = near["compared"] / len(texts)
    assert per_row[4000] < 1.5 * per_row[1000] + 1, per_row

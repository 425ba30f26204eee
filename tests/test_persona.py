"""The persona-motives task: seeded diverse characters, the purposes-JSON verifier, the rubric and the configs.

No engine runs here: the judge's backend is built from config but never asked.
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from rest_loop.config import PROJECT_ROOT
from rest_loop.improve.judge import rating_messages
from rest_loop.improve.rewards import Reward
from rest_loop.records import Prompt, Sample
from rest_loop.tasks.persona import (OCCUPATIONS, SITUATIONS, PersonaMotivesTask, PurposesJson,
                                     generate_characters)
from rest_loop.templates import Template
from tests.conftest import compose_config


def snapshot(prompts):
    return [(p.id, p.input, p.reference, p.messages) for p in prompts]


@pytest.fixture(scope="module")
def task() -> PersonaMotivesTask:
    return PersonaMotivesTask(n_train=40, n_heldout=20, seed=0, prompts_dir=str(PROJECT_ROOT / "prompts"))


def test_same_seed_same_prompts_other_seed_other_prompts(task, prompts_dir):
    again = PersonaMotivesTask(n_train=40, n_heldout=20, seed=0, prompts_dir=prompts_dir)
    assert snapshot(again.train) == snapshot(task.train) and snapshot(again.heldout) == snapshot(task.heldout)
    other = PersonaMotivesTask(n_train=40, n_heldout=20, seed=1, prompts_dir=prompts_dir)
    assert {p.id for p in other.heldout} != {p.id for p in task.heldout}


def test_heldout_stays_when_n_train_changes(task, prompts_dir):
    bigger = PersonaMotivesTask(n_train=100, n_heldout=20, seed=0, prompts_dir=prompts_dir)
    assert snapshot(bigger.heldout) == snapshot(task.heldout)
    assert snapshot(bigger.train[:40]) == snapshot(task.train)  # ids are stable: a prefix of the larger draw


def test_splits_are_disjoint_and_open_ended(task):
    assert len(task.train) == 40 and len(task.heldout) == 20
    assert not {p.id for p in task.train} & {p.id for p in task.heldout}
    assert not {p.input for p in task.train} & {p.input for p in task.heldout}
    assert all(p.reference is None and p.target is None for p in task.train + task.heldout)


def test_prompt_shows_the_sheet_and_asks_for_the_json(task):
    p, c = task.train[0], task.characters[20]
    text = p.messages[-1]["content"]
    assert p.input in text and f"What could {c.name} want" in text
    assert '{"purpose_a": ' in text and "purpose_c" in text
    for field in ("Name:", "Age:", "Occupation:", "Personality:", "Situation:", "Background:"):
        assert field in p.input


def test_no_two_characters_share_an_occupation_and_situation():
    # the whole pair space: every pair once, and each occupation exactly len(SITUATIONS) times
    cs = generate_characters(len(OCCUPATIONS) * len(SITUATIONS), seed=3)
    assert len({(c.occupation, c.situation) for c in cs}) == len(cs)
    assert len({c.id for c in cs}) == len(cs)
    with pytest.raises(ValueError, match="distinct"):
        generate_characters(len(OCCUPATIONS) * len(SITUATIONS) + 1, seed=3)


def test_lists_are_dealt_evenly():
    cs = generate_characters(60, seed=0)
    assert len({c.occupation for c in cs}) == 40 and len({c.situation for c in cs}) == 30
    assert len({c.personality for c in cs}) == 16 and len({c.name for c in cs}) == 40


def test_describe_records_diversity(task):
    d = task.describe()
    assert d["name"] == "persona_motives" and d["train"] == 40 and d["heldout"] == 20
    div = d["diversity"]
    assert div["occupation_situation_pairs"] == d["characters"] == 60
    assert div["occupation"] == 40 and div["situation"] == 30 and div["personality"] == 16
    assert 0.3 < div["distinct_2"] < 1.0


OK = '{"purpose_a": "Find the diarist.", "purpose_b": "Change the routine.", "purpose_c": "Tell the police."}'


@pytest.mark.parametrize("text,score,reason", [
    (f"```json\n{OK}\n```", 1.0, "three distinct purposes"),
    (f"Here you go: {OK} Hope that helps!", 1.0, "three distinct purposes"),
    ('{"purpose_a": "Run.", "purpose_b": "Hide."}', 0.0, "missing key purpose_c"),
    ('{"purpose_a": "Run."}', 0.0, "missing keys purpose_b, purpose_c"),
    ('{"purpose_a": "Run.", "purpose_b": "Hide.", "purpose_c": "Fight.", "purpose_d": "Sleep."}', 0.0,
     "extra key purpose_d"),
    ('{"purpose_a": "Run.", "purpose_b": "Hide.", "goal": "Fight."}', 0.0,
     "missing key purpose_c; extra key goal"),
    ('{"purpose_a": "Run.", "purpose_b": "   ", "purpose_c": "Fight."}', 0.0, "purpose_b is empty"),
    ('{"purpose_a": "Run away.", "purpose_b": "Hide.", "purpose_c": "  run  AWAY "}', 0.0,
     "duplicates: purpose_a and purpose_c say the same"),
    ('{"purpose_a": "Run.", "purpose_b": 3, "purpose_c": "Fight."}', 0.0, "purpose_b is not a string but a int"),
    ('{"purpose_a": "Run.", "purpose_b": null, "purpose_c": "Fight."}', 0.0,
     "purpose_b is not a string but a NoneType"),
    ('["Run.", "Hide.", "Fight."]', 0.0, "not a JSON object but a list"),
    ("She wants to run, hide and fight.", 0.0, "not JSON"),
    ('{"purpose_a": "Run.", "purpose_b": "Hide.", "purpose_c": "Fig', 0.0, "not JSON"),  # cut at max_tokens
])
def test_purposes_json(text, score, reason):
    [r] = PurposesJson()([Prompt("p", [])], [Sample(0, "p", 0, text, 10, "base", 0)])
    assert (r.score, r.status) == (score, "ok")
    assert r.reason.startswith(reason), r.reason


def test_rubric_renders_with_the_judges_variables(prompts_dir, task):
    template = Template(prompts_dir, "judge/persona_rubric.j2")
    sample = Sample(0, task.heldout[0].id, 0, OK, 30, "base", 0)
    [message] = rating_messages(template, task.heldout[0], sample, use_reference=False, low="1", high="9")
    text = message["content"]
    assert task.heldout[0].input in text and OK in text
    for criterion in ("Relevance", "Plausibility", "Distinctness"):
        assert criterion in text
    assert text.endswith("Reply with a single digit from 1 to 9.")


def test_configs_compose_and_instantiate(tmp_path):
    cfg = compose_config("task=persona_motives", "reward=persona", run_dir=str(tmp_path))
    task = instantiate(cfg.task)
    assert isinstance(task, PersonaMotivesTask) and isinstance(task.metric, PurposesJson)
    assert (len(task.train), len(task.heldout)) == (40, 20)
    reward = Reward.from_config(cfg.reward)
    assert reward.gates == {"json": 1.0} and reward.order == ["json", "judge"]
    judge, weight = reward.terms["judge"]
    assert weight == 1.0 and judge.min_mass == 0.05 and judge.use_reference is False
    assert "persona_rubric.j2" in reward.version


def test_invalid_json_is_gated_before_the_judge(prompts_dir, task):
    class Unasked:  # a judge that fails the test if it is asked at all
        name, backend = "judge", None

        def __call__(self, prompts, samples, attempt=0):
            assert not samples, "the gate should have stopped every sample"
            return []

    reward = Reward("persona", {"json": (PurposesJson(), 0.0), "judge": (Unasked(), 1.0)}, gates={"json": 1.0})
    p = task.heldout[0]
    [j] = reward({p.id: p}, [Sample(0, p.id, 0, "no json here", 4, "base", 0)])
    assert (j.score, j.status) == (0.0, "ok") and j.reason.startswith("gate json failed: not JSON")


def test_a_reward_that_needs_references_is_refused_before_the_run(tmp_path):
    from rest_loop.config import ConfigError
    from rest_loop.improve.rewards import Reward
    from rest_loop.loop import check_references

    cfg = compose_config("task=persona_motives", "reward=verifier", run_dir=str(tmp_path))
    task = instantiate(cfg.task)
    with pytest.raises(ConfigError, match=r"reward.terms.correct \(numeric_match\) compares completions with "
                                          r"references, but task 'persona_motives' has none"):
        check_references(Reward.from_config(cfg.reward), task)
    check_references(Reward.from_config(compose_config("experiment=persona_motives", run_dir=str(tmp_path)).reward),
                     task)  # the JSON gate and the judge need none

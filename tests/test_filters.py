"""Filter stages: tables of samples, a config, and the kept (prompt, sample_idx) and per-stage records."""

from __future__ import annotations

import random

import pytest

from rest_loop.config import ConfigError, FilterConfig, validate
from rest_loop.improve import filters
from rest_loop.improve.filters import histogram, select
from rest_loop.records import Judgement, Sample
from tests.conftest import compose_config

# (prompt, sample_idx, text, score or status): a status stands for a judgement without a score
ROWS = [
    ("p", 0, "7", 1.0),
    ("p", 1, " 7", 1.0),      # "7" once normalised
    ("p", 2, "7", 0.4),       # "7" exactly
    ("p", 3, "8", 0.8),
    ("p", 4, "9", "unparsed"),
    ("p", 5, "x", "error"),
    ("q", 0, "7", 0.6),       # same text as p0, another prompt: not a duplicate
    ("q", 1, "6", 0.2),
    ("q", 2, "5", 0.9),
]


def make(rows=ROWS) -> tuple[list[Sample], list[Judgement]]:
    samples = [Sample(round=1, prompt_id=p, sample_idx=i, text=t, num_tokens=1, policy="base", seed=0)
               for p, i, t, _ in rows]
    judgements = [Judgement(p, i, x, "ok") if isinstance(x, float) else Judgement(p, i, None, x)
                  for p, i, _, x in rows]
    return samples, judgements


def run(cfg: FilterConfig, rows=ROWS, **kwargs):
    kept, records = select(*make(rows), cfg, **kwargs)
    return [(s.prompt_id, s.sample_idx) for s, _ in kept], records


def test_stage_names_match_the_config():
    assert tuple(filters.STAGES) == FilterConfig.STAGES


@pytest.mark.parametrize("stage,settings,kept,details", [
    ("ok", {}, [("p", 0), ("p", 1), ("p", 2), ("p", 3), ("q", 0), ("q", 1), ("q", 2)],
     {"unparsed": 1, "error": 1}),
    ("threshold", {"threshold": 0.5}, [("p", 0), ("p", 1), ("p", 3), ("q", 0), ("q", 2)], {"threshold": 0.5}),
    ("threshold", {"threshold": 0.0}, [("p", 0), ("p", 1), ("p", 2), ("p", 3), ("q", 0), ("q", 1), ("q", 2)],
     {"threshold": 0.0}),
    # all scores: 0.2 0.4 0.6 0.8 0.9 1 1 -> median 0.8
    ("percentile", {"percentile": 50.0}, [("p", 0), ("p", 1), ("p", 3), ("q", 2)],
     {"percentile": 50.0, "scope": "global", "cutoff": 0.8}),
    # p: 0.4 0.8 1 1 -> 0.9; q: 0.2 0.6 0.9 -> 0.6
    ("percentile", {"percentile": 50.0, "percentile_scope": "prompt"}, [("p", 0), ("p", 1), ("q", 0), ("q", 2)],
     {"percentile": 50.0, "scope": "prompt", "cutoff": None}),
    ("percentile", {"percentile": 0.0}, [("p", 0), ("p", 1), ("p", 2), ("p", 3), ("q", 0), ("q", 1), ("q", 2)],
     {"percentile": 0.0, "scope": "global", "cutoff": 0.2}),
    ("percentile", {"percentile": 100.0}, [("p", 0), ("p", 1)],
     {"percentile": 100.0, "scope": "global", "cutoff": 1.0}),
    ("dedup", {"dedup": "exact"}, [("p", 0), ("p", 1), ("p", 3), ("q", 0), ("q", 1), ("q", 2)], {"mode": "exact"}),
    ("dedup", {"dedup": "normalised"}, [("p", 0), ("p", 3), ("q", 0), ("q", 1), ("q", 2)], {"mode": "normalised"}),
    ("top_k", {"top_k": 1}, [("p", 0), ("q", 2)], {"top_k": 1}),  # p0 and p1 tie: the lower index wins
    ("top_k", {"top_k": 2}, [("p", 0), ("p", 1), ("q", 0), ("q", 2)], {"top_k": 2}),
    ("top_k", {"top_k": 10}, [("p", 0), ("p", 1), ("p", 2), ("p", 3), ("q", 0), ("q", 1), ("q", 2)], {"top_k": 10}),
    ("cap", {"max_per_prompt": 10}, [("p", 0), ("p", 1), ("p", 2), ("p", 3), ("q", 0), ("q", 1), ("q", 2)],
     {"max_per_prompt": 10, "seed": 0}),
])
def test_each_stage_alone(stage, settings, kept, details):
    stages = ["ok"] if stage == "ok" else ["ok", stage]
    got, records = run(FilterConfig(stages=stages, **settings))
    assert got == kept
    assert [r["stage"] for r in records] == stages
    assert records[-1] == {"stage": stage, "in": 7 if stage != "ok" else 9, "out": len(kept), **details}


@pytest.mark.parametrize("stage,settings", [
    ("percentile", {"percentile": None}),
    ("dedup", {"dedup": "none"}),
    ("top_k", {"top_k": None}),
    ("cap", {"max_per_prompt": None}),
])
def test_a_stage_switched_off_still_leaves_a_record(stage, settings):
    got, records = run(FilterConfig(stages=["ok", stage], **settings))
    assert len(got) == 7
    assert records[-1] == {"stage": stage, "in": 7, "out": 7, "off": True}


def test_default_config_records_every_stage_in_order():
    got, records = run(FilterConfig())
    assert got == [("p", 0), ("p", 3), ("q", 0), ("q", 2)]
    assert records == [
        {"stage": "ok", "in": 9, "out": 7, "unparsed": 1, "error": 1},
        {"stage": "threshold", "in": 7, "out": 5, "threshold": 0.5},
        {"stage": "percentile", "in": 5, "out": 5, "off": True},
        {"stage": "dedup", "in": 5, "out": 4, "mode": "normalised"},
        {"stage": "top_k", "in": 4, "out": 4, "off": True},
        {"stage": "cap", "in": 4, "out": 4, "off": True},
    ]
    for before, after in zip(records, records[1:]):
        assert after["in"] == before["out"]


@pytest.mark.parametrize("stages,kept", [
    (["ok", "top_k", "dedup"], [("p", 0)]),           # the top 2 of p are the same "7": one left
    (["ok", "dedup", "top_k"], [("p", 0), ("p", 3)]),  # repeats go first, so the next best gets in
])
def test_dedup_before_or_after_top_k(stages, kept):
    got, _ = run(FilterConfig(stages=stages, top_k=2, dedup="normalised"), rows=ROWS[:6])
    assert got == kept


@pytest.mark.parametrize("stages,kept", [
    (["ok", "threshold", "percentile"], [("p", 0), ("p", 1)]),                       # median of .8 .9 1 1: .95
    (["ok", "percentile", "threshold"], [("p", 0), ("p", 1), ("p", 3), ("q", 2)]),  # median of all -> 0.8
])
def test_threshold_before_or_after_percentile(stages, kept):
    got, _ = run(FilterConfig(stages=stages, threshold=0.75, percentile=50.0))
    assert got == kept


def test_threshold_dedup_best_of_one():
    texts = ["68", " 68 ", "68", "67", "sixty-eight", "x"]
    scores = [1.0, 1.0, 1.0, 0.0, 0.9, "error"]
    rows = [("p", i, t, x) for i, (t, x) in enumerate(zip(texts, scores))] + [("q", 0, "5", 1.0)]
    got, records = run(FilterConfig(threshold=0.9, top_k=1), rows=rows)
    assert [(r["stage"], r["in"], r["out"]) for r in records] == [
        ("ok", 7, 6), ("threshold", 6, 5), ("percentile", 5, 5), ("dedup", 5, 3), ("top_k", 3, 2), ("cap", 2, 2)]
    assert got == [("p", 0), ("q", 0)]  # best score, then lowest index


def test_dropped_stages_leave_no_record():
    _, records = run(FilterConfig(stages=["ok", "top_k"], top_k=1))
    assert [r["stage"] for r in records] == ["ok", "top_k"]


@pytest.mark.parametrize("schedule,round,expected", [
    (None, 1, 0.5),
    (None, 7, 0.5),
    ([0.2, 0.4, 0.9], 1, 0.2),
    ([0.2, 0.4, 0.9], 2, 0.4),
    ([0.2, 0.4, 0.9], 3, 0.9),
    ([0.2, 0.4, 0.9], 4, 0.9),   # past the end: the last value holds
    ([0.2, 0.4, 0.9], 50, 0.9),
    ([0.7], 3, 0.7),
])
def test_threshold_schedule(schedule, round, expected):
    cfg = FilterConfig(threshold=0.5, threshold_schedule=schedule)
    assert cfg.threshold_at(round) == expected
    _, records = run(cfg, round=round)
    assert records[1] == {"stage": "threshold", "in": 7, "out": records[1]["out"], "threshold": expected}


def test_threshold_schedule_rounds_are_one_based():
    with pytest.raises(ValueError, match="1-based"):
        FilterConfig(threshold_schedule=[0.1]).threshold_at(0)


ALL_CORRECT = [("p", i, f"solution {i}", 1.0) for i in range(20)] + [("q", i, f"other {i}", 1.0) for i in range(3)]


def capped(seed: int, round: int = 1, rows=ALL_CORRECT) -> list[tuple[str, int]]:
    return run(FilterConfig(stages=["ok", "cap"], max_per_prompt=10), rows=rows, seed=seed, round=round)[0]


def test_cap_is_a_seeded_subset_of_the_right_size():
    kept = capped(seed=0)
    assert len([k for k in kept if k[0] == "p"]) == 10
    assert [k for k in kept if k[0] == "q"] == [("q", 0), ("q", 1), ("q", 2)]  # under the cap: all stay
    assert kept == sorted(kept)  # prompts as they came, then by sample_idx
    assert capped(seed=0) == kept
    assert any(capped(seed=s) != kept for s in range(1, 6))
    assert any(capped(seed=0, round=r) != kept for r in range(2, 7))  # a new subset each round


def test_cap_picks_at_random_not_by_score_unlike_top_k():
    rows = [("p", i, str(i), 1.0) for i in range(20)]
    by_score, _ = run(FilterConfig(stages=["ok", "top_k"], top_k=10), rows=rows)
    assert by_score == [("p", i) for i in range(10)]
    assert any(capped(seed=s, rows=rows) != by_score for s in range(5))


def test_cap_of_a_prompt_does_not_depend_on_other_prompts():
    alone = capped(seed=3, rows=ALL_CORRECT[:20])
    assert [k for k in capped(seed=3) if k[0] == "p"] == alone


def test_kept_order_is_fixed_whatever_the_input_order():
    shuffled = ROWS[:]
    random.Random(1).shuffle(shuffled)
    shuffled.sort(key=lambda r: r[0] != "q")  # q first now
    got, _ = run(FilterConfig(threshold=0.0, dedup="none"), rows=shuffled)
    assert got == [("q", 0), ("q", 1), ("q", 2), ("p", 0), ("p", 1), ("p", 2), ("p", 3)]


def test_dedup_keeps_the_lowest_sample_idx_whatever_the_input_order():
    got, _ = run(FilterConfig(stages=["ok", "dedup"]), rows=[("p", 1, "7", 0.9), ("p", 0, " 7", 0.9)])
    assert got == [("p", 0)]


def test_dedup_keeps_the_best_scored_copy():
    """A ranking judge can place two copies of one answer first and last: the first place must survive."""
    got, _ = run(FilterConfig(stages=["ok", "dedup", "top_k"], top_k=1),
                 rows=[("p", 0, "7", 0.0), ("p", 1, "7", 1.0), ("p", 2, "8", 0.5)])
    assert got == [("p", 1)]


@pytest.mark.parametrize("settings", [
    {"threshold": 0.0},
    {"threshold": 0.0, "percentile": 0.0},
    {"threshold": 0.0, "percentile": 0.0, "percentile_scope": "prompt", "top_k": 5, "max_per_prompt": 5},
])
def test_unjudged_samples_are_never_kept(settings):
    rows = [("p", 0, "a", "unparsed"), ("p", 1, "b", 0.0), ("p", 2, "c", "error")]
    got, records = run(FilterConfig(**settings), rows=rows)
    assert got == [("p", 1)]
    assert records[0] == {"stage": "ok", "in": 3, "out": 1, "unparsed": 1, "error": 1}


def test_nothing_judged_ok_leaves_empty_stages():
    got, records = run(FilterConfig(percentile=50.0, top_k=1, max_per_prompt=1),
                       rows=[("p", 0, "a", "unparsed")])
    assert got == []
    assert all(r["out"] == 0 for r in records)


def test_judgements_must_line_up_with_samples():
    samples, judgements = make()
    with pytest.raises(ValueError, match="one to one"):
        select(samples, judgements[::-1], FilterConfig())
    with pytest.raises(ValueError, match="one to one"):
        select(samples, judgements[:-1], FilterConfig())


@pytest.mark.parametrize("settings,message", [
    ({"stages": ["ok", "bogus"]}, "filter.stages=.*unknown stage 'bogus'; allowed: ok, threshold, percentile"),
    ({"stages": ["ok", "dedup", "dedup"]}, "filter.stages=.*named twice"),
    ({"stages": ["threshold", "ok"]}, "filter.stages=.*must start with 'ok'"),
    ({"stages": []}, "filter.stages=.*must start with 'ok'"),
    ({"threshold": 1.5}, r"filter.threshold=1.5: must be in \[0, 1\]"),
    ({"threshold_schedule": []}, r"filter.threshold_schedule=\[\]: must be null or non-empty"),
    ({"threshold_schedule": [0.5, 1.2]}, r"filter.threshold_schedule=\[0.5, 1.2\]: every value must be in \[0, 1\]"),
    ({"percentile": 150.0}, r"filter.percentile=150.0: must be null or in \[0, 100\]"),
    ({"percentile": -1.0}, r"filter.percentile=-1.0"),
    ({"percentile_scope": "batch"}, "filter.percentile_scope='batch': must be 'global' or 'prompt'"),
    ({"dedup": "True"}, "filter.dedup='True': must be 'none', 'exact' or 'normalised'"),
    ({"top_k": 0}, "filter.top_k=0: must be null or >= 1"),
    ({"max_per_prompt": 0}, "filter.max_per_prompt=0: must be null or >= 1"),
    ({"min_keep": 0}, "filter.min_keep=0: must be >= 1"),
    ({"unjudged": "skip"}, "filter.unjudged='skip': must be 'drop' or 'retry'"),
    ({"retries": -1}, "filter.retries=-1: must be >= 0"),
])
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        FilterConfig(**settings)


@pytest.mark.parametrize("override,message", [
    ("filter.percentile=150", "filter.percentile=150.0"),
    ("filter.dedup=true", "filter.dedup='True'"),   # the old boolean says what to write instead
    ("filter.stages=[ok,bogus]", "filter.stages"),
])
def test_bad_settings_name_the_key_from_the_command_line(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(override))


@pytest.mark.parametrize("option,expected", [
    ("default", {"threshold": 0.5, "dedup": "normalised", "top_k": None, "max_per_prompt": None}),
    ("rest_em", {"threshold": 1.0, "max_per_prompt": 10, "top_k": None}),
    ("best_of_n", {"threshold": 0.0, "top_k": 1, "max_per_prompt": None}),
])
def test_filter_options(option, expected):
    cfg = validate(compose_config(f"filter={option}")).filter
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.stages == list(FilterConfig.STAGES)


def test_histogram_bins_cover_zero_to_one():
    h = histogram([0.0, 0.05, 0.5, 0.99, 1.0])
    assert sum(h.values()) == 5 and h["0.0-0.1"] == 2 and h["0.9-1.0"] == 2


def test_resume_advice_names_the_setting_that_gave_the_threshold():
    from rest_loop.loop import lower_threshold

    assert lower_threshold(FilterConfig(), 1, 1) == "filter.threshold=<lower>"
    assert lower_threshold(FilterConfig(step_thresholds=[0.7, 0.8, 0.9]), 2, 3) == \
        "filter.step_thresholds=[0.7,0.8,<lower>]"
    assert "round 2" in lower_threshold(FilterConfig(threshold_schedule=[0.5, 0.9]), 2, 1)

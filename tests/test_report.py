"""The manifest's reading of a run (best evaluation, stopping rule) and the tables made from it."""

from __future__ import annotations

import csv

import pytest

from rest_loop.manifest import Manifest, step_of
from rest_loop.report import round_line, rows, table, write_csv


def manifest(tmp_path, values: dict, steps: int = 1) -> Manifest:
    """A manifest whose rounds have the given held-out values: {round: [value per step]}."""
    m = Manifest(tmp_path / "manifest.json", {"rounds": {}})
    for r, per_step in values.items():
        for s, v in enumerate(per_step, start=1):
            sfx = "" if s == 1 else f"_{s}"
            m.stage_done(r, "eval" + sfx, {"metric": "accuracy", "value": v, "policy": f"p{r}{sfx}",
                                           "pass_at": {"1": v, "4": min(1.0, 2 * v)}, "distinct_2": 0.5,
                                           "mean_tokens": 3.0})
            if r:
                m.stage_done(r, "improve" + sfx, {"kept": 10 * s, "keep_rate": 0.1 * s, "mean_score": 0.3})
                m.stage_done(r, "finetune" + sfx, {"train_loss": 1.0 / s, "started_from": "base"})
        if r:
            m.round_done(r, 60.0)
    return m


@pytest.mark.parametrize("values,patience,min_delta,stop", [
    ({0: [0.1], 1: [0.5], 2: [0.6]}, 1, 0.0, False),        # still improving
    ({0: [0.1], 1: [0.5], 2: [0.5]}, 1, 0.0, True),         # a tie is no improvement
    ({0: [0.1], 1: [0.5], 2: [0.52]}, 1, 0.05, True),       # an improvement below min_delta
    ({0: [0.1], 1: [0.5], 2: [0.4]}, 2, 0.0, False),        # one bad round of the two allowed
    ({0: [0.1], 1: [0.5], 2: [0.4], 3: [0.45]}, 2, 0.0, True),
    ({0: [0.1], 1: [0.5]}, None, 0.0, False),               # no rule, no stop
])
def test_stopping_rule(tmp_path, values, patience, min_delta, stop):
    assert bool(manifest(tmp_path, values).stalled(patience, min_delta)) == stop


def test_best_is_over_every_step_and_the_earliest_on_a_tie(tmp_path):
    m = manifest(tmp_path, {0: [0.1], 1: [0.3, 0.7, 0.5], 2: [0.7, 0.6, 0.2]}, steps=3)
    assert m.best() == {"round": 1, "step": 2, "policy": "p1_2", "value": 0.7}
    assert m.data["best_round"] == 1
    assert m.final_metric() == 0.2
    assert [(e["round"], e["step"]) for e in m.evals()] == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert (step_of("eval"), step_of("eval_3"), step_of("finetune_2")) == (1, 3, 2)


def test_table_and_csv_have_a_row_per_evaluation(tmp_path):
    m = manifest(tmp_path, {0: [0.1], 1: [0.3, 0.7]})
    got = rows(m)
    assert [(r["round"], r["step"], r["held_out"], r["kept"], r["pass@k"], r["k"]) for r in got] == [
        (0, 1, 0.1, None, 0.2, "4"), (1, 1, 0.3, 10, 0.6, "4"), (1, 2, 0.7, 20, 1.0, "4")]
    text = table(m)
    assert "pass@4" in text and "step" in text and "best round: 1 step 2" in text
    assert "held-out accuracy 0.700 pass@4 1.000" in round_line(m.rounds[1])  # the round's last step
    write_csv(m, tmp_path / "metrics.csv")
    with open(tmp_path / "metrics.csv") as f:
        parsed = list(csv.DictReader(f))
    assert [row["held_out"] for row in parsed] == ["0.1", "0.3", "0.7"]
    assert "step" not in table(manifest(tmp_path / "x", {0: [0.1], 1: [0.3]})).splitlines()[0].split()


def test_stopped_early_is_in_the_table(tmp_path):
    m = manifest(tmp_path, {0: [0.1], 1: [0.5], 2: [0.5]})
    m.note(stopped_early={"after_round": 2, "reason": m.stalled(1, 0.0)})
    assert "stopped early after round 2: the held-out metric has not improved" in table(m)


def test_a_composite_reward_gets_a_column_per_term(tmp_path):
    m = manifest(tmp_path, {0: [0.1], 1: [0.3]})
    m.stage_done(1, "improve", {"kept": 5, "reward_terms": {"json": {"mean_score": 0.62}, "judge": {"mean_score": 0.41}}})
    header, _, base, first = table(m).splitlines()[:4]
    assert header.split()[header.split().index("reward") + 1:][:2] == ["json", "judge"]
    assert "0.620" in first and "0.410" in first and "0.620" not in base
    write_csv(m, tmp_path / "metrics.csv")
    assert "term:json" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_a_composite_held_out_reward_gets_a_column_per_term(tmp_path):
    """The held-out valid-JSON rate and judge rating, base and tuned, beside the training samples' own."""
    m = manifest(tmp_path, {0: [0.0], 1: [0.3]})
    m.stage_done(0, "eval", {"metric": "mean_reward", "value": 0.0, "terms": {"json": 0.0, "judge": None}})
    m.stage_done(1, "eval", {"metric": "mean_reward", "value": 0.3, "terms": {"json": 0.25, "judge": 0.5}})
    header, _, base, first = table(m).splitlines()[:4]
    assert header.split()[2:7] == ["held-out", "held-out", "json", "held-out", "judge"]
    assert base.split()[2:5] == ["0.000", "0.000", "-"] and first.split()[2:5] == ["0.300", "0.250", "0.500"]
    write_csv(m, tmp_path / "metrics.csv")
    assert "held-out:json" in (tmp_path / "metrics.csv").read_text().splitlines()[0]

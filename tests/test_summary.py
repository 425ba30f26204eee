"""rest-loop-report on run and sweep directories written by hand: figures, report.md and the console."""

from __future__ import annotations

import pytest

from rest_loop.manifest import Manifest
from rest_loop.plots import position
from rest_loop.store import write_json
from rest_loop.summary import cache_line, main, members

PNG = b"\x89PNG\r\n\x1a\n"


def histogram(right: int, wrong: int) -> dict[str, int]:
    return {f"{i / 10:.1f}-{(i + 1) / 10:.1f}": {0: wrong, 9: right}.get(i, 0) for i in range(10)}


def make_run(path, values: dict, status: str = "finished", cache: dict | None = None, overrides=()) -> None:
    """A run directory like the loop leaves: {round: [held-out value per Improve step]}, with stats.json files."""
    m = Manifest(path / "manifest.json", {"name": "demo", "reward": "correct:numeric_match", "rounds": {}})
    for r, per_step in values.items():
        for s, v in enumerate(per_step, start=1):
            sfx = "" if s == 1 else f"_{s}"
            if r:
                stats = {"kept": 20 * r, "keep_rate": 0.05 * r, "mean_score": 0.1 * r, "threshold": 1.0,
                         "histogram": histogram(right=20 * r, wrong=400 - 20 * r)}
                write_json(path / f"round_{r:03d}" / f"improve{sfx}" / "stats.json", stats)
                m.stage_done(r, "grow", {"distinct_2": 0.5 - 0.1 * r, "samples": 400})
                m.stage_done(r, "improve" + sfx, stats)
                m.stage_done(r, "finetune" + sfx, {"train_loss": 1.0 / r, "started_from": "base"})
            m.stage_done(r, "eval" + sfx, {"metric": "accuracy", "value": v, "policy": f"round_{r:03d}{sfx}",
                                           "pass_at": {"1": v, "4": min(1.0, 1.5 * v)}, "distinct_2": 0.6,
                                           "mean_tokens": 15.0 - r})
        if r:
            m.round_done(r, 100.0)
    m.note(status=status, **({"cache": cache} if cache else {}))
    if overrides:
        write_json(path / ".hydra" / "overrides.yaml", list(overrides))  # JSON is YAML


def make_sweep(path) -> None:
    cache = {"generated_tokens": 1000, "cached_tokens": 3000, "hits": 3, "misses": 1}
    make_run(path / "0", {0: [0.1], 1: [0.4], 2: [0.6]}, cache=cache,
             overrides=["experiment=demo", "filter.threshold=0.5"])
    make_run(path / "2", {0: [0.1], 1: [0.3, 0.5]}, status="running",
             overrides=["experiment=demo", "filter.threshold=0.9"])
    write_json(path / "10" / "FAILED", {"error": "round 1: the filter kept 0 of 400 samples", "exit_code": 3})
    write_json(path / "10" / ".hydra" / "overrides.yaml", ["experiment=demo", "filter.threshold=1.5"])
    sweep_command = ["experiment=demo", "filter.threshold=0.5,0.9,1.5"]  # what multirun.yaml records of it
    write_json(path / "multirun.yaml", {"hydra": {"overrides": {"task": sweep_command}}})


def assert_figures(out) -> None:
    for name in ("heldout.png", "keep_reward.png", "drift.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


def test_a_run_gets_its_table_and_figures(tmp_path, capsys):
    make_run(tmp_path / "run", {0: [0.1], 1: [0.4], 2: [0.6]})
    assert main([str(tmp_path / "run")]) == 0  # written beside the run by default
    out = tmp_path / "run" / "report"
    assert_figures(out)
    md = (out / "report.md").read_text()
    assert "| round | policy | held-out | pass@4 |" in md and "| 2 | round_002 | 0.600 | 0.900 |" in md
    assert "![held-out metric](heldout.png)" in md and "Failed" not in md
    printed = capsys.readouterr().out
    assert "best round: 2" in printed and f"report: {out / 'report.md'}" in printed


def test_a_sweep_gets_a_line_per_member_and_its_failures(tmp_path, capsys):
    make_sweep(tmp_path / "sweep")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    assert_figures(tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| filter.threshold=0.5 | finished | 0.600 | 0.600 (round 2) | 40 | 200 |" in md
    assert "| filter.threshold=0.9 | running | 0.500 | 0.500 (round 1 step 2) | 20 | 100 |" in md
    assert "| filter.threshold=1.5 | failed | - | - | - | - |" in md
    assert "exit code 3: round 1: the filter kept 0 of 400 samples" in md
    assert "experiment=demo" not in md  # given once for the whole sweep (multirun.yaml): no help telling them apart
    printed = capsys.readouterr().out
    lines = [line.split()[0] for line in printed.splitlines()[2:5]]
    assert lines == ["filter.threshold=0.5", "filter.threshold=0.9", "filter.threshold=1.5"]  # 0, 2, 10: numeric
    assert "saving 4.00×" in printed and "saving 4.00×" in md


@pytest.mark.parametrize("caches,line", [
    ([{"generated_tokens": 1000, "cached_tokens": 3000}, {"generated_tokens": 1000, "cached_tokens": 0}],
     "tokens generated: 2,000; a sweep without the cache would have generated 5,000; saving 2.50×"),
    ([{"generated_tokens": 0, "cached_tokens": 800}],
     "tokens generated: 0; a sweep without the cache would have generated 800; every token came from the cache"),
    ([{"generated_tokens": 10, "cached_tokens": 30, "judge_requests": 40, "judge_cached": 0},
      {"generated_tokens": 10, "cached_tokens": 30, "judge_requests": 0, "judge_cached": 40}],
     "tokens generated: 20; a sweep without the cache would have generated 80; saving 4.00×; judge requests "
     "sent: 40, answered from the cache: 40"),
    ([None, None], None),  # manifests from before the cache: no line
])
def test_the_cache_line(tmp_path, caches, line):
    for i, cache in enumerate(caches):
        make_run(tmp_path / str(i), {0: [0.1]}, cache=cache)
    assert cache_line(members(tmp_path)) == line


@pytest.mark.parametrize("where", ["empty", "missing"])
def test_neither_a_run_nor_a_sweep_exits_2(tmp_path, capsys, where):
    path = tmp_path / where
    if where == "empty":
        (path / "0").mkdir(parents=True)  # a sub-folder, but no manifest.json or FAILED in it
    with pytest.raises(SystemExit) as exit:
        main([str(path)])
    assert exit.value.code == 2
    assert f"{path} is neither a run directory" in capsys.readouterr().err


def test_improve_steps_spread_within_their_round():
    rows = [{"round": 0, "step": 1}, {"round": 1, "step": 1}, {"round": 1, "step": 2}, {"round": 1, "step": 3}]
    assert position(rows) == pytest.approx([0, 1, 4 / 3, 5 / 3])

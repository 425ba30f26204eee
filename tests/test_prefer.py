"""Preference training: pairs from a judged pool (a table of cases), DPO on the tiny model lowering its loss and
widening the chosen-vs-rejected margin, the reference a continued policy trains against, and a CLI round."""

from __future__ import annotations

import sys

import pytest

from rest_loop.config import ConfigError, PairsConfig, TrainerConfig
from rest_loop.prefer.pairs import build_pairs
from rest_loop.records import Judgement, Prompt, Sample


def pool(scores: dict[str, list]) -> tuple[list[Sample], list[Judgement], dict]:
    """Samples and judgements from {prompt: [score or 'unparsed', ...]}."""
    samples, judgements = [], []
    for pid, row in scores.items():
        for i, score in enumerate(row):
            samples.append(Sample(1, pid, i, f"{pid}-{i}", 3, "base", 0))
            judgements.append(Judgement(pid, i, None, score) if isinstance(score, str) else Judgement(pid, i, score, "ok"))
    return samples, judgements, {pid: Prompt(pid, [{"role": "user", "content": pid}]) for pid in scores}


@pytest.mark.parametrize("scores,cfg,expect", [
    # best against worst, one pair per prompt
    ({"a": [0.2, 0.9, 0.5]}, {}, [("a", 1, 0)]),
    # a tie between best and worst makes no pair; equal scores in the middle do not matter
    ({"a": [0.5, 0.5, 0.5], "b": [1.0, 0.0, 0.0]}, {}, [("b", 0, 1)]),
    # unparsed and error samples never take part, even as the worst
    ({"a": [0.8, "unparsed", 0.3, "error"]}, {}, [("a", 0, 2)]),
    # a prompt with one scored sample has no pair
    ({"a": [0.8, "unparsed"]}, {}, []),
    # the minimum gap
    ({"a": [0.6, 0.4], "b": [1.0, 0.2]}, {"min_gap": 0.5}, [("b", 0, 1)]),
    # all pairs above the gap, capped per prompt, widest first
    ({"a": [1.0, 0.7, 0.0]}, {"strategy": "all", "max_per_prompt": 2}, [("a", 0, 2), ("a", 1, 2)]),
    ({"a": [1.0, 0.7, 0.0]}, {"strategy": "all", "max_per_prompt": 5, "min_gap": 0.31}, [("a", 0, 2), ("a", 1, 2)]),
    ({"a": [1.0, 0.7, 0.0]}, {"strategy": "all", "max_per_prompt": 5}, [("a", 0, 2), ("a", 1, 2), ("a", 0, 1)]),
    # ties inside `all` are skipped
    ({"a": [1.0, 1.0, 0.0]}, {"strategy": "all", "max_per_prompt": 5}, [("a", 0, 2), ("a", 1, 2)]),
])
def test_pairs_from_a_judged_pool(scores, cfg, expect):
    samples, judgements, prompts = pool(scores)
    pairs, stages = build_pairs(samples, judgements, PairsConfig(**cfg), prompts, round=1, step=1, reward="r@v1")
    assert [(p.prompt_id, p.chosen_idx, p.rejected_idx) for p in pairs] == expect
    for p in pairs:
        assert p.chosen == f"{p.prompt_id}-{p.chosen_idx}" and p.rejected == f"{p.prompt_id}-{p.rejected_idx}"
        assert p.chosen_score > p.rejected_score and p.reward == "r@v1" and p.policy == "base"
    assert [s["out"] for s in stages][-1] == len(pairs)
    assert all(a["out"] == b["in"] for a, b in zip(stages, stages[1:]))  # each stage takes what the last left


def test_bad_pair_and_dpo_settings_name_the_key():
    for kwargs, key in (({"strategy": "best"}, "trainer.pairs.strategy"), ({"min_gap": -1}, "trainer.pairs.min_gap"),
                        ({"max_per_prompt": 0}, "trainer.pairs.max_per_prompt")):
        with pytest.raises(ConfigError, match=key):
            PairsConfig(**kwargs)
    with pytest.raises(ConfigError, match="trainer.objective"):
        TrainerConfig(objective="ppo")
    with pytest.raises(ConfigError, match="trainer.reference"):
        TrainerConfig(objective="dpo", method="full", reference="base")
    from rest_loop.prefer.train import check_dpo

    with pytest.raises(ConfigError, match=r"trainer.loss_type=\['nope'\]"):
        check_dpo(TrainerConfig(objective="dpo", loss_type=["nope"]))
    with pytest.raises(ConfigError, match="trainer.mix_original"):
        check_dpo(TrainerConfig(objective="dpo", mix_original=0.5))


def training_pairs(n: int = 16) -> list:
    from rest_loop.prefer.pairs import PreferencePair

    return [PreferencePair(round=1, step=1, prompt_id=f"p{i}", messages=[{"role": "user", "content": f"What is {i}+{i}?"}],
                           chosen=f"The answer is {2 * i}.", rejected="I do not know, sorry.", chosen_idx=0,
                           rejected_idx=1, chosen_score=1.0, rejected_score=0.0, policy="base", reward="r")
            for i in range(n)]


@pytest.mark.slow
def test_dpo_lowers_its_loss_and_widens_the_margin_and_continues_against_the_right_reference(tiny_model, tmp_path):
    """A fresh adapter starts as its reference (the base): loss log 2, margin 0. Training lowers the loss and widens
    the chosen-vs-rejected margin. Continued (init=previous), the reference is the previous policy itself, so it
    starts again at margin 0; with reference=base it starts at the margin the first fine-tune reached."""
    import dataclasses
    import math

    from rest_loop.prefer.train import dpo

    pairs = training_pairs()
    cfg = TrainerConfig(objective="dpo", learning_rate=2e-3, epochs=4, batch_size=8, logging_steps=1, report_to=[])
    first = dpo(tiny_model, pairs, cfg, tmp_path / "one")
    assert first["first"]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["first"]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    assert first["last"]["loss"] < first["first"]["loss"] - 0.2, first
    assert first["last"]["rewards/margins"] > 0.5, first
    assert first["tokens_per_s"] > 0 and first["reference"] == "base model (adapter off)"
    adapter = tmp_path / "one/adapter"
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "ref").exists()  # the policy alone

    again = dataclasses.replace(cfg, init="previous", epochs=1)
    on_previous = dpo(tiny_model, pairs, again, tmp_path / "two", start=str(adapter))
    assert on_previous["init"] == "previous" and on_previous["reference"].startswith("previous policy")
    assert on_previous["first"]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at step 1
    on_base = dpo(tiny_model, pairs, dataclasses.replace(again, reference="base"), tmp_path / "three",
                  start=str(adapter))
    assert on_base["reference"].startswith("base model")
    assert on_base["first"]["rewards/margins"] > 0.5 and on_base["first"]["loss"] < math.log(2) - 0.2, on_base


@pytest.mark.slow
def test_a_dpo_run_trains_on_exactly_the_pairs_its_judgements_imply(tiny_model, tmp_path):
    """rest-loop trainer=dpo, two rounds continuing the adapter: every pair in improve/pairs.jsonl is two samples of
    one prompt with the scores judgements.jsonl gave them, the fine-tune saw exactly those pairs, round 1 trains
    against the base and round 2 against round 1's policy."""
    from rest_loop.store import read_json, read_jsonl
    from tests.test_loop_e2e import cli, run_ok

    run_dir = tmp_path / "run"  # a reward whose terms the gold answers pass and the tiny model's words often fail
    run_ok(cli(run_dir, tiny_model, "trainer=dpo", "trainer.init=previous", "trainer.batch_size=4", "sampler.n=4",
               "task.n_train=8", "loop.rounds=2", "~reward.terms.correct",
               "+reward.terms.caps={_target_:rest_loop.improve.verifiers.RegexMatch,pattern:'^[^A-Z]*$'}",
               "+reward.terms.g={_target_:rest_loop.improve.verifiers.RegexMatch,pattern:'^[^g]*$'}"))
    for r, reference in ((1, "base model"), (2, "previous policy")):
        stage = run_dir / f"round_{r:03d}"
        samples = {(s["prompt_id"], s["sample_idx"]): s for s in read_jsonl(stage / "grow/samples.jsonl")}
        judged = {(j["prompt_id"], j["sample_idx"]): j for j in read_jsonl(stage / "improve/judgements.jsonl")}
        pairs = read_jsonl(stage / "improve/pairs.jsonl")
        assert pairs and read_jsonl(stage / "finetune/pairs.jsonl") == pairs
        assert len({p["prompt_id"] for p in pairs}) == len(pairs)  # best_worst: one pair per prompt
        for p in pairs:
            chosen, rejected = judged[(p["prompt_id"], p["chosen_idx"])], judged[(p["prompt_id"], p["rejected_idx"])]
            assert (chosen["status"], rejected["status"]) == ("ok", "ok")
            assert (p["chosen_score"], p["rejected_score"]) == (chosen["score"], rejected["score"])
            assert p["chosen_score"] > p["rejected_score"]
            assert p["chosen"] == samples[(p["prompt_id"], p["chosen_idx"])]["text"]
            assert p["rejected"] == samples[(p["prompt_id"], p["rejected_idx"])]["text"]
            scores = [j["score"] for (pid, _), j in judged.items() if pid == p["prompt_id"] and j["status"] == "ok"]
            assert (p["chosen_score"], p["rejected_score"]) == (max(scores), min(scores))
        stats = read_json(stage / "improve/stats.json")
        assert stats["pairs"] == len(pairs) and stats["stages"][-1]["out"] == len(pairs)
        done = read_json(stage / "finetune/DONE")
        assert done["objective"] == "dpo" and done["pairs"] == len(pairs) and done["reference"].startswith(reference)
        assert (stage / "eval/DONE").is_file()
    assert read_json(run_dir / "manifest.json")["status"] == "finished"


@pytest.mark.parametrize("overrides,message", [
    (["trainer=dpo", "trainer.loss_type=[nope]"], "config error: trainer.loss_type=['nope']: nope is not one of TRL's"),
    (["experiment=agent_calculator", "trainer=dpo"],
     "config error: trainer.objective=dpo: an agent's rounds fine-tune on its trajectories with SFT"),
])
def test_dpo_settings_that_cannot_work_stop_before_anything_runs(tmp_path, overrides, message):
    from tests.test_bad_input import rest_loop

    code, log = rest_loop(tmp_path / "run", *overrides)
    assert code == 2
    assert message in log and "Traceback" not in log and not list((tmp_path / "run").glob("round_*"))


@pytest.mark.slow
def test_self_rewarding_the_policy_judges_its_own_samples_and_dpo_continues_it(tmp_path):
    """experiment=self_rewarding, shrunk: round 1's judge is the base, round 2's is round 1's policy (its adapter
    in the same engine; its cache entries are keyed on those weights, tests/test_improve.py); each judgement
    averages two sampled ratings of the additive rubric; DPO continues round 1's adapter against it."""
    from rest_loop.store import read_json, read_jsonl
    from tests.test_loop_e2e import run_ok

    run_dir = tmp_path / "run"
    run_ok([sys.executable, "-m", "rest_loop", "experiment=self_rewarding", "task.n_train=4", "task.n_heldout=4",
            "loop.rounds=2", "reward.terms.judge.samples=2", "reward.terms.judge.max_tokens=96", "eval.max_tokens=16",
            "sampler.max_tokens=16", "model.kv_cache_gb=1", f"paths.pools={tmp_path / 'pools'}",
            f"judge.cache={tmp_path / 'judge.sqlite'}", f"hydra.run.dir={run_dir}"], timeout=900)
    requests = 0
    for r, judge, reference in ((1, "base", "base model"), (2, "round_001", "previous policy")):
        stage = run_dir / f"round_{r:03d}"
        judged = read_jsonl(stage / "improve/judgements.jsonl")
        ok = [j for j in judged if j["status"] == "ok"]
        assert ok and all(j["reason"].endswith("of 2 ratings") for j in ok)
        assert all(abs(j["score"] * 10 - round(j["score"] * 10)) < 1e-9 for j in ok)  # the mean of two ratings 0..5
        usage = read_json(stage / "improve/reward_terms.json")["judge"]["usage"]  # the process's, so far
        assert usage["requests"] > requests, usage  # the round's own judge was asked
        requests = usage["requests"]
        done = read_json(stage / "finetune/DONE")
        assert done["objective"] == "dpo" and done["reference"].startswith(reference)
        assert read_json(stage / "grow/DONE")["policy"] == judge
    assert read_json(run_dir / "manifest.json")["status"] == "finished"


@pytest.mark.slow
def test_a_mixed_round_fine_tunes_on_the_kept_samples_then_trains_that_policy_with_dpo(tiny_model, tmp_path):
    """loop.improve_steps=2 trainer.step_objectives=[sft,dpo]: one judged pool; step 1 is the filter and SFT from the
    base, step 2 pairs and DPO continuing step 1's adapter against it; both policies evaluated."""
    from rest_loop.store import read_json, read_jsonl
    from tests.test_loop_e2e import cli, run_ok

    run_dir = tmp_path / "run"
    run_ok(cli(run_dir, tiny_model, "trainer=dpo", "loop.improve_steps=2", "trainer.step_objectives=[sft,dpo]",
               "trainer.batch_size=4", "sampler.n=4", "task.n_train=8", "~reward.terms.correct",
               "+reward.terms.caps={_target_:rest_loop.improve.verifiers.RegexMatch,pattern:'^[^A-Z]*$'}",
               "+reward.terms.g={_target_:rest_loop.improve.verifiers.RegexMatch,pattern:'^[^g]*$'}"))
    r1 = run_dir / "round_001"
    assert (r1 / "improve/kept.jsonl").is_file() and (r1 / "finetune/train.jsonl").is_file()
    sft = read_json(r1 / "finetune/DONE")
    assert sft["method"] == "lora" and "objective" not in sft and sft["init"] == "base"
    pairs = read_jsonl(r1 / "improve_2/pairs.jsonl")
    assert pairs and read_jsonl(r1 / "finetune_2/pairs.jsonl") == pairs
    dpo_done = read_json(r1 / "finetune_2/DONE")
    assert dpo_done["objective"] == "dpo" and dpo_done["init"] == "previous"
    assert dpo_done["started_from"] == sft["output"] and dpo_done["reference"].startswith("previous policy")
    assert dpo_done["first"]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # it starts as its reference
    assert (r1 / "eval/DONE").is_file() and (r1 / "eval_2/DONE").is_file()
    assert not (r1 / "improve_2/judgements.jsonl").exists()  # one judged pool, judged once


@pytest.mark.slow
def test_eval_win_rate_judges_each_policy_against_the_one_before_in_both_orders(tiny_model, tmp_path):
    """eval=win_rate with a judge behind an OpenAI-compatible server on loopback: round 1's metrics.json holds its
    win rate against round 0's greedy answers, asked in both orders, and the table shows it."""
    from rest_loop.store import read_json, read_jsonl
    from tests.judge_server import JudgeServer
    from tests.test_judge_openai import pairwise_oracle
    from tests.test_loop_e2e import cli, run_ok

    run_dir = tmp_path / "run"
    with JudgeServer(pairwise_oracle) as server:
        log = run_ok(cli(run_dir, tiny_model, "eval=win_rate", "eval.max_tokens=8", "judge=openai",
                         f"judge.base_url={server.url}", "judge.model=judge-test", "judge.api_key_env=null",
                         f"judge.cache={tmp_path / 'judge.sqlite'}", "trainer.learning_rate=5e-3"))
        asked = len(server.answered)
    assert "win_rate" not in read_json(run_dir / "round_000/eval/metrics.json")  # the base has nothing before it
    win = read_json(run_dir / "round_001/eval/metrics.json")["win_rate"]
    before = {r["prompt_id"]: r["text"] for r in read_jsonl(run_dir / "round_000/eval/completions.jsonl")}
    now = {r["prompt_id"]: r["text"] for r in read_jsonl(run_dir / "round_001/eval/completions.jsonl")}
    differ = sum(before[k] != now[k] for k in now)
    assert win["prompts"] == 4 and win["identical"] == 4 - differ and asked == 2 * differ
    assert win["against"] == "round_000/eval" and win["judge"].startswith("pairwise:")
    assert win["win_rate"] == 0.5  # the tiny model is wrong both times: every judged pair is a tie
    assert "win vs prev" in log and "judge picks first" in log

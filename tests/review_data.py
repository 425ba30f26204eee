"""Run directories written fast, in the loop's own formats, for the review page's tests and bench/review.py.

`synthetic_run` writes what `rest-loop` leaves (config.yaml, manifest.json, metrics.csv, each round's
grow/samples.jsonl, improve/judgements.jsonl, kept.jsonl and stats.json, eval/completions.jsonl and
metrics.json) with the real record classes, the real filter (rest_loop.improve.filters.select) and
the real arithmetic task, so prompts, kept sets and stage counts are what a run would have. No model:
a sample is right, wrong, a repeat, or (once a round) an HTML payload; round 2 is judged by a ranking
judge's records (shown order, ranking, position bias). `agent_run` writes an agent's trajectories.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from omegaconf import OmegaConf

from rest_loop.agent.records import Step, Trajectory
from rest_loop.config import PROJECT_ROOT, FilterConfig
from rest_loop.improve.filters import histogram, select
from rest_loop.manifest import Manifest
from rest_loop.records import Judgement, KeptExample, Sample
from rest_loop.report import write_csv
from rest_loop.store import write_json, write_jsonl
from rest_loop.tasks.arithmetic import ArithmeticTask

PAYLOAD = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"><b id="pwned">x</b>'
FILTER = FilterConfig(threshold=0.5, max_per_prompt=1)


def task_config(prompts: int, heldout: int) -> dict:
    return {"_target_": "rest_loop.tasks.arithmetic.ArithmeticTask", "n_train": prompts, "n_heldout": heldout,
            "seed": 0, "ops": ["+"], "low": 10, "high": 10 + int((prompts + heldout) ** 0.5) + 1,
            "template": "tasks/arithmetic.j2", "prompts_dir": str(PROJECT_ROOT / "prompts")}


def synthetic_run(path: Path, prompts: int = 20, n: int = 4, rounds: int = 2, heldout: int = 6,
                  payload: bool = True) -> Path:
    """A finished run of `rounds` rounds over `prompts` train prompts with n samples each."""
    path.mkdir(parents=True, exist_ok=True)
    spec = task_config(prompts, heldout)
    task = ArithmeticTask(**{k: v for k, v in spec.items() if k != "_target_"})
    OmegaConf.save({"name": "review", "seed": 0, "filter": dataclasses.asdict(FILTER), "task": spec},
                   path / "config.yaml")
    m = Manifest(path / "manifest.json", {"name": "review", "reward": "correct:numeric_match", "rounds": {},
                                          "status": "running"})
    for r in range(0, rounds + 1):
        rng = random.Random(r)
        if r:
            samples, judgements = pool(task.train, n, r, rng, ranking=r == 2, payload=payload)
            write_jsonl(path / f"round_{r:03d}/grow/samples.jsonl", samples)
            write_jsonl(path / f"round_{r:03d}/improve/judgements.jsonl", judgements)
            chosen, stages = select(samples, judgements, FILTER, round=r, seed=0)
            kept = [KeptExample(r, s.prompt_id, s.sample_idx, [], s.text, j.score, s.policy, 0, "numeric_match")
                    for s, j in chosen]
            write_jsonl(path / f"round_{r:03d}/improve/kept.jsonl", kept)
            stats = {"samples": len(samples), "stages": stages, "kept": len(kept), "keep_rate": len(kept) / len(samples),
                     "status": {s: sum(j.status == s for j in judgements) for s in ("ok", "unparsed", "error")},
                     "histogram": histogram([j.score for j in judgements if j.status == "ok"]),
                     "mean_score": 0.5, "threshold": FILTER.threshold,
                     "reward_terms": {"judge": ranking_stats(judgements)} if r == 2 else {}}
            write_json(path / f"round_{r:03d}/improve/stats.json", stats)
            m.stage_done(r, "grow", {"distinct_2": 0.5, "samples": len(samples)})
            m.stage_done(r, "improve", stats)
            m.stage_done(r, "finetune", {"train_loss": 1.0 / r, "started_from": "base"})
        policy = "base" if r == 0 else f"round_{r:03d}"
        right = [rng.random() < 0.3 * r for _ in task.heldout]  # the policy gets better round by round
        rows = [{"prompt_id": p.id, "text": f"The answer is {p.reference if ok else 0}.", "score": float(ok),
                 "status": "ok"} for p, ok in zip(task.heldout, right)]
        value = sum(x["score"] for x in rows) / len(rows)
        write_jsonl(path / f"round_{r:03d}/eval/completions.jsonl", rows)
        metrics = {"round": r, "policy": policy, "metric": "accuracy", "value": value, "n": len(rows),
                   "distinct_2": 0.6, "mean_tokens": 6.0, "pass_at": None}
        write_json(path / f"round_{r:03d}/eval/metrics.json", metrics)
        m.stage_done(r, "eval", metrics)
        if r:
            m.round_done(r, 10.0)
    m.note(status="finished")
    write_csv(m, path / "metrics.csv")
    return path


def pool(prompts, n: int, r: int, rng: random.Random, ranking: bool, payload: bool):
    samples, judgements = [], []
    for p in prompts:
        texts = []
        for i in range(n):
            kind = rng.random()
            text = (f"The answer is {p.reference}." if kind < 0.4 else f"The answer is {rng.randint(0, 300)}."
                    if kind < 0.8 else texts[-1] if texts else "I do not know.")
            texts.append(text)
        if payload and p is prompts[0]:
            texts[0] = PAYLOAD
        samples += [Sample(r, p.id, i, t, 8, "base" if r == 1 else f"round_{r - 1:03d}", 0,
                           {"n": n, "temperature": 0.8}, "stop") for i, t in enumerate(texts)]
        if ranking:
            judgements += ranked(p.id, texts, rng)
        else:
            for i, t in enumerate(texts):
                if rng.random() < 0.1:
                    judgements.append(Judgement(p.id, i, None, "unparsed", "judge: no 'Rating: N' line",
                                                {"judge": {"score": None, "status": "unparsed", "reason": "no line",
                                                           "raw": {"text": f"I think {t}", "finish_reason": "length"}}}))
                    continue
                score = 1.0 if t == f"The answer is {p.reference}." else round(rng.random() * 0.6, 3)
                judgements.append(Judgement(p.id, i, score, "ok", f"judge: rating {score * 8 + 1:.0f}",
                                            {"judge": {"score": score, "status": "ok", "reason": "rating",
                                                       "raw": {"text": f"Explanation: {t}\nRating: {score * 8 + 1:.0f}",
                                                               "finish_reason": "stop"}}}))
    return samples, judgements


def ranked(pid: str, texts: list[str], rng: random.Random) -> list[Judgement]:
    """A ranking judge's records for one prompt's samples in one group: shown order, ranking, scores by place."""
    shown = list(range(len(texts)))
    rng.shuffle(shown)
    ranking = sorted(shown, key=lambda i: (not texts[i].endswith(f"{pid.split('+')[0]}."), rng.random()))
    k = len(texts)
    raw = {"shown": shown, "shuffle_seed": f"0:{pid}", "texts": [f"Answer: #{shown.index(ranking[0]) + 1}"],
           "ranking": ranking, "first_shown_won": ranking[0] == shown[0]}
    out = []
    for i in range(k):
        place = ranking.index(i)
        score = (k - 1 - place) / (k - 1)
        out.append(Judgement(pid, i, score, "ok", f"judge: ranked {place + 1} of {k}",
                             {"judge": {"score": score, "status": "ok", "reason": f"ranked {place + 1} of {k}",
                                        "raw": raw}}))
    return out


def ranking_stats(judgements: list[Judgement]) -> dict:
    groups = {j.parts["judge"]["raw"]["shuffle_seed"]: j.parts["judge"]["raw"] for j in judgements}
    return {"asked": len(judgements), "ok": len(judgements), "groups_ranked": len(groups),
            "first_shown_won": sum(g["first_shown_won"] for g in groups.values()) / len(groups),
            "first_shown_won_if_no_bias": sum(1 / len(g["shown"]) for g in groups.values()) / len(groups)}


def agent_run(path: Path, prompts: int = 4, n: int = 3) -> Path:
    """One agent round: trajectories with tool calls (one carries the payload in a tool's reply)."""
    path.mkdir(parents=True, exist_ok=True)
    spec = task_config(prompts, 3)
    task = ArithmeticTask(**{k: v for k, v in spec.items() if k != "_target_"})
    OmegaConf.save({"name": "agent", "seed": 0, "filter": dataclasses.asdict(FILTER), "task": spec},
                   path / "config.yaml")
    m = Manifest(path / "manifest.json", {"name": "agent", "rounds": {}, "status": "running"})
    trajectories, judgements = [], []
    for p in task.train:
        for i in range(n):
            answer = p.reference if i == 0 else str(i)
            obs = PAYLOAD if (p is task.train[0] and i == 1) else answer
            steps = [Step(f"Thought: add them.\nAction: calculator[{p.id}]", [1, 2], "stop", "ok", "calculator",
                          {"expression": p.id}, obs, [3], "ok", "add them"),
                     Step(f"Action: finish[{answer}]", [4], "stop", "ok", "finish", {"answer": answer})]
            trajectories.append(Trajectory(1, p.id, i, "base", 0, [0], steps, answer, "finish"))
            judgements.append(Judgement(p.id, i, float(i == 0), "ok", "numeric match" if i == 0 else "no match"))
    write_jsonl(path / "round_001/grow/trajectories.jsonl", trajectories)
    write_jsonl(path / "round_001/improve/judgements.jsonl", judgements)
    kept = [{"round": 1, "prompt_id": t.prompt_id, "sample_idx": t.sample_idx, "turn": s, "input_ids": [1],
             "mask": [1], "score": 1.0, "policy": "base", "seed": 0, "reward": "numeric_match"}
            for t in trajectories if t.sample_idx == 0 for s in range(2)]  # per step: two examples a trajectory
    write_jsonl(path / "round_001/improve/kept.jsonl", kept)
    write_json(path / "round_001/improve/stats.json", {"samples": len(judgements), "kept": len(task.train)})
    for r in (0, 1):
        rows = [{**dataclasses.asdict(Trajectory(r, p.id, 0, "base", 0, [], [], p.reference, "finish")),
                 "score": 1.0, "status": "ok", "f1": 1.0} for p in task.heldout]
        write_jsonl(path / f"round_{r:03d}/eval/completions.jsonl", rows)
        metrics = {"round": r, "policy": "base", "metric": "accuracy", "value": 1.0, "pass_at": None}
        write_json(path / f"round_{r:03d}/eval/metrics.json", metrics)
        m.stage_done(r, "eval", metrics)
    m.note(status="finished")
    return path

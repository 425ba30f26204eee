"""Judges over agent trajectories: the trajectory ranking judge, the relevance and grounding self-checks,
and step-level AI feedback.

The fast tests use a scripted judge (in process, or over real HTTP with tests/judge_server.py injecting
faults) that knows each question's right answer; a fake engine stands in for vLLM where the point is
what step feedback does with what it draws. The slow tests run the real engine on the tiny model: the
judge constrained to its format, step feedback's alternatives drawn with the rollout's constrained
decoding, and one agent round with both turned on through the CLI.
"""

from __future__ import annotations

import json
import re

import pytest

from rest_loop.agent.actions import ReactFormat
from rest_loop.agent.feedback import StepChoice, StepFeedback, describe, step_examples
from rest_loop.agent.grow import answer_sample
from rest_loop.agent.judge import TrajectoryCheck, TrajectoryRankingJudge, shared_prefix
from rest_loop.agent.records import Step, Trajectory
from rest_loop.config import ConfigError, SamplerConfig, build, validate
from rest_loop.engine import BASE, Completion
from rest_loop.improve.backends import OpenAIBackend, Reply, Usage
from rest_loop.improve.filters import select
from rest_loop.improve.rewards import Reward
from rest_loop.records import Prompt, to_dict
from tests.conftest import compose_config
from tests.judge_server import JudgeServer

QUESTIONS = {
    "q1": ("Which company does Dana Whitfield work for?", "Orion Mills", "Dana Whitfield"),
    "q2": ("In which city does Omar Haddad live?", "Port Ellis", "Omar Haddad"),
}
PROMPTS = {pid: Prompt(pid, [{"role": "user", "content": q}], reference=a, input=q)
           for pid, (q, a, _) in QUESTIONS.items()}
WRONG = {"q1": "Bluefen Labs", "q2": "Marrowby"}


def step(text, tool=None, args=None, obs=None, ids=None, parse="ok"):
    return Step(text, ids or [1000 + ord(ch) for ch in text], "stop", parse, tool, args or {}, observation=obs,
                observation_ids=[11, len(obs or "")] if obs is not None else [], tool_status="ok" if obs else None)


def search(pid):
    name = QUESTIONS[pid][2]
    return step(f"Thought: look up {name}\nAction: search[{name}]", "search", {"query": name},
                f"[{name.lower().replace(' ', '-')}] {name} works for {QUESTIONS[pid][1]}.")


def finish(answer):
    return step(f"Action: finish[{answer}]", "finish", {"answer": answer})


def trajectory(pid, idx, steps, answer=None, stop=None):
    return Trajectory(1, pid, idx, "base", 0, prompt_ids=[1, 2, 3], steps=steps, answer=answer,
                      stop=stop or ("finish" if answer is not None else "max_steps"))


def group(pid):
    """Four trajectories of one question: #2 is right; all but #3 search first."""
    right, wrong = QUESTIONS[pid][1], WRONG[pid]
    return [trajectory(pid, 0, [search(pid), finish(wrong)], wrong),
            trajectory(pid, 1, [search(pid), search(pid)], None, "max_steps"),
            trajectory(pid, 2, [search(pid), finish(right)], right),
            trajectory(pid, 3, [finish(wrong)], wrong)]


def samples_of(trajectories):
    samples = [answer_sample(t) for t in trajectories]
    return [PROMPTS[s.prompt_id] for s in samples], samples


def attempts(content: str) -> list[tuple[str, str]]:
    """(number, final answer) per attempt shown in a trajectory-ranking prompt."""
    return re.findall(r"Attempt #(\d+):.*?Final answer: ([^\n]*)", content, re.S)


def oracle(content: str) -> str:
    """A capable judge: it knows each question's answer (it does not need the reference shown) and ranks the
    attempts with that final answer first, the rest in the order shown."""
    question = re.search(r"Question:\n(.*)", content).group(1)
    right = next(a for q, a, _ in QUESTIONS.values() if q == question)
    if "Candidate next step #" in content:  # step ranking: a right finish, then a search, then the rest
        shown = re.findall(r"Candidate next step #(\d+):\n(.*?)(?=\n\nCandidate next step #|\Z)", content, re.S)
        order = sorted(shown, key=lambda c: (f"finish[{right}]" not in c[1], "search[" not in c[1]))
    else:
        order = sorted(attempts(content), key=lambda c: c[1] != right)
    return (f"Explanation: the right answer is {right}.\nAnswer: #{order[0][0]}\n"
            f"Ranking: {' > '.join('#' + n for n, _ in order)}")


class Scripted:
    """A judge backend in this process: `answer(prompt text) -> reply text` (or a Reply)."""

    def __init__(self, answer):
        self.answer, self.identity, self.cache, self.usage = answer, {"backend": "scripted"}, None, Usage()
        self.asked: list[str] = []

    def send(self, requests, on_reply):
        for i, r in enumerate(requests):
            self.asked.append(r.messages[-1]["content"])
            self.usage.requests += 1
            reply = self.answer(r.messages[-1]["content"])
            on_reply(i, reply if isinstance(reply, Reply) else Reply(reply, finish_reason="stop"))


def ranking_judge(prompts_dir, backend, **kw):
    return TrajectoryRankingJudge("judge/trajectory_ranking.j2", prompts_dir, backend, **kw)


# -- what the judge is shown ------------------------------------------------------------------------------

@pytest.mark.parametrize("case,shared,identical,shown_once,own_first_step", [
    ("no shared steps", 0, False, False, "Step 1:"),
    ("one shared step", 1, False, True, "Step 2:"),
    ("identical trajectories", 0, True, False, "Step 1:"),
])
def test_shared_prefix_is_shown_once(prompts_dir, case, shared, identical, shown_once, own_first_step):
    q = "q1"
    if case == "no shared steps":
        ts = [trajectory(q, 0, [search(q), finish("Orion Mills")], "Orion Mills"),
              trajectory(q, 1, [finish("Bluefen Labs")], "Bluefen Labs")]
    elif case == "one shared step":
        ts = [trajectory(q, 0, [search(q), finish("Orion Mills")], "Orion Mills"),
              trajectory(q, 1, [search(q), finish("Bluefen Labs")], "Bluefen Labs")]
    else:
        ts = [trajectory(q, i, [search(q), finish("Orion Mills")], "Orion Mills") for i in range(3)]
    assert shared_prefix(ts) == shared
    ps, ss = samples_of(ts)
    content = ranking_judge(prompts_dir, Scripted(oracle)).request(ps[0], ss, 0).messages[0]["content"]
    observation = ts[0].steps[0].observation
    assert ("Every attempt begins with these same steps" in content) == shown_once
    assert content.count(f"Observation: {observation}") == (1 if shown_once else sum(
        s.observation == observation for t in ts for s in t.steps))
    for n, t in enumerate(ts, 1):  # each attempt shows its own steps, numbered on from the shared ones
        part = content.split(f"Attempt #{n}:")[1].split("Attempt #")[0]
        assert re.sub(r"^ \(after the shared steps\)", "", part).lstrip().startswith(own_first_step)
        assert f"Final answer: {t.answer}" in part
        assert "Tool call: finish {\"answer\": " in part
    assert "Reference answer: Orion Mills" in content and content.count("Attempt #") == len(ts)


def test_an_unanswered_trajectory_says_why(prompts_dir):
    ps, ss = samples_of(group("q1"))
    content = ranking_judge(prompts_dir, Scripted(oracle)).request(ps[0], ss, 0).messages[0]["content"]
    assert "Final answer: none (it ran out of steps)" in content
    long = trajectory("q1", 0, [step("Action: search[x]", "search", {"query": "x"}, "y" * 2000)], None, "max_steps")
    cut = ranking_judge(prompts_dir, Scripted(oracle), max_observation_chars=50).request(
        ps[0], [answer_sample(long), ss[0]], 0).messages[0]["content"]
    assert "y" * 50 + " [cut: 2000 characters]" in cut and "y" * 51 not in cut


# -- scores, statuses and position bias with a scripted judge ---------------------------------------------

def test_the_right_trajectory_ranks_first_and_the_shuffle_is_recorded(prompts_dir):
    ps, ss = samples_of(group("q1") + group("q2"))
    backend = Scripted(oracle)
    judge = ranking_judge(prompts_dir, backend, seed=3)
    results = judge(ps, ss)
    assert len(backend.asked) == 2 and all(r.status == "ok" for r in results)
    for i in (0, 4):  # per question: the right one (sample 2) scores 1.0, the others one place each below
        scores = [r.score for r in results[i:i + 4]]
        assert scores[2] == 1.0 and sorted(scores) == pytest.approx([0, 1 / 3, 2 / 3, 1])
        raw = results[i].raw
        assert raw["ranking"][0] == 2 and sorted(raw["shown"]) == [0, 1, 2, 3]
        assert raw["shuffle_seed"].startswith("3:q") and raw["texts"][0].startswith("Explanation:")
        assert raw["shared_steps"] == 0 and raw["identical"] is False  # #3 went straight to finish
    again = ranking_judge(prompts_dir, Scripted(oracle), seed=3)(ps, ss)
    assert [r.raw["shown"] for r in again] == [r.raw["shown"] for r in results]  # the seed decides the order
    stats = judge.stats(results)
    assert stats["status"] == {"ok": 8, "unparsed": 0, "error": 0} and stats["groups_ranked"] == 2
    assert stats["first_shown_won_if_no_bias"] == pytest.approx(1 / 4)


def test_best_of_n_keeps_the_top_trajectory_per_question(prompts_dir):
    ps, ss = samples_of(group("q1") + group("q2"))
    reward = Reward("trajectory_ranking", {"judge": (ranking_judge(prompts_dir, Scripted(oracle)), 1.0)})
    judgements = reward(PROMPTS, ss)
    f = validate(compose_config("filter=best_of_n")).filter
    chosen, _ = select(ss, judgements, f, round=1, seed=0)
    assert [(s.prompt_id, s.sample_idx, s.text) for s, _ in chosen] == [("q1", 2, "Orion Mills"),
                                                                        ("q2", 2, "Port Ellis")]
    assert all(s.trajectory is not None for s, _ in chosen)


def test_second_pass_exposes_a_judge_that_always_picks_the_first_shown(prompts_dir):
    ps, ss = samples_of(group("q1") + group("q2"))
    honest = ranking_judge(prompts_dir, Scripted(oracle), second_pass=True)
    stats = honest.stats(honest(ps, ss))
    assert stats["second_pass_agree_best"] == 1.0  # the right one wins in either order

    def first_shown(content):
        n = len(attempts(content))
        return "Explanation: the first.\nAnswer: #1\nRanking: " + " > ".join(f"#{i}" for i in range(1, n + 1))

    biased = ranking_judge(prompts_dir, Scripted(first_shown), second_pass=True)
    results = biased(ps, ss)
    stats = biased.stats(results)
    assert stats["first_shown_won"] == 1.0 and stats["second_pass_agree_best"] == 0.0
    assert stats["second_pass_kendall_tau"] == -1.0
    assert all(r.score == pytest.approx(0.5) for r in results)  # first once, last once: no preference left


@pytest.mark.parametrize("reply", ["I like #2 best.", "Answer: #2\nRanking: #1 > #2 > #3 > #4",
                                   "Ranking: #1 > #2", ""])
def test_an_unparsed_ranking_is_no_score(prompts_dir, reply):
    ps, ss = samples_of(group("q1"))
    results = ranking_judge(prompts_dir, Scripted(lambda _: reply))(ps, ss)
    assert [(r.status, r.score) for r in results] == [("unparsed", None)] * 4
    assert results[0].raw["text"] == reply and "shared_steps" in results[0].raw
    judgements = Reward("r", {"judge": (ranking_judge(prompts_dir, Scripted(lambda _: reply)), 1.0)})(PROMPTS, ss)
    assert all(j.status == "unparsed" and j.score is None for j in judgements)


def test_plain_samples_are_refused(prompts_dir):
    from rest_loop.records import Sample

    with pytest.raises(ConfigError, match="judge_ranking"):
        ranking_judge(prompts_dir, Scripted(oracle))([PROMPTS["q1"]] * 2, [Sample(1, "q1", i, "x", 1, "base", 0)
                                                                          for i in range(2)])


# -- over HTTP, with faults -------------------------------------------------------------------------------

def test_ranking_over_http_rides_out_faults_and_retries_an_unparsable_answer(prompts_dir, tmp_path):
    with JudgeServer(lambda body: oracle(body["messages"][-1]["content"])) as server:
        backend = OpenAIBackend(model="judge-test", base_url=server.url, api_key_env=None, timeout=2.0, max_retries=3,
                                backoff=0.01, max_concurrency=2, cache=str(tmp_path / "judge.sqlite"))
        server.push_faults("500", "429", "malformed", "unparsable")
        judge = ranking_judge(prompts_dir, backend, max_tokens=200)
        ps, ss = samples_of(group("q1") + group("q2"))
        reward = Reward("trajectory_ranking", {"judge": (judge, 1.0)})
        judgements = reward(PROMPTS, ss, retries=2)
        assert [j.status for j in judgements] == ["ok"] * 8
        assert [j.score for j in judgements if j.sample_idx == 2] == [1.0, 1.0]
        assert reward.last_stats["judge"]["recovered_by_retry"] == 4  # the group that got "I cannot decide."
        assert backend.usage.retries == 3 and backend.usage.errors == 0
        body = server.answered[0]
        assert body["model"] == "judge-test" and "Attempt #4:" in body["messages"][0]["content"]
        sent = len(server.answered)
        reward(PROMPTS, ss, retries=2)
        assert len(server.answered) == sent  # asked again: all from the cache


# -- relevance and grounding self-checks ------------------------------------------------------------------

def grounding_oracle(content: str) -> str:
    """Rates 9 when the final answer is written in one of the observations shown, else 2."""
    answer = content.rsplit("Final answer:\n", 1)[1].strip()
    observations = content.split("Observations:", 1)[1].split("Final answer:")[0]
    return f"Checked.\nRating: {9 if answer in observations else 2}"


def test_grounding_reads_the_observations_and_gates_the_ranking(prompts_dir):
    ts = group("q1")  # #3 answered without looking
    ps, ss = samples_of(ts)
    backend = Scripted(grounding_oracle)
    check = TrajectoryCheck("judge/grounding.j2", prompts_dir, backend)
    results = check(ps, ss)
    assert [r.status for r in results] == ["ok"] * 4
    assert [r.score for r in results] == [pytest.approx(1 / 8), 0.0, 1.0, pytest.approx(1 / 8)]
    assert results[1].reason == "no final answer" and len(backend.asked) == 3  # no call for an answerless one
    assert "Orion Mills." in backend.asked[0] and "(none: the agent called no tool" in backend.asked[2]

    # as a gate: only the grounded ones are ranked (#1 now searched twice and answered right too)
    ts[1] = trajectory("q1", 1, [search("q1"), search("q1"), finish("Orion Mills")], "Orion Mills")
    ps, ss = samples_of(ts)
    ranker = Scripted(oracle)
    gate = TrajectoryCheck("judge/grounding.j2", prompts_dir, Scripted(grounding_oracle))
    reward = Reward("r", {"grounding": (gate, 0.0), "judge": (ranking_judge(prompts_dir, ranker), 1.0)},
                    gates={"grounding": 0.5})
    judgements = reward(PROMPTS, ss)
    assert [j.score for j in (judgements[0], judgements[3])] == [0.0, 0.0]
    assert all("gate grounding failed" in judgements[i].reason for i in (0, 3))
    assert sorted(judgements[i].score for i in (1, 2)) == [0.0, 1.0] and len(ranker.asked) == 1
    assert len(attempts(ranker.asked[0])) == 2  # the two grounded ones, ranked against each other
    assert "Every attempt begins with these same steps" in ranker.asked[0]  # both searched first


def test_relevance_rationale_and_pointwise_modes(prompts_dir):
    ps, ss = samples_of(group("q2"))
    rationale = TrajectoryCheck("judge/relevance.j2", prompts_dir, Scripted(lambda c: "A city.\nRating: 8"))
    assert [r.score for r in rationale(ps, ss)] == pytest.approx([7 / 8, 0.0, 7 / 8, 7 / 8])
    backend = Scripted(lambda c: Reply("9", {"9": -0.01, "8": -5.0}))
    pointwise = TrajectoryCheck("judge/relevance.j2", prompts_dir, backend, mode="pointwise")
    results = pointwise(ps, ss)
    assert results[0].status == "ok" and results[0].score > 0.95 and "Marrowby" in backend.asked[0]
    unparsed = TrajectoryCheck("judge/relevance.j2", prompts_dir, Scripted(lambda c: "Hmm."))(ps, ss)
    assert [(r.status, r.score) for r in unparsed] == [("unparsed", None), ("ok", 0.0), ("unparsed", None),
                                                       ("unparsed", None)]
    with pytest.raises(ConfigError, match="mode"):
        TrajectoryCheck("judge/relevance.j2", prompts_dir, backend, mode="vibes")


def test_the_reward_config_builds_with_the_checks_off_until_asked(tmp_path):
    cfg = compose_config("reward=trajectory_ranking", f"paths.cache={tmp_path}", run_dir=str(tmp_path))
    reward = Reward.from_config(cfg.reward)
    assert list(reward.terms) == ["judge"] and isinstance(reward.terms["judge"][0], TrajectoryRankingJudge)
    cfg = compose_config("reward=trajectory_ranking", "reward.terms.grounding.gate=0.5", f"paths.cache={tmp_path}",
                         "reward.terms.relevance.weight=0.2", run_dir=str(tmp_path))
    reward = Reward.from_config(cfg.reward)
    assert reward.gates == {"grounding": 0.5} and reward.order[0] == "grounding"
    assert "relevance:trajectory_check:rationale:judge/relevance.j2" in reward.version
    for agent in ("react", "tool_calls"):
        composed = compose_config("env=calculator", f"agent={agent}", "agent.step_feedback.k=3",
                                  f"paths.cache={tmp_path}", run_dir=str(tmp_path))
        feedback = build(composed.agent.step_feedback)
        assert isinstance(feedback, StepFeedback) and feedback.k == 3
        assert compose_config("env=calculator", f"agent={agent}", run_dir=str(tmp_path)).agent.step_feedback.k == 0


# -- step feedback ----------------------------------------------------------------------------------------

class FakeEngine:
    """Draws scripted completions: for each history, the next of `texts` (token ids: one per character)."""

    def __init__(self, texts):
        self.texts, self.calls = list(texts), []

    def generate(self, prompts, params, policy=BASE, use_tqdm=True, seed=None, fresh_cache=True):
        self.calls.append({"prompts": prompts, "params": params, "seed": seed, "fresh_cache": fresh_cache})
        return [[Completion(t, [1000 + ord(ch) for ch in t], "stop")] for t in self.texts[:len(prompts)]]


def feedback(prompts_dir, backend, k=3, **kw):
    return StepFeedback(k, "judge/step_ranking.j2", prompts_dir, backend, **kw)


def kept_trajectory():
    """A kept trajectory that searched, then answered wrong: a right finish among its alternatives should win."""
    return trajectory("q1", 2, [search("q1"), finish("Bluefen Labs")], "Bluefen Labs")


SPECS_PARAMS = {"search": "query", "finish": "answer"}


def specs():
    return [{"type": "function", "function": {"name": n, "description": f"the {n} tool", "parameters": {
        "type": "object", "properties": {p: {"type": "string"}}, "required": [p]}}} for n, p in SPECS_PARAMS.items()]


def test_step_feedback_trains_on_the_judges_pick_with_its_exact_tokens(prompts_dir):
    t = kept_trajectory()
    alternatives = [  # per step, k=3 draws: step 0 (the search) then step 1 (the wrong finish)
        "Thought: look up Dana Whitfield\nAction: search[Dana Whitfield]",  # step 0: the same as its own turn
        "Action: finish[no idea]",
        "I am not sure.",  # does not parse: never a candidate
        "Action: finish[Orion Mills]",  # step 1: the right answer
        "Action: finish[Bluefen Labs]",  # the same as its own turn
        "Action: search[Orion Mills]",
    ]
    engine = FakeEngine(alternatives)
    backend = Scripted(oracle)
    fb = feedback(prompts_dir, backend, seed=5)
    sampler = SamplerConfig(n=4, temperature=0.5, max_tokens=48)
    choices = fb(engine, BASE, ReactFormat(prompts_dir), specs(), sampler, [(t, 1.0)], PROMPTS, seed=123)

    call = engine.calls[0]  # each step's history k times, drawn with the rollout's parameters
    assert call["prompts"] == [t.history(0)] * 3 + [t.history(1)] * 3
    assert t.history(1) == t.prompt_ids + t.steps[0].token_ids + t.steps[0].observation_ids
    assert call["params"]["n"] == 1 and call["params"]["temperature"] == 0.5 and call["params"]["max_tokens"] == 48
    assert call["seed"] == 123 and call["fresh_cache"] is True

    first, second = choices
    assert [c.parse for c in first.candidates] == ["ok", "ok", "ok", "unparsed"]
    assert first.candidates[1].duplicate_of == 0
    assert first.status == "ok" and first.chosen == 0  # the search beats "finish[no idea]" before any evidence
    assert second.status == "ok" and second.chosen == 1 and second.candidates[2].duplicate_of == 0
    assert second.candidates[1].score == 1.0 and second.judge["ranking"][0] == 1
    assert second.judge["texts"][0].startswith("Explanation:") and "shuffle_seed" in second.judge
    asked = backend.asked[1]  # the judge saw the question, the history so far, and the candidates
    assert "History so far:" in asked and "Observation: [dana-whitfield]" in asked
    assert asked.count("Candidate next step #") == 3 and "finish[Orion Mills]" in asked

    examples = step_examples(choices, {("q1", 2): t}, "r", step=1, max_length=None)
    assert [e.turn for e in examples] == [0, 1]
    win = second.candidates[1]
    assert examples[1].input_ids == t.history(1) + win.token_ids  # the pick's tokens, as drawn
    assert win.token_ids == [1000 + ord(ch) for ch in "Action: finish[Orion Mills]"]
    assert examples[1].mask == [0] * len(t.history(1)) + [1] * len(win.token_ids)
    assert examples[1].source == "step_feedback" and examples[0].source == "grown"
    assert examples[0].input_ids == t.history(0) + t.steps[0].token_ids

    counts = describe(choices, fb.last_stats)
    assert counts["alternatives_won"] == 1 and counts["own_step_won"] == 1 and counts["duplicates"] == 2
    assert counts["alternatives_parsed"] == 5 and counts["judge"]["groups_ranked"] == 2
    assert counts["judge"]["usage"]["requests"] == 2
    row = json.loads(json.dumps(to_dict(choices[1])))  # a JSONL row reads back as the same record
    assert StepChoice.from_dict(row) == choices[1]


def test_step_feedback_keeps_the_own_turn_when_the_judge_cannot_rank(prompts_dir):
    t = kept_trajectory()
    t.steps[1] = step("I give up.", parse="unparsed")  # its last turn held no action
    engine = FakeEngine(["Action: search[a]", "Action: search[b]", "Action: search[c]",
                         "Action: finish[Orion Mills]", "nothing", "nothing either"])
    backend = Scripted(lambda c: "Both look fine to me.")
    fb = feedback(prompts_dir, backend, retries=2)
    choices = fb(engine, BASE, ReactFormat(prompts_dir), specs(), SamplerConfig(), [(t, 1.0)], PROMPTS, seed=0)
    first, second = choices
    assert (first.status, first.chosen, first.judge["text"]) == ("unparsed", 0, "Both look fine to me.")
    assert "keeps its own turn" in first.reason and all(c.score is None for c in first.candidates)
    assert len(backend.asked) == 3  # the first ask and two retries, for the one step that had a ranking to make
    assert (second.status, second.chosen) == ("single", 1)  # its own turn did not parse; one alternative did
    examples = step_examples(choices, {("q1", 2): t}, "r")
    assert [e.input_ids[-len("Action: finish[Orion Mills]"):] for e in examples][1] == [
        1000 + ord(ch) for ch in "Action: finish[Orion Mills]"]
    counts = describe(choices, fb.last_stats)
    assert counts["status"] == {"unparsed": 1, "single": 1} and counts["own_step_kept_unjudged"] == 1


def test_step_feedback_settings_are_checked(prompts_dir):
    with pytest.raises(ConfigError, match="step_feedback.k=9"):
        feedback(prompts_dir, Scripted(oracle), k=9)
    with pytest.raises(ConfigError, match="retries"):
        feedback(prompts_dir, Scripted(oracle), retries=-1)


# -- on the real engine (tiny model): constrained judges, step feedback's draws, one agent round ----------

@pytest.fixture(scope="module")
def tiny_config(tiny_model):
    from rest_loop.config import ModelConfig
    from rest_loop.engine import close_engines

    yield ModelConfig(source=tiny_model, max_model_len=1024, kv_cache_gb=1)
    close_engines()  # later tests start engines of their own


@pytest.mark.slow
def test_constrained_trajectory_judges_on_the_engine_always_parse(prompts_dir, tiny_config, tmp_path):
    """A random-weight model cannot judge; constrained, its ranking and ratings parse, unless the reply is cut at
    max_tokens: the explanation's 400 characters can take more than 512 tokens when a random model writes
    multi-byte characters a byte at a time (SmolLM2 does not; tests/test_judge_engine.py). A cut reply is
    unparsed, never a score."""
    from rest_loop.improve.backends import LocalBackend

    backend = LocalBackend(tiny_config, seed=0, cache=str(tmp_path / "judge.sqlite"))
    ps, ss = samples_of(group("q1")[:3] + group("q2")[:3])  # 3 each: the prompt and 512 tokens fit in 1024
    judge = ranking_judge(prompts_dir, backend, constrain=True, temperature=0.7, second_pass=True)
    results = judge(ps, ss)
    assert backend.usage.requests == 4  # 2 questions x 2 passes
    ranked = [i for i in (0, 3) if results[i].status == "ok"]
    assert ranked, [r.raw for r in results]
    for i in (0, 3):
        if i not in ranked:  # cut short: no ranking line, and no score for anyone in the group
            assert results[i].status == "unparsed" and "Ranking:" not in results[i].raw["text"], results[i].raw
            assert all(r.score is None for r in results[i:i + 3])
            continue
        assert sum(r.score for r in results[i:i + 3]) == pytest.approx(1.5)  # places 1..3, in each of two passes
        assert re.fullmatch(r"Explanation: [^\n]+\nAnswer: #\d\nRanking: #\d( > #\d){2}", results[i].raw["texts"][0])
    stats = judge.stats(results)
    assert stats["groups_ranked"] == len(ranked) and "second_pass_agree_best" in stats
    check = TrajectoryCheck("judge/grounding.j2", prompts_dir, backend, constrain=True, max_tokens=512)
    checked = check(ps, ss)
    for r in checked:
        assert (r.status == "ok" and 0 <= r.score <= 1) or (r.status, r.raw["finish_reason"]) == ("unparsed", "length")
    assert sum(r.status == "ok" for r in checked) >= 2 and checked[1].reason == "no final answer"
    assert backend.usage.requests == 4 + 4  # the two answerless trajectories are not asked about


@pytest.mark.slow
def test_step_feedback_on_the_engine_trains_on_the_judges_pick(prompts_dir, tiny_config, tmp_path):
    from rest_loop.agent.rollout import Renderer
    from rest_loop.engine import get_engine
    from rest_loop.improve.backends import LocalBackend

    engine = get_engine(tiny_config.source, tiny_config, 0)
    fmt = ReactFormat(prompts_dir, thought=False, constrain=True, max_chars=8)  # an action fits in max_tokens
    renderer = Renderer(engine.tokenizer, fmt, specs())
    steps = []
    for text, obs in [("Action: search[Dana Whitfield]", "Dana Whitfield works for Orion Mills."),
                      ("Action: finish[Orion Mills]", None)]:
        ids = renderer.encode(text.removeprefix(fmt.lead())) + [engine.tokenizer.eos_token_id]  # the lead is read
        action = fmt.parse(text, SPECS_PARAMS)
        steps.append(Step(text, ids, "stop", "ok", action.tool, action.arguments, observation=obs,
                          observation_ids=renderer.observation_ids(obs, ids) if obs else [],
                          tool_status="ok" if obs else None))
    t = Trajectory(1, "q1", 0, "base", 0, prompt_ids=renderer.prompt_ids(PROMPTS["q1"]), steps=steps,
                   answer="Orion Mills")
    backend = LocalBackend(tiny_config, seed=0, cache=str(tmp_path / "judge.sqlite"))
    fb = feedback(prompts_dir, backend, k=2, constrain=True, temperature=0.7)
    sampler = SamplerConfig(n=3, temperature=1.0, max_tokens=48)
    choices = fb(engine, BASE, fmt, specs(), sampler, [(t, 1.0)], PROMPTS, seed=7)
    assert [c.turn for c in choices] == [0, 1]
    for c in choices:
        assert [x.parse for x in c.candidates] == ["ok"] * 3  # constrained draws always parse
        for x in c.candidates[1:]:
            drawn = engine.tokenizer.decode(x.token_ids, skip_special_tokens=True)
            assert fmt.turn_text(drawn) == x.text and x.text.startswith("Action:")  # the lead, then the tokens as drawn
        if c.status == "ok":  # the judge's first-ranked candidate is the target
            assert c.chosen == c.judge["ranking"][0] and c.judge["texts"][0].startswith("Explanation: ")
        else:
            assert c.status == "single" and c.chosen == 0  # every alternative repeated the step's own turn
    assert any(c.status == "ok" for c in choices)
    examples = step_examples(choices, {("q1", 0): t}, "r", max_length=1024)
    for c, e in zip(choices, examples):
        target = c.candidates[c.chosen].token_ids
        assert e.input_ids == t.history(c.turn) + target and sum(e.mask) == len(target)


@pytest.mark.slow
def test_an_agent_round_with_the_ranker_and_step_feedback(tiny_model, tmp_path):
    from rest_loop.store import read_json, read_jsonl
    from tests.test_agent_loop import agent_cli
    from tests.test_loop_e2e import run_ok

    run_dir = tmp_path / "run"
    run_ok(agent_cli(run_dir, tiny_model, "task.n_train=2", "task.n_heldout=2", "loop.rounds=1", "env.max_steps=2",
                     "sampler.max_tokens=16", "eval.max_tokens=16",
                     "agent.train_on=step", "reward=trajectory_ranking", "filter=best_of_n", "filter.dedup=none",
                     "filter.unjudged=retry", "reward.terms.judge.constrain=true",
                     "reward.terms.judge.temperature=0.7", "agent.step_feedback.k=2",
                     "agent.step_feedback.constrain=true", "agent.step_feedback.temperature=0.7",
                     "model.max_model_len=1024", f"paths.cache={tmp_path / 'cache'}"))
    improve = run_dir / "round_001/improve"
    assert (improve / "DONE").exists() and (run_dir / "round_001/finetune/DONE").exists()
    judgements = read_jsonl(improve / "judgements.jsonl")
    assert len(judgements) == 2 * 3 and all(j["status"] in ("ok", "unparsed") for j in judgements)
    assert any(j["status"] == "ok" for j in judgements)  # a reply cut at max_tokens stays unparsed (see above)
    kept_trajectories = {(j["prompt_id"], j["sample_idx"]) for j in judgements if j["score"] == 1.0}
    choices = read_jsonl(improve / "step_feedback.jsonl", StepChoice)
    assert {(c.prompt_id, c.sample_idx) for c in choices} == kept_trajectories  # top-1 per question
    examples = read_jsonl(improve / "kept.jsonl")
    assert len(examples) == sum(c.chosen is not None for c in choices)
    for c, e in zip([c for c in choices if c.chosen is not None], examples):
        target = c.candidates[c.chosen].token_ids
        assert e["input_ids"][-len(target):] == target and e["turn"] == c.turn
        assert e["source"] == ("step_feedback" if c.chosen else "grown")
    stats = read_json(improve / "stats.json")
    assert stats["step_feedback"]["steps"] == len(choices) and "judge" in stats["step_feedback"]
    assert stats["reward_terms"]["judge"]["groups_ranked"] == len(kept_trajectories)
    assert read_json(improve / "DONE")["files"]["step_feedback.jsonl"]  # in the stage's checksums
    assert read_jsonl(run_dir / "round_001/finetune/train.jsonl") == examples

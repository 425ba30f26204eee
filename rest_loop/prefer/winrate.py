"""The held-out win rate of a policy against the one before it, judged pairwise in both orders.

Self-Rewarding LMs and AlpacaEval report head-to-head win rates. For each held-out prompt the judge sees
the new policy's greedy answer and the previous one's, once with the new answer first (as A) and once
second, and names the better one (`Winner: A|B|tie`, prompts/judge/pairwise.j2). A prompt scores 1 when
the new answer wins both times, 0 when it loses both, 0.5 on a split or two ties, 0.75 or 0.25 for a win
or a loss beside a tie. Identical answers count 0.5 without asking.

The judge's position bias is recorded beside it: `first_wins` is the share of its decisive verdicts that
went to the answer shown first (0.5 is no bias), `consistency` the share of prompts whose two verdicts
agree on the winner. `eval=win_rate` turns it on (conf/eval/win_rate.yaml).
"""

from __future__ import annotations

import re
from pathlib import Path

from rest_loop.improve.backends import Request, ask
from rest_loop.records import Prompt
from rest_loop.store import read_jsonl
from rest_loop.templates import Template

WINNER = re.compile(r"winner\**\s*[:=]\s*\**\s*(A|B|tie)\b", re.IGNORECASE)


class PairwiseJudge:
    name = "judge_pairwise"

    def __init__(self, template: str, prompts_dir: str, backend, max_tokens: int = 256, temperature: float = 0.0,
                 use_reference: bool = True, constrain: bool = False):
        self.template, self.backend = Template(prompts_dir, template), backend
        self.max_tokens, self.temperature, self.use_reference = max_tokens, temperature, use_reference
        self.regex = r"[^\n]{1,400}\nWinner: (A|B|tie)" if constrain else None
        self.version = f"pairwise:{self.template.version}"

    def verdicts(self, prompts: list[Prompt], firsts: list[str], seconds: list[str]) -> list[str | None]:
        """"A", "B" or "tie" per prompt; None where the judge gave no verdict (or no answer)."""
        requests = [Request([{"role": "user", "content": self.template.render(
                        input=p.input, first=a, second=b, reference=p.reference if self.use_reference else None)}],
                            max_tokens=self.max_tokens, temperature=self.temperature, regex=self.regex)
                    for p, a, b in zip(prompts, firsts, seconds)]
        return [None if r.error is not None else parse(r.text) for r in ask(self.backend, requests)]


def parse(text: str | None) -> str | None:
    found = WINNER.findall(text or "")
    return None if not found else "tie" if found[-1].lower() == "tie" else found[-1].upper()


def win_rate(judge: PairwiseJudge, prompts: list[Prompt], new: dict[str, str], old: dict[str, str]) -> dict:
    """The win rate of `new` over `old` ({prompt id: answer}) on `prompts`, and the judge's position bias."""
    shown = [p for p in prompts if p.id in new and p.id in old]
    asked = [p for p in shown if new[p.id] != old[p.id]]
    forward = judge.verdicts(asked, [new[p.id] for p in asked], [old[p.id] for p in asked])  # new shown first
    backward = judge.verdicts(asked, [old[p.id] for p in asked], [new[p.id] for p in asked])  # new shown second
    points = [0.5] * (len(shown) - len(asked))  # identical answers: a tie
    decisive = [v for v in forward + backward if v in ("A", "B")]
    agree = 0
    for f, b in zip(forward, backward):
        if f is None or b is None:
            continue
        wins = (f == "A") + (b == "B") - (f == "B") - (b == "A")  # new's wins minus its losses, -2..2
        points.append(0.5 + 0.25 * wins)
        agree += (f, b) in (("A", "B"), ("B", "A"), ("tie", "tie"))
    judged = sum(f is not None and b is not None for f, b in zip(forward, backward))
    return {
        "win_rate": sum(points) / len(points) if points else None,
        "prompts": len(shown),
        "identical": len(shown) - len(asked),
        "judged": judged,
        "unparsed": sum(v is None for v in forward + backward),
        "first_wins": sum(v == "A" for v in decisive) / len(decisive) if decisive else None,
        "consistency": agree / judged if judged else None,
        "judge": judge.version,
    }


def against_previous(judge: PairwiseJudge, prompts: list[Prompt], before: Path, now: Path) -> dict:
    """win_rate of the greedy completions in `now`/completions.jsonl over those in `before`/ (two eval stages)."""
    def answers(stage: Path) -> dict[str, str]:
        return {row["prompt_id"]: row["text"] for row in read_jsonl(stage / "completions.jsonl")}

    return {**win_rate(judge, prompts, answers(now), answers(before)), "against": before.name if before.parent == now.parent
            else f"{before.parent.name}/{before.name}"}

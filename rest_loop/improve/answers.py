"""Short-answer verifiers for QA: the answer against the reference and every alias, the best match counting.

Same signature as every reward term (verifiers.py): `term(prompts, samples) -> list[Result]`. An
agent's Sample.text is its final answer (finish's argument). No reference: status "error", no score.

    AnswerExact        equal after stripping the ends
    AnswerNormalised   equal after SQuAD normalisation: lowercase, no punctuation, no a/an/the, one space
    AnswerF1           SQuAD token F1 of the normalised texts, a score in [0, 1]

Numbers: normalised, a number is written one way before punctuation goes, so "42.0", "42" and
"42.00" match and "1,000" matches "1000", while "4.2" does not match "42" nor "-5" match "5" (plain
SQuAD strips the point and the sign as punctuation). AnswerExact compares as written.

    >>> p = Prompt("p", [], reference="Orion Mills", aliases=["Orion Mills Inc."])
    >>> AnswerNormalised()([p], [Sample(0, "p", 0, "orion mills, inc", 3, "base", 0)])
    [Result(score=1.0, status='ok', reason="'orion mills inc' == 'Orion Mills Inc.'", raw='Orion Mills Inc.')]
    >>> AnswerF1().one("the Orion Mills", [], "Orion").score
    0.6666666666666666
"""

from __future__ import annotations

import re
import string
from abc import ABC, abstractmethod
from collections import Counter
from decimal import Decimal

from rest_loop.improve.verifiers import NO_REFERENCE, Result, clip
from rest_loop.records import Prompt, Sample

ARTICLES = re.compile(r"\b(a|an|the)\b")
NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)")  # a whole token: not in "covid-19"
PUNCTUATION = set(string.punctuation)


def canonical_number(text: str) -> str:
    """42.0 -> 42, 3.50 -> 3.5, 1,000 -> 1000, -0 -> 0."""
    text = format(Decimal(text.replace(",", "")).normalize(), "f")  # normalize alone writes 1000 as 1E+3
    return "0" if text == "-0" else text


def normalise(text: str) -> str:
    """SQuAD's normalize_answer, but numbers are written one way and keep their sign and decimal point."""
    text, parts, at = text.lower(), [], 0
    for number in NUMBER.finditer(text):
        parts += ["".join(ch for ch in text[at:number.start()] if ch not in PUNCTUATION),
                  canonical_number(number.group(0))]
        at = number.end()
    parts.append("".join(ch for ch in text[at:] if ch not in PUNCTUATION))
    return " ".join(ARTICLES.sub(" ", "".join(parts)).split())


def token_f1(answer: str, gold: str) -> float:
    """SQuAD's F1 of the normalised tokens; two texts that normalise to nothing count as equal."""
    got, want = normalise(answer).split(), normalise(gold).split()
    if not got or not want:
        return float(got == want)
    same = sum((Counter(got) & Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(got), same / len(want)
    return 2 * precision * recall / (precision + recall)


class AnswerVerifier(ABC):
    """Scores `sample.text` against `prompt.reference` and `prompt.aliases`, keeping the best."""

    name = "answer"
    needs_reference = True  # a run whose task has no references is stopped before it starts

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(p.reference, p.aliases, s.text) for p, s in zip(prompts, samples)]

    @abstractmethod
    def score(self, answer: str, gold: str) -> float:
        """In [0, 1]: how well `answer` matches one gold answer."""

    @abstractmethod
    def shown(self, answer: str) -> str:
        """The answer as the reason shows it: as compared."""

    def one(self, reference: str | None, aliases: list[str], answer: str) -> Result:
        if reference is None:
            return Result(None, "error", NO_REFERENCE)
        golds = [reference, *(a for a in aliases or [] if a != reference)]
        best, gold = max(((self.score(answer, g), g) for g in golds), key=lambda pair: pair[0])  # first of ties
        seen = clip(self.shown(answer), 40)
        if best == 1.0:
            return Result(1.0, "ok", clip(f"{seen!r} == {gold!r}"), gold)
        if best == 0.0:
            others = f" (or {len(golds) - 1} alias{'es' if len(golds) > 2 else ''})" if len(golds) > 1 else ""
            return Result(0.0, "ok", clip(f"{seen!r} != {reference!r}{others}"), None)
        return Result(best, "ok", clip(f"F1 {best:.2f} against {gold!r}"), gold)


class AnswerExact(AnswerVerifier):
    """1.0 when the answer, stripped, is the reference or an alias exactly, else 0.0."""

    name = "answer_exact"

    def score(self, answer: str, gold: str) -> float:
        return float(answer.strip() == gold.strip())

    def shown(self, answer: str) -> str:
        return answer.strip()


class AnswerNormalised(AnswerVerifier):
    """1.0 when the answer equals the reference or an alias after SQuAD normalisation, else 0.0."""

    name = "answer_normalised"

    def score(self, answer: str, gold: str) -> float:
        return float(normalise(answer) == normalise(gold))

    def shown(self, answer: str) -> str:
        return normalise(answer)


class AnswerF1(AnswerVerifier):
    """SQuAD token F1 of the answer against the reference or an alias, the best of them."""

    name = "answer_f1"

    def score(self, answer: str, gold: str) -> float:
        return token_f1(answer, gold)

    def shown(self, answer: str) -> str:
        return normalise(answer)

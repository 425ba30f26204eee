"""Short-answer verifiers: tables of reference, aliases, answer, expected score and status."""

from __future__ import annotations

import doctest

import pytest

from rest_loop.improve import answers
from rest_loop.improve.answers import AnswerExact, AnswerF1, AnswerNormalised, normalise
from rest_loop.records import Prompt, Sample


def check(result, score, status):
    assert result.status == status, result.reason
    assert result.score == pytest.approx(score) if score is not None else result.score is None
    assert result.reason  # every result says why


@pytest.mark.parametrize("reference,aliases,text,score,status", [
    ("Orion Mills", [], "Orion Mills", 1.0, "ok"),
    ("Orion Mills", [], "  Orion Mills\n", 1.0, "ok"),                  # only the ends are stripped
    ("Orion Mills", [], "orion mills", 0.0, "ok"),
    ("Orion Mills", [], "Orion Mills.", 0.0, "ok"),
    ("Orion Mills", ["Orion Mills Inc."], "Orion Mills Inc.", 1.0, "ok"),  # an alias counts
    ("42", [], "42.0", 0.0, "ok"),                                        # exact: numbers as written
    (None, [], "Orion Mills", None, "error"),                             # no reference: cannot judge
    (None, ["Orion Mills"], "Orion Mills", None, "error"),                # aliases alone are no reference
])
def test_answer_exact(reference, aliases, text, score, status):
    check(AnswerExact().one(reference, aliases, text), score, status)


@pytest.mark.parametrize("reference,aliases,text,score,status", [
    ("Orion Mills", [], "orion mills", 1.0, "ok"),
    ("Orion Mills", [], "Orion Mills.", 1.0, "ok"),                       # punctuation
    ("Orion Mills", [], "  orion   MILLS!! ", 1.0, "ok"),                 # case and whitespace
    ("nurse", [], "a nurse", 1.0, "ok"),                                  # articles
    ("The Hague", [], "hague", 1.0, "ok"),
    ("rock climbing", [], "Rock-climbing", 0.0, "ok"),                    # SQuAD drops the hyphen: one token
    ("Orion Mills", ["Orion Mills Inc."], "Orion Mills, Inc", 1.0, "ok"),  # the alias
    ("Orion Mills", ["Orion Mills Inc."], "Orion", 0.0, "ok"),
    ("Dana Whitfield", [], "Dana", 0.0, "ok"),
    ("42", [], "42.0", 1.0, "ok"),                                        # numbers are written one way
    ("42", [], "42.00", 1.0, "ok"),
    ("1000", [], "1,000", 1.0, "ok"),
    ("3.5", [], "3.50", 1.0, "ok"),
    ("4.2", [], "42", 0.0, "ok"),                                         # plain SQuAD would match these
    ("-5", [], "5", 0.0, "ok"),                                           # the sign is kept
    ("-5", [], "-5.0", 1.0, "ok"),
    ("Orion Mills", [], "", 0.0, "ok"),                                   # an empty answer is wrong, not unjudged
    (None, [], "Orion Mills", None, "error"),
])
def test_answer_normalised(reference, aliases, text, score, status):
    check(AnswerNormalised().one(reference, aliases, text), score, status)


@pytest.mark.parametrize("reference,aliases,text,score", [
    ("Orion Mills", [], "Orion Mills", 1.0),
    ("Orion Mills", [], "the orion mills.", 1.0),
    ("Orion Mills", [], "Orion", 2 / 3),                                 # precision 1, recall 1/2
    ("Orion", [], "Orion Mills", 2 / 3),                                 # precision 1/2, recall 1
    ("Dana Whitfield", [], "Dana Mara Whitfield", 0.8),                  # precision 2/3, recall 1
    ("Port Ellis", [], "It is Port Ellis", 2 / 3),                       # "it is port ellis": precision 1/2
    ("Orion Mills", [], "Bluefen Labs", 0.0),
    ("Orion Mills", ["Orion Mills Inc."], "Orion Mills Inc", 1.0),       # the best gold answer counts
    ("Orion Mills Inc.", ["Orion Mills"], "Mills Inc", 0.8),             # vs the reference: p 1, r 2/3
    ("the", [], "a", 1.0),                                               # both normalise to nothing: equal
    ("Orion Mills", [], "", 0.0),
])
def test_answer_f1(reference, aliases, text, score):
    check(AnswerF1().one(reference, aliases, text), score, "ok")


def test_f1_without_a_reference_cannot_judge():
    check(AnswerF1().one(None, ["x"], "x"), None, "error")


@pytest.mark.parametrize("text,expected", [
    ("The Orion Mills, Inc.", "orion mills inc"),
    ("42.0 apples", "42 apples"),
    ("$1,000.50", "1000.5"),
    ("an   apple a day", "apple day"),
    ("COVID-19", "covid19"),                                             # not a negative number
    ("-0.0", "0"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


def test_call_reads_reference_aliases_and_text():
    prompts = [Prompt("a", [], reference="Port Ellis", aliases=["Ellis"]), Prompt("b", []),
               Prompt("c", [], reference="chess")]
    samples = [Sample(0, p.id, 0, text, 1, "base", 0) for p, text in zip(prompts, ["ellis", "x", "Chess."])]
    results = AnswerNormalised()(prompts, samples)
    assert [(r.score, r.status) for r in results] == [(1.0, "ok"), (None, "error"), (1.0, "ok")]
    assert results[0].raw == "Ellis"  # raw: the gold answer that matched


@pytest.mark.parametrize("cls", [AnswerExact, AnswerNormalised, AnswerF1])
def test_the_reward_interface(cls):
    verifier = cls()
    assert verifier.needs_reference and verifier.name.startswith("answer_")


def test_reasons_are_short():
    result = AnswerNormalised().one("Orion Mills", ["x" * 200], "y" * 500)
    assert len(result.reason) <= 80


def test_docstring_examples():
    assert doctest.testmod(answers).failed == 0

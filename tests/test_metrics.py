"""pass@k against brute force over every k-subset, and distinct-n on hand-counted examples."""

from __future__ import annotations

import doctest
from fractions import Fraction
from itertools import combinations
from math import comb

import pytest

from rest_loop import metrics
from rest_loop.metrics import default_ks, distinct_n, diversity, pass_at, pass_at_k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The fraction of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n, c, k, expected", [
    (5, 0, 1, 0.0),  # nothing correct: never
    (5, 0, 5, 0.0),
    (5, 5, 1, 1.0),  # everything correct: always
    (5, 1, 5, 1.0),  # k = n: any correct sample is drawn
    (5, 0, 5, 0.0),
    (10, 3, 1, 0.3),  # pass@1 is the fraction correct
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
])
def test_pass_at_k_edges(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize("c, k", [(1, 1), (3, 1000), (50, 10), (1990, 5)])
def test_pass_at_k_is_exact_for_large_n(c, k):
    # C(2000, 1000) ~ 2e600 is past a float's range; compare with exact rational arithmetic instead
    n = 2000
    assert pass_at_k(n, c, k) == pytest.approx(float(1 - Fraction(comb(n - c, k), comb(n, k))), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n, c, k", [(4, 2, 5), (4, 2, 0), (4, 5, 1), (4, -1, 1)])
def test_pass_at_k_rejects_undefined(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_averages_over_prompts():
    correct = [[True, True, False, False], [False] * 4, [True] * 4]
    result = pass_at(correct, [1, 2, 4])
    assert list(result) == ["1", "2", "4"]
    assert result["1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert result["2"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert result["4"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        pass_at([], [1])


@pytest.mark.parametrize("n, expected", [
    (0, []), (1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 4]), (5, [1, 2, 4, 5]), (8, [1, 2, 4, 8]),
    (10, [1, 2, 4, 8, 10]),
])
def test_default_ks(n, expected):
    assert default_ks(n) == expected


@pytest.mark.parametrize("texts, n, expected", [
    (["the cat sat", "the cat ran"], 1, 4 / 6),  # the cat sat the cat ran: 4 unique of 6
    (["the cat sat", "the cat ran"], 2, 3 / 4),  # the-cat twice, cat-sat, cat-ran
    (["The CAT, sat!", "the cat... ran"], 2, 3 / 4),  # case and punctuation do not make new words
    (["a b", "c d"], 2, 1.0),  # "b c" is not a bigram: n-grams do not cross texts
    (["a a a a"], 1, 1 / 4),
    (["a a a a"], 3, 1 / 2),  # "a a a" twice
    (["one", "two"], 2, 0.0),  # no text has two words: no bigrams
    ([], 1, 0.0),
    (["", "  ...  "], 1, 0.0),
    (["x = 12 + 30"], 1, 1.0),  # digits are words: x, 12, 30
])
def test_distinct_n(texts, n, expected):
    assert distinct_n(texts, n) == pytest.approx(expected)


def test_distinct_n_rejects_n_below_one():
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_diversity():
    assert diversity(["the cat sat", "the cat ran"]) == pytest.approx(
        {"distinct_1": 4 / 6, "distinct_2": 3 / 4, "mean_chars": 11.0})
    assert diversity([]) == {"distinct_1": 0.0, "distinct_2": 0.0, "mean_chars": 0.0}


def test_docstring_examples():
    assert doctest.testmod(metrics).failed == 0

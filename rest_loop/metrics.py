"""Numbers reported about completions: pass@k and lexical diversity. Pure functions, no heavy imports.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"):
draw n samples per prompt, count the c that are correct, and estimate the chance
that at least one of k samples is correct as 1 - C(n-c, k) / C(n, k). This is
unbiased for every k <= n, unlike 1 - (1 - c/n)**k, which is biased low.

distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
Conversation Models"): unique word n-grams / all word n-grams, over a whole
corpus. Self-training that collapses onto one phrasing shows up here first,
often before the reward moves.

    >>> pass_at_k(n=4, c=1, k=2)
    0.5
    >>> pass_at([[True, False], [False, False]], ks=[1, 2])
    {'1': 0.25, '2': 0.5}
    >>> distinct_n(["the cat sat", "the cat ran"], 2)
    0.75
"""

from __future__ import annotations

import re

WORD = re.compile(r"\w+")  # runs of letters, digits and _: whitespace and punctuation separate words


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k from n samples of which c are correct; needs 0 <= c <= n and 1 <= k <= n.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which equals 1 - C(n-c, k)/C(n, k)
    in c float steps, without binomials (as floats they overflow past n ~ 1030).
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} must be in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} must be in [1, n={n}]: the estimator is defined only for k <= n")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def pass_at(correct_per_prompt: list[list[bool]], ks: list[int]) -> dict[str, float]:
    """Mean pass@k over prompts for each k, keyed "1", "2", ... (JSON keys are strings anyway).

    Each prompt's n is the length of its list, so every k must be <= the shortest list.
    """
    if not correct_per_prompt:
        raise ValueError("pass_at: no prompts; the mean over none is undefined")
    return {str(k): sum(pass_at_k(len(cs), sum(cs), k) for cs in correct_per_prompt) / len(correct_per_prompt)
            for k in ks}


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself: pass@k rises roughly with log k, so powers of two suffice.

    >>> default_ks(6)
    [1, 2, 4, 6]
    """
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def distinct_n(texts: list[str], n: int) -> float:
    """Corpus-level distinct-n: unique word n-grams / total word n-grams over all texts.

    N-grams never span two texts. Texts shorter than n words add none; with no
    n-grams at all the result is 0.0 (nothing was said, so nothing varied), never
    a division by zero.
    """
    if n < 1:
        raise ValueError(f"distinct_n: n={n} must be >= 1")
    grams = [tuple(ws[i:i + n]) for ws in map(words, texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def diversity(texts: list[str]) -> dict[str, float]:
    """distinct-1, distinct-2 and the mean length in characters (0.0 for no texts).

    Length sits beside distinct-n because distinct-n falls as texts grow longer:
    a drop with a rise in length is not the same finding as a drop alone.
    """
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "mean_chars": sum(map(len, texts)) / len(texts) if texts else 0.0,
    }

"""Drop synthesised rows that repeat each other, a seed example or a held-out prompt; count every stage.

    kept, stages = dedup(rows, against={"seeds": [ex.input for ex in seeds],
                                        "heldout": [p.input for p in task.heldout]})

The stages, in order, each leaving `{"stage", "in", "out", "dropped": [first few: id, like, score]}`:

    exact              the same text once normalised (Unicode NFKC, case, whitespace): the first stays
    exact_<name>       the same normalised text as one of against[name]
    near_<name>        a near-duplicate of one of against[name]: no held-out question, reworded or not,
                       reaches the training set
    near               a near-duplicate of an earlier kept row: the first stays

Near-duplicate means ROUGE-L F1 over words >= `threshold` (0.7: Self-Instruct drops a new
instruction whose ROUGE-L against any in the pool exceeds 0.7), so case, punctuation and a changed
word or two do not make a row new. Comparing every row with every other is quadratic, so candidates
come from MinHash LSH (datasketch) over each row's set of words, tuned to find pairs whose word
Jaccard is over `lsh_threshold` (lower than the ROUGE-L bar, so it misses few true pairs), and ROUGE-L
decides among them. The work is near-linear in rows while candidates per row stay few (bench/synth_dedup.py).

    >>> from types import SimpleNamespace as Row
    >>> rows = [Row(id="a", input="Name three rivers in Peru."), Row(id="b", input="name three RIVERS in peru!"),
    ...         Row(id="c", input="What is 17 times 3?")]
    >>> kept, stages = dedup(rows, against={"heldout": ["What is 17 times 3 ?"]})
    >>> [r.id for r in kept], [(s["stage"], s["in"], s["out"]) for s in stages]
    (['a'], [('exact', 3, 3), ('exact_heldout', 3, 3), ('near_heldout', 3, 2), ('near', 2, 1)])
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Any, Sequence

from datasketch import MinHash, MinHashLSH

from rest_loop.metrics import words

THRESHOLD = 0.7  # ROUGE-L F1 at or over which two texts are one (Self-Instruct)
LSH_THRESHOLD = 0.5  # word-set Jaccard the LSH bands are tuned for: candidates only, ROUGE-L decides
NUM_PERM = 128
SHOW = 20  # dropped rows listed per stage


def normalise(text: str) -> str:
    """What makes two texts the same text: Unicode form, case and whitespace aside."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def tokens(text: str) -> list[str]:
    """Words, lowercased, punctuation dropped: what ROUGE-L and the MinHash compare."""
    return words(unicodedata.normalize("NFKC", text))


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists: 2 * LCS / (len(a) + len(b)).

    >>> rouge_l("the cat sat on the mat".split(), "the cat lay on the mat".split())
    0.8333333333333334
    """
    if not a or not b:
        return 0.0
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)  # one row of the LCS table at a time
    for x in a:
        prev = 0  # the table's value up-left of the cell
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return 2 * row[-1] / (len(a) + len(b))


class Near:
    """Texts indexed for near-duplicate lookup: LSH for candidates, ROUGE-L to confirm."""

    def __init__(self, threshold: float = THRESHOLD, lsh_threshold: float = LSH_THRESHOLD, num_perm: int = NUM_PERM):
        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm)
        self.toks: dict[Any, list[str]] = {}
        self.counts: dict[Any, Counter] = {}
        self.compared = 0  # ROUGE-L computations: the part that would grow if candidates per row grew

    def signatures(self, token_lists: list[list[str]]) -> list[MinHash]:
        return MinHash.bulk([{t.encode() for t in toks} for toks in token_lists], num_perm=self.num_perm)

    def add(self, key: Any, toks: list[str], signature: MinHash) -> None:
        self.lsh.insert(key, signature, check_duplication=False)
        self.toks[key], self.counts[key] = toks, Counter(toks)

    def match(self, toks: list[str], signature: MinHash) -> tuple[Any, float] | None:
        """The first-added indexed text whose ROUGE-L with `toks` is >= threshold, and the score."""
        counts, best = Counter(toks), None
        for key in self.lsh.query(signature):
            other = self.toks[key]
            overlap = sum((counts & self.counts[key]).values())  # LCS <= shared words: a cheap upper bound
            if 2 * overlap / max(1, len(toks) + len(other)) < self.threshold:
                continue
            self.compared += 1
            score = rouge_l(toks, other)
            if score >= self.threshold and (best is None or key < best[0]):
                best = (key, score)
        return best


def dedup(rows: list, against: dict[str, list[str]] | None = None, threshold: float = THRESHOLD,
          lsh_threshold: float = LSH_THRESHOLD, num_perm: int = NUM_PERM) -> tuple[list, list[dict[str, Any]]]:
    """(the rows kept, in order; one record per stage). Rows need `.id` and `.input`."""
    against = against or {}
    stages = []

    def stage(name: str, rows_in: list, drops: dict[int, tuple[str, float]], **details) -> list:
        kept = [r for j, r in enumerate(rows_in) if j not in drops]
        shown = [{"id": rows_in[j].id, "like": like, "score": round(score, 4)}
                 for j, (like, score) in sorted(drops.items())[:SHOW]]
        stages.append({"stage": name, "in": len(rows_in), "out": len(kept), "dropped": shown, **details})
        return kept

    first: dict[str, str] = {}
    drops = {}
    for j, r in enumerate(rows):
        key = normalise(r.input)
        if key in first:
            drops[j] = (first[key], 1.0)
        else:
            first[key] = r.id
    rows = stage("exact", rows, drops)
    for name, texts in against.items():
        seen = {normalise(t): i for i, t in reversed(list(enumerate(texts)))}
        rows = stage(f"exact_{name}", rows, {j: (f"{name}[{seen[k]}]", 1.0) for j, r in enumerate(rows)
                                              if (k := normalise(r.input)) in seen})
    index = Near(threshold, lsh_threshold, num_perm)
    toks = [tokens(r.input) for r in rows]
    sigs = index.signatures(toks)  # the same permutations in every index below, so signatures are shared
    for name, texts in against.items():
        index = Near(threshold, lsh_threshold, num_perm)
        ref_toks = [tokens(t) for t in texts]
        for i, (t, sig) in enumerate(zip(ref_toks, index.signatures(ref_toks))):
            index.add(i, t, sig)
        drops = {}
        for j, (t, sig) in enumerate(zip(toks, sigs)):
            if hit := index.match(t, sig):
                drops[j] = (f"{name}[{hit[0]}]", hit[1])
        rows = stage(f"near_{name}", rows, drops, compared=index.compared)
        toks = [t for j, t in enumerate(toks) if j not in drops]
        sigs = [s for j, s in enumerate(sigs) if j not in drops]
    index, drops = Near(threshold, lsh_threshold, num_perm), {}
    for j, (t, sig) in enumerate(zip(toks, sigs)):
        if hit := index.match(t, sig):
            drops[j] = (rows[hit[0]].id, hit[1])
        else:
            index.add(j, t, sig)
    rows = stage("near", rows, drops, compared=index.compared)
    return rows, stages

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
come from MinHash (datasketch) over each row's set of words, cut into `bands` bands: two rows are
candidates when all the minima of one band agree, which pairs at word Jaccard 0.5 do about half the
time and pairs at 0.8 almost always. ROUGE-L (rapidfuzz's LCS) decides among the candidates.

Rows made from one template share a bucket in the bands whose minima all fell on the template's
words, so such buckets grow with the pool and would make the work quadratic. A bucket that holds
`cap` texts is full: it is neither searched nor grown. A real near-duplicate shares most bands with
its original (a changed word moves few minima), so it is still found through the others. Candidates
per row are then at most bands x cap, whatever the pool's size, and the work is linear in rows
(bench/synth_dedup.py: 10k, 50k, 100k). Each stage records the ROUGE-L computations (`compared`)
and the lookups into full buckets (`full`).

    >>> from types import SimpleNamespace as Row
    >>> rows = [Row(id="a", input="Name three rivers in Peru."), Row(id="b", input="name three RIVERS in peru!"),
    ...         Row(id="c", input="What is 17 times 3?")]
    >>> kept, stages = dedup(rows, against={"heldout": ["What is 17 times 3 ?"]})
    >>> [r.id for r in kept], [(s["stage"], s["in"], s["out"]) for s in stages]
    (['a'], [('exact', 3, 3), ('exact_heldout', 3, 3), ('near_heldout', 3, 2), ('near', 2, 1)])
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, Sequence

import numpy as np
from datasketch import MinHash
from rapidfuzz.distance import LCSseq

from rest_loop.metrics import words

THRESHOLD = 0.7  # ROUGE-L F1 at or over which two texts are one (Self-Instruct)
NUM_PERM = 128
BANDS = 25  # of 5 minima each: the bands datasketch picks for word Jaccard 0.5 with 128 permutations
CAP = 32  # texts a bucket holds before it is full (see above)
SHOW = 20  # dropped rows listed per stage


def normalise(text: str) -> str:
    """What makes two texts the same text: Unicode form, case and whitespace aside."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def tokens(text: str) -> list[str]:
    """Words, lowercased, punctuation dropped: what ROUGE-L and the MinHash compare."""
    return words(unicodedata.normalize("NFKC", text))


def rouge_l(a: Sequence, b: Sequence) -> float:
    """ROUGE-L F1 of two token lists: 2 * LCS / (len(a) + len(b)).

    >>> rouge_l("the cat sat on the mat".split(), "the cat lay on the mat".split())
    0.8333333333333334
    """
    if not a or not b:
        return 0.0
    return 2 * LCSseq.similarity(a, b) / (len(a) + len(b))


class Texts:
    """Token lists as integer ids (rapidfuzz compares those fastest) and their MinHash band keys."""

    def __init__(self, bands: int = BANDS, num_perm: int = NUM_PERM):
        if not 0 < bands <= num_perm:
            raise ValueError(f"bands={bands}: needs 1..num_perm={num_perm}")
        self.bands, self.num_perm, self.width = bands, num_perm, num_perm // bands
        self.vocab: dict[str, int] = {}
        self.mix = np.random.default_rng(0).integers(1, 2**63, size=self.width, dtype=np.uint64) | np.uint64(1)

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """(token ids per text, band keys per text)."""
        ids = [[self.vocab.setdefault(t, len(self.vocab)) for t in tokens(text)] for text in texts]
        if not ids:
            return [], []
        sigs = np.vstack([m.hashvalues for m in MinHash.bulk([{str(i).encode() for i in t} for t in ids],
                                                                num_perm=self.num_perm)]).astype(np.uint64)
        used = sigs[:, :self.bands * self.width].reshape(len(ids), self.bands, self.width)
        keys = (used * self.mix).sum(axis=2)  # one 64-bit key per band (wrapping arithmetic)
        keys[[not t for t in ids]] = 0  # an empty text has no minima; it is never anyone's candidate
        return ids, keys.tolist()


class Near:
    """Texts indexed for near-duplicate lookup: band buckets for candidates, ROUGE-L to confirm."""

    def __init__(self, bands: int = BANDS, threshold: float = THRESHOLD, cap: int = CAP):
        self.threshold, self.cap = threshold, cap
        self.buckets: list[dict[int, list[Any]]] = [{} for _ in range(bands)]
        self.ids: dict[Any, list[int]] = {}
        self.compared = 0  # ROUGE-L computations
        self.full = 0  # lookups that found a full bucket and skipped it

    def add(self, key: Any, ids: list[int], band_keys: list[int]) -> None:
        if not ids:
            return
        self.ids[key] = ids
        for table, k in zip(self.buckets, band_keys):
            bucket = table.setdefault(k, [])
            if len(bucket) < self.cap:
                bucket.append(key)

    def match(self, ids: list[int], band_keys: list[int]) -> tuple[Any, float] | None:
        """The first-added indexed text whose ROUGE-L with `ids` is >= threshold, and the score."""
        if not ids:
            return None
        candidates = set()
        for table, k in zip(self.buckets, band_keys):
            bucket = table.get(k)
            if bucket is None:
                continue
            if len(bucket) >= self.cap:
                self.full += 1
            else:
                candidates.update(bucket)
        for key in sorted(candidates):
            other = self.ids[key]
            need = math.ceil(self.threshold * (len(ids) + len(other)) / 2 - 1e-9)  # LCS words for the threshold
            if min(len(ids), len(other)) < need:
                continue
            self.compared += 1
            lcs = LCSseq.similarity(ids, other, score_cutoff=need)
            if lcs >= need:
                return key, 2 * lcs / (len(ids) + len(other))
        return None


def dedup(rows: list, against: dict[str, list[str]] | None = None, threshold: float = THRESHOLD,
          bands: int = BANDS, cap: int = CAP) -> tuple[list, list[dict[str, Any]]]:
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
    encoder = Texts(bands)  # one vocabulary and one set of permutations for every index below
    ids, keys = encoder.encode([r.input for r in rows])
    for name, texts in against.items():
        index, drops = Near(bands, threshold, cap), {}
        for i, (t, k) in enumerate(zip(*encoder.encode(texts))):
            index.add(i, t, k)
        for j, (t, k) in enumerate(zip(ids, keys)):
            if hit := index.match(t, k):
                drops[j] = (f"{name}[{hit[0]}]", hit[1])
        rows = stage(f"near_{name}", rows, drops, compared=index.compared, full=index.full)
        ids = [t for j, t in enumerate(ids) if j not in drops]
        keys = [k for j, k in enumerate(keys) if j not in drops]
    index, drops = Near(bands, threshold, cap), {}
    for j, (t, k) in enumerate(zip(ids, keys)):
        if hit := index.match(t, k):
            drops[j] = (rows[hit[0]].id, hit[1])
        else:
            index.add(j, t, k)
    rows = stage("near", rows, drops, compared=index.compared, full=index.full)
    return rows, stages

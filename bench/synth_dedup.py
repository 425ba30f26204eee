"""Prompt synthesis dedup at scale: time for 10k, 50k and 100k rows, near-linear against a naive quadratic peer.

    .venv/bin/python bench/synth_dedup.py            # 10k, 50k, 100k rows: a few minutes on 2 cores
    .venv/bin/python bench/synth_dedup.py --quick    # 2k and 10k, under a minute
    .venv/bin/python bench/synth_dedup.py --sizes 10000

Rows are made from 24 sentence templates with four slots each, filled from a vocabulary of 3,000
words, so rows of one template share about half their words (like a generator's rows share its
phrasing). One row in ten is a planted near-duplicate of an earlier row (recased, repunctuated or
one word changed) and 1% are planted copies or rewordings of 500 held-out prompts.

    ours   rest_loop.synth.dedup.dedup(rows, against={"heldout": ...}): exact, MinHash band candidates
           (full buckets skipped) confirmed by ROUGE-L >= 0.7, against the held-out prompts and within the rows
    peer   what Self-Instruct does: each row's ROUGE-L against every row kept so far (and every held-out
           prompt), the same ROUGE-L function, on the first --peer-rows rows; its time is extrapolated to
           each size by its cost a pair times the pairs it would compare: n x held-out + kept x n / 2

Both sides alternate at the peer's size. Reported per size: time, rows/s, ROUGE-L computations,
planted duplicates missed, and unplanted rows dropped: rows of one template that happen to share
enough filler to reach ROUGE-L 0.7 with an earlier row (each is such a pair: the same ROUGE-L confirms
every drop; the naive peer keeps the same count at its size). The ratios: time growth from
the smallest to the largest size against row growth (near-linear: the exponent near 1), and the
naive peer's extrapolated time over ours at the largest size.
"""

from __future__ import annotations

import math
import random
import time

import common

from rest_loop.synth.dedup import THRESHOLD, dedup, rouge_l, tokens
from rest_loop.synth.records import SynthRow

HELDOUT = 500  # held-out prompts, whatever the size
TEMPLATES = [
    "Explain how {a} changes the way a {b} plans {c} during {d}.",
    "Write a short story where a {a} loses the {b} and has to find {c} before {d}.",
    "List three ways to improve {a} for a {b} who works with {c} and {d}.",
    "Compare {a} and {b} for someone who cares about {c} more than {d}.",
    "What should a {a} know about {b} before buying {c} in {d}?",
    "Draft an email from a {a} asking a {b} to postpone the {c} until {d}.",
    "Summarise the argument that {a} causes {b}, and give a counterexample about {c} in {d}.",
    "Design a one-week plan to learn {a} using only {b}, {c} and {d}.",
    "Why might a {a} prefer {b} over {c} when {d} is scarce?",
    "Describe a day in the life of a {a} who collects {b} and fears {c} near {d}.",
    "Give step-by-step instructions for repairing a {a} with {b}, {c} and some {d}.",
    "Write a dialogue between a {a} and a {b} arguing about {c} at {d}.",
    "Estimate how many {a} fit in a {b}, and explain your assumptions about {c} and {d}.",
    "Translate the idea of {a} into advice for a {b} facing {c} on {d}.",
    "Create a quiz with four questions about {a}, {b}, {c} and {d}.",
    "Propose a name and slogan for a company that sells {a} to {b} who love {c} and {d}.",
    "How would you teach a {a} about {b} using a story about {c} and {d}?",
    "Critique this plan: a {a} will replace all {b} with {c} by {d}.",
    "What are the risks of mixing {a} with {b} when storing {c} near {d}?",
    "Write a haiku about {a}, {b}, {c} and {d}.",
    "Outline a debate on whether {a} should fund {b} instead of {c} in {d}.",
    "Solve: a {a} owns twelve {b}, sells {c}, then buys {d}. How many now?",
    "Recommend a book about {a} for a {b} who dislikes {c} but enjoys {d}.",
    "Plan a dinner menu for a {a} allergic to {b}, featuring {c} and {d}.",
]


def make_words(n: int, rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "tre", "su", "van", "pel", "dor", "qui", "ny", "bra", "zel", "fo", "gri", "ost"]
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(out)


def sentence(rng: random.Random, vocab: list[str]) -> str:
    return rng.choice(TEMPLATES).format(**{k: " ".join(rng.sample(vocab, 2)) for k in "abcd"})


def vary(text: str, rng: random.Random, vocab: list[str]) -> str:
    """A near-duplicate: recased, repunctuated, or one word changed."""
    kind = rng.randrange(3)
    if kind == 0:
        return text.upper()
    if kind == 1:
        return text.replace(" ", ", ", 2).rstrip(".?") + "!"
    words = text.split()
    words[rng.randrange(len(words))] = rng.choice(vocab)
    return " ".join(words)


def dataset(n: int, seed: int = 0) -> tuple[list[SynthRow], list[str], set[str]]:
    """(rows, held-out prompts, ids of the planted rows): distinct rows, 10% near-duplicates, 1% held-out leaks."""
    rng = random.Random(seed)
    vocab = make_words(3000, rng)
    heldout = [sentence(rng, vocab) for _ in range(HELDOUT)]
    texts: list[str] = []
    planted = set()
    for i in range(n):
        roll = rng.random()
        if roll < 0.10 and texts:
            texts.append(vary(rng.choice(texts), rng, vocab))
            planted.add(f"r{i}")
        elif roll < 0.11:
            h = rng.choice(heldout)
            texts.append(h if rng.random() < 0.5 else vary(h, rng, vocab))
            planted.add(f"r{i}")
        else:
            texts.append(sentence(rng, vocab))
    return [SynthRow(f"r{i}", t, None, "bench", "t", i, 0, [], {}) for i, t in enumerate(texts)], heldout, planted


def naive(rows: list[SynthRow], heldout: list[str]) -> tuple[int, int]:
    """Self-Instruct's way: every row against every held-out prompt and every row kept so far.
    Returns (rows kept, pairs compared)."""
    refs = [tokens(h) for h in heldout]
    pool: list[list[str]] = []
    pairs = 0
    for r in rows:
        t = tokens(r.input)
        for o in refs + pool:
            pairs += 1
            if rouge_l(t, o) >= THRESHOLD:
                break
        else:
            pool.append(t)
    return len(pool), pairs


def naive_pairs(n: int, heldout: int, kept_share: float) -> float:
    """Pairs the naive peer compares for n rows: each against the held-out prompts and the pool kept so far."""
    return n * heldout + kept_share * n * n / 2


def run_ours(rows, heldout) -> dict:
    start = time.perf_counter()
    kept, stages = dedup(rows, against={"heldout": heldout})
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "kept": len(kept), "kept_ids": {r.id for r in kept},
            "compared": sum(s.get("compared", 0) for s in stages),
            "dropped": {s["stage"]: s["in"] - s["out"] for s in stages}}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+",
                   help="rows per size (default 10000 50000 100000; --quick 2000 10000)")
    p.add_argument("--peer-rows", type=int, help="rows the naive peer runs on (default 1000; --quick 500)")
    args = p.parse_args()
    sizes = sorted(args.sizes or ([2000, 10000] if args.quick else [10000, 50000, 100000]))
    m = args.peer_rows or (100 if args.quick else 300)
    reps = args.reps or 2

    # the peer and ours on the same m rows, alternating: how the two compare where both can run
    small, held_small, _ = dataset(m)
    same = common.alternate({"ours": lambda: run_ours(small, held_small)["seconds"],
                             "peer": lambda: timed(naive, small, held_small)}, reps)
    peer_s, ours_small_s = common.median(same["peer"]), common.median(same["ours"])
    (peer_kept, pairs), ours_kept = naive(small, held_small), run_ours(small, held_small)["kept"]
    per_pair = peer_s / pairs
    print(f"# {m} rows, both sides (median of {reps})", flush=True)
    common.line("naive ROUGE-L against the pool", f"{peer_s:.2f} s",
                f"kept {peer_kept}; {pairs:,} pairs, {per_pair * 1e6:.0f} us a pair")
    common.line("ours (MinHash bands + ROUGE-L)", f"{ours_small_s:.2f} s", f"kept {ours_kept}")

    metrics: dict = {"peer_rows": m, "peer_s": round(peer_s, 3), "peer_kept": peer_kept, "peer_pairs": pairs,
                     "ours_at_peer_rows_s": round(ours_small_s, 3), "ours_kept_at_peer_rows": ours_kept}
    for n in sizes:
        rows, heldout, planted = dataset(n)
        runs = [run_ours(rows, heldout) for _ in range(1 if n >= 50000 else reps)]
        seconds = common.median([r["seconds"] for r in runs])
        r = runs[0]
        extrapolated = per_pair * naive_pairs(n, HELDOUT, r["kept"] / n)
        metrics[str(n)] = {"seconds": round(seconds, 3), "rows_per_s": round(n / seconds), "kept": r["kept"],
                           "planted": len(planted), "dropped": r["dropped"], "compared": r["compared"],
                           "compared_per_row": round(r["compared"] / n, 3), "peer_extrapolated_s": round(extrapolated),
                           "planted_kept": len(planted & r["kept_ids"]),  # a planted duplicate missed
                           "unplanted_dropped": n - r["kept"] - len(planted - r["kept_ids"])}  # chance pairs
        print(f"\n## {n} rows ({len(runs)} run{'s' * (len(runs) > 1)})", flush=True)
        common.line("dedup time", f"{seconds:.2f} s", f"{n / seconds:,.0f} rows/s")
        common.line("dropped per stage", r["dropped"], f"kept {r['kept']}")
        common.line("planted missed / unplanted rows dropped",
                    f"{metrics[str(n)]['planted_kept']} of {len(planted)} / {metrics[str(n)]['unplanted_dropped']}")
        common.line("ROUGE-L computations", f"{r['compared']:,}", f"{r['compared'] / n:.2f} a row")
        common.line("naive peer, extrapolated (its pairs)", f"{extrapolated:,.0f} s",
                    f"{extrapolated / seconds:,.0f}x ours")
    lo, hi = str(sizes[0]), str(sizes[-1])
    ratios = {}
    if len(sizes) > 1:
        growth = metrics[hi]["seconds"] / metrics[lo]["seconds"]
        rows_growth = sizes[-1] / sizes[0]
        exponent = math.log(growth) / math.log(rows_growth)
        print(f"\ntime x{growth:.1f} for rows x{rows_growth:.0f}: time ~ rows^{exponent:.2f}", flush=True)
        for n in sizes[1:]:
            growth_n = metrics[str(n)]["seconds"] / metrics[lo]["seconds"]
            common.line(f"time({n}) / time({sizes[0]})", f"{growth_n:.1f}", f"rows x{n / sizes[0]:.0f}")
        ratios["time_exponent"] = common.ratio_entry(exponent, "<=1.2")
        ratios["time_growth_largest_vs_smallest"] = common.ratio_entry(growth)
    ratios["peer_extrapolated_over_ours_largest"] = common.ratio_entry(
        metrics[hi]["peer_extrapolated_s"] / metrics[hi]["seconds"], ">=10")
    common.emit("synth_dedup", args, ratios, metrics)


def timed(fn, *a) -> float:
    start = time.perf_counter()
    fn(*a)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

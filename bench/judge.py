"""Judge throughput: samples scored per second, one-pass logprob rating vs rationale-then-rating.

    .venv/bin/python bench/judge.py --quick       # about 1 minute on a quiet machine
    .venv/bin/python bench/judge.py               # the run_all size

Both judges are ours (rest_loop.improve.judge), built from conf/reward/judge.yaml and
judge_rationale.yaml, on the local vLLM backend (LocalBackend, no reply cache so that every
repetition computes), scoring the same Grow samples of arithmetic prompts:

- `PointwiseJudge` generates one token and reads the rating probabilities (min_rating_mass=0.05:
  SmolLM2-135M puts little mass on the digits, the configs say so too);
- `RationaleJudge` writes an explanation (up to the configured 256 tokens) and a `Rating: N` line.

Reported: samples/s of each and their ratio (target one-pass >= 3x), the rank agreement of the two
modes' scores on samples both could score (Spearman, Kendall tau), each mode's agreement with the
exact-match verifier, prompt tokens submitted vs prefilled by compute (how much of the shared
rubric prefix the prefix cache saves), and the cost of the on-disk reply cache (conf/judge/local.yaml
turns it on) for the one-pass judge: a cold cache (every reply written) and a warm one (all read).
A 135M model is a poor judge; agreement is reported as measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import common


def build_judge(reward_file: str, backend, **overrides):
    """The judge term of conf/reward/<reward_file>, with the backend and prompts folder filled in."""
    from hydra.utils import get_class

    spec = common.yaml(common.CONF / "reward" / reward_file)["terms"]["judge"]
    spec.pop("weight", None)
    cls = get_class(spec.pop("_target_"))
    return cls(**{**spec, "backend": backend, "prompts_dir": str(common.PROMPTS), **overrides})


def rank_agreement(a: list[float], b: list[float], names: tuple[str, str]) -> dict:
    from scipy.stats import kendalltau, spearmanr

    constant = [f"{name} gave every sample {xs[0]}" for name, xs in zip(names, (a, b)) if len(set(xs)) == 1]
    if len(a) < 3 or constant:
        why = "fewer than 3 pairs" if len(a) < 3 else "; ".join(constant)
        return {"n": len(a), "spearman": None, "kendall_tau": None, "undefined": why}
    return {"n": len(a), "spearman": round(float(spearmanr(a, b).statistic), 4),
            "kendall_tau": round(float(kendalltau(a, b).statistic), 4)}


def paired_scores(xs, ys) -> tuple[list[float], list[float]]:
    both = [(x.score, y.score) for x, y in zip(xs, ys) if x.status == "ok" and y.status == "ok"]
    return [x for x, _ in both], [y for _, y in both]


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=48, help="arithmetic prompts to grow samples for")
    p.add_argument("--n", type=int, default=2, help="samples per prompt (samples judged = prompts x n)")
    p.add_argument("--block-size", type=int,
                   help="what-if: model.block_size, vLLM's KV block (default: the config's, 32 on CPU)")
    p.add_argument("--min-rating-mass", type=float, default=0.05, help="the one-pass judge's parse threshold")
    args = p.parse_args()
    if args.quick:
        args.prompts, args.n = 4, 2
    reps = args.reps or (1 if args.quick else 2)
    common.quiet()
    common.BLOCK_SIZE[0] = args.block_size

    from rest_loop.engine import BASE
    from rest_loop.grow import grow
    from rest_loop.improve.backends import LocalBackend
    from rest_loop.improve.verifiers import NumericMatch

    eng = common.engine()
    prompts = common.arithmetic_prompts(args.prompts)
    samples = grow(eng, BASE, prompts, common.demo_sampler(n=args.n), round=1)
    by_id = {q.id: q for q in prompts}
    sample_prompts = [by_id[s.prompt_id] for s in samples]
    backend = LocalBackend(common.model_config(), seed=0, cache=None)
    pointwise = build_judge("judge.yaml", backend, min_rating_mass=args.min_rating_mass)
    rationale = build_judge("judge_rationale.yaml", backend)
    print(f"judge: {len(samples)} samples ({args.prompts} prompts x {args.n}); rationale max_tokens="
          f"{rationale.max_tokens}; KV block {eng.block_size}; {reps} reps alternated", flush=True)

    results: dict[str, list] = {}
    prefill: dict[str, dict] = {}
    generated: dict[str, int] = {}  # tokens the judge generated in its last repetition

    def run(name, judge):
        def once():
            t: list[float] = []
            before = backend.usage.completion_tokens
            with common.PrefillCounter() as pc, common.timed(t):
                results[name] = judge(sample_prompts, samples)
            prefill[name] = pc.summary()
            generated[name] = backend.usage.completion_tokens - before
            return len(samples) / t[0]
        return once

    run("pointwise", pointwise)()  # warm-up: the first logprobs request builds what later ones reuse
    runs = common.alternate({"pointwise": run("pointwise", pointwise), "rationale": run("rationale", rationale)},
                            reps)
    sps = {k: common.median(v) for k, v in runs.items()}
    speedup = common.paired_ratio(runs["pointwise"], runs["rationale"])
    status = {k: {s: sum(r.status == s for r in v) for s in ("ok", "unparsed", "error")} for k, v in results.items()}
    agree = rank_agreement(*paired_scores(results["pointwise"], results["rationale"]), ("pointwise", "rationale"))
    correct = NumericMatch()(sample_prompts, samples)
    vs_verifier = {k: rank_agreement(*paired_scores(v, correct), (k, "exact match")) for k, v in results.items()}

    for k in ("pointwise", "rationale"):
        pf = prefill[k]
        common.line(f"{k}: samples/s", f"{sps[k]:.2f}", f"runs {[round(x, 2) for x in runs[k]]}; status {status[k]}")
        common.line(f"{k}: prefill computed / submitted", f"{pf['computed']} / {pf['submitted']}",
                    f"cached {pf['cached']}; generated {generated[k]} tokens, "
                    f"{generated[k] / len(samples):.1f} a sample")
    common.line("one-pass / rationale", f"{speedup:.1f}x", "target >= 3")
    for label, v in (("agreement, both scored", agree),
                     *((f"{k} vs exact match", v) for k, v in vs_verifier.items())):
        common.line(label, f"n={v['n']} spearman={v['spearman']} kendall={v['kendall_tau']}", v.get("undefined", ""))

    # the reply cache that conf/judge/local.yaml turns on: what writing and reading it costs
    with tempfile.TemporaryDirectory() as tmp:
        cached = LocalBackend(common.model_config(), seed=0, cache=str(Path(tmp) / "judge.sqlite"))
        judge = build_judge("judge.yaml", cached, min_rating_mass=args.min_rating_mass)
        cold, warm = [], []
        with common.timed(cold):
            judge(sample_prompts, samples)
        with common.timed(warm):
            judge(sample_prompts, samples)
    cache_ratio = (len(samples) / cold[0]) / sps["pointwise"]
    common.line("pointwise, cold reply cache: samples/s", f"{len(samples) / cold[0]:.2f}",
                f"{cache_ratio:.3f} of no cache")
    common.line("pointwise, warm reply cache: samples/s", f"{len(samples) / warm[0]:.0f}")

    common.emit("judge", args, {
        "pointwise_vs_rationale": common.ratio_entry(speedup, ">=3"),
        "pointwise_cold_cache_vs_no_cache": common.ratio_entry(cache_ratio),
    }, {
        "samples": len(samples), "samples_per_s": {k: round(v, 3) for k, v in sps.items()},
        "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "status": status, "agreement": agree, "vs_exact_match": vs_verifier, "prefill": prefill,
        "generated_tokens": generated, "rationale_max_tokens": rationale.max_tokens,
        "reply_cache_s": {"cold": round(cold[0], 3), "warm": round(warm[0], 3)},
        "block_size": eng.block_size, "reps": reps,
    })


if __name__ == "__main__":  # vLLM may start processes with spawn, which re-imports this file: keep the guard
    main()
    from rest_loop.engine import close_engines

    close_engines()

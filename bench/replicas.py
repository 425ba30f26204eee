"""Grow with engine replicas: generated tokens/s of two replicas (model.data_parallel_size=2) against one engine.

    .venv/bin/python bench/replicas.py --quick     # about 2 minutes
    .venv/bin/python bench/replicas.py             # the run_all size

Both sides run `rest_loop.grow.grow` on the demo's prompts and sampler, alternated (A B B A): one engine
over all the cores (what model.data_parallel_size=1 starts), and two replicas in processes of their own,
each pinned to half of them (rest_loop/replicas.py). On a GPU machine each replica would have its own GPU;
on a 2-core CPU they share the two cores, so the ratio says what a second process costs or gains here.
"""

from __future__ import annotations

import dataclasses

import common


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--prompts", type=int, default=48, help="train prompts per Grow")
    args = p.parse_args()
    if args.quick:
        args.prompts = 16
    reps = args.reps or 2
    common.quiet()

    from rest_loop.engine import BASE, Engine, in_process_core, on_gpu
    from rest_loop.grow import grow
    from rest_loop.replicas import Replicas

    if not on_gpu():
        in_process_core()
    sampler, prompts, model = common.demo_sampler(), common.arithmetic_prompts(args.prompts), common.model_config()
    sides = {"replicas": Replicas(model.source, dataclasses.replace(model, data_parallel_size=2), seed=0),
             "one": Engine(model.source, model, seed=0)}
    print(f"replicas: {args.prompts} prompts x n={sampler.n}, T={sampler.temperature}, "
          f"max_tokens={sampler.max_tokens}; {reps} reps alternated", flush=True)

    def run(name: str):
        def side():
            times: list[float] = []
            with common.timed(times):
                samples = grow(sides[name], BASE, prompts, sampler, round=1)
            return sum(s.num_tokens for s in samples) / times[0]
        return side

    runs = common.alternate({name: run(name) for name in sides}, reps)
    ratio = common.paired_ratio(runs["replicas"], runs["one"])
    for name, label in (("one", "one engine, all cores: tok/s"), ("replicas", "two replicas: tok/s")):
        common.line(label, f"{common.median(runs[name]):.1f}", f"runs {[round(x, 1) for x in runs[name]]}")
    common.line("two replicas / one engine", f"{ratio:.3f}", f"startup {sides['replicas'].startup_s:.1f} s vs "
                f"{sides['one'].startup_s:.1f} s")
    common.emit("replicas", args, {"replicas_vs_one": common.ratio_entry(ratio)}, {
        "tok_s": {k: round(common.median(v), 1) for k, v in runs.items()},
        "runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "startup_s": {k: round(v.startup_s, 1) for k, v in sides.items()}, "reps": reps,
    })
    sides["replicas"].close()


if __name__ == "__main__":  # the replicas start with spawn, which re-imports this file: keep the guard
    main()

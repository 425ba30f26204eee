"""Prompt synthesis throughput: rows/s of the generate step, batched through the engine vs one request at a time.

    .venv/bin/python bench/synth_rows.py --quick     # 8 requests, about 2 minutes on a quiet machine
    .venv/bin/python bench/synth_rows.py             # 24 requests, the run_all size

Both sides are ours: `Synthesis.make` (rest_loop/synth/run.py) on the embedded SmolLM2 through
the local backend (LocalBackend, no reply cache, so every repetition generates), with requests
built from examples/seeds.jsonl and two decks, replies held to a JSON list (synth.constrain):

    ours   every request in one `ask`: the engine batches them (what rest-loop-synth does)
    peer   one `ask` per request, as a script that calls a model once per prompt would

Reported: rows/s and replies parsed whole for each, and the ratio (target >= 2x on 2 cores).
Rows are what the replies yielded (parse.py): nothing is counted that was not written.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common

from rest_loop.synth.run import Synthesis

DECKS = "{topic: [travel, cooking, money, sport, gardening, music], difficulty: [easy, medium, hard]}"


def synthesis(out: Path, requests: int) -> Synthesis:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(common.CONF), version_base="1.3"):
        cfg = compose("synth", overrides=[
            f"synth.seeds={common.ROOT / 'examples/seeds.jsonl'}", f"synth.decks={DECKS}", "synth.count=2",
            f"synth.requests={requests}", "synth.max_tokens=160", "synth.constrain=true", "synth.gate=null",
            "synth.review.first=0", "synth.generator.cache=null", f"paths.run_dir={out}"])
    return Synthesis(cfg, out)


def timed(fn) -> dict:
    start = time.perf_counter()
    rows, replies = fn()
    seconds = time.perf_counter() - start
    whole = sum(r.get("status") == "ok" for r in replies)
    return {"seconds": seconds, "rows": len(rows), "rows_per_s": len(rows) / seconds, "whole": whole}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--requests", type=int, help="generator requests per side (default 24; --quick 8)")
    args = p.parse_args()
    n = args.requests or (8 if args.quick else 24)
    reps = args.reps or 1
    common.quiet()
    with tempfile.TemporaryDirectory() as tmp:
        s = synthesis(Path(tmp), n)
        requests = s.requests(0, n, [])

        def batched():
            rows, replies, _ = s.make(requests)
            return rows, replies

        def one_by_one():
            rows, replies = [], []
            for r in requests:
                got, said, _ = s.make([r])
                rows += got
                replies += said
            return rows, replies

        s.make(requests[:1])  # the engine starts and warms up outside the timing
        runs = common.alternate({"ours": lambda: timed(batched), "peer": lambda: timed(one_by_one)}, reps)
    ours, peer = (min(runs[k], key=lambda r: r["seconds"]) for k in ("ours", "peer"))
    print(f"# {n} requests x 2 rows asked, max 160 tokens a reply, best of {reps}", flush=True)
    for name, r in (("batched (ours)", ours), ("one request at a time (peer)", peer)):
        common.line(name, f"{r['rows_per_s']:.2f} rows/s", f"{r['rows']} rows in {r['seconds']:.1f} s; "
                    f"{r['whole']} of {n} replies parsed whole")
    ratio = ours["rows_per_s"] / peer["rows_per_s"] if peer["rows_per_s"] else None
    common.line("ours / peer", f"{ratio:.2f}x" if ratio else "n/a")
    common.emit("synth_rows", args, {"batched_over_one_by_one": common.ratio_entry(ratio, ">=2")},
                {"requests": n, "ours": ours, "peer": peer})


if __name__ == "__main__":  # vLLM starts its workers with spawn: keep this guard
    main()

"""rest-loop-review at scale: time to the first page and the server's memory, with 10k and 100k samples.

    .venv/bin/python bench/review.py            # 10k and 100k samples, about 3 minutes
    .venv/bin/python bench/review.py --quick    # 2k and 10k, under a minute

A run is written per size by tests/review_data.py in the loop's formats (8 samples a prompt, the
arithmetic task, the real filter). Each repetition starts the real server (`python -m rest_loop.review
RUN --port 0`) and times, over HTTP on loopback:

    start       from launching the command to its URL printed (imports, the run's manifest)
    first page  the round's pool page, cold: the byte-offset index is built, the task rebuilt for the
                prompts' texts, 50 rows read and rendered. The number a person waits for.
    then        page 2, the dropped samples, those the cap stage dropped, a prompt search, a text search
                (a scan of the file, cached after), each timed once, warm

and the server's RSS (psutil) after it started, after the first page and at the end. The peer is what
a page without an index would hold: a process that reads the same samples.jsonl and judgements.jsonl
into lists of dicts (read_jsonl), its RSS and time. Sizes alternate (A B, B A, ...); medians over
repetitions. The ratio that matters is our RSS increment over the peer's at the largest size.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common


def serve_and_time(run: Path) -> dict:
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rest_loop.review", str(run), "--port", "0"], cwd=common.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = re.search(r"at (http://\S+?)/? \(", proc.stdout.readline()).group(1)
        out = {"start_s": time.perf_counter() - start}
        me = psutil.Process(proc.pid)
        out["rss_started_mib"] = me.memory_info().rss / 2**20
        pages = {"first_page": "/m/0/r/1/", "page_2": "/m/0/r/1/?page=1", "dropped": "/m/0/r/1/?kept=dropped",
                 "cap": "/m/0/r/1/?kept=dropped&stage=cap", "prompt_search": "/m/0/r/1/?prompt=marbles",
                 "text_search": "/m/0/r/1/?text=do+not+know", "text_search_again": "/m/0/r/1/?text=do+not+know&page=1"}
        for name, page in pages.items():
            t = time.perf_counter()
            body = urllib.request.urlopen(url + page, timeout=600).read()
            out[f"{name}_s"] = time.perf_counter() - t
            if name == "first_page":
                out["first_page_kib"] = len(body) / 1024
                out["rss_first_page_mib"] = me.memory_info().rss / 2**20
                out["shown"] = re.search(rb'<p id="found">(\d+) match', body).group(1).decode()
        out["rss_end_mib"] = me.memory_info().rss / 2**20
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


PEER = """
import sys, time, psutil
from rest_loop.store import read_jsonl
me = psutil.Process()
before = me.memory_info().rss
t = time.perf_counter()
rows = read_jsonl(sys.argv[1] + "/round_001/grow/samples.jsonl"), read_jsonl(sys.argv[1] + "/round_001/improve/judgements.jsonl")
print(time.perf_counter() - t, me.memory_info().rss / 2**20, (me.memory_info().rss - before) / 2**20)
"""


def peer(run: Path) -> dict:
    """Everything in memory, as a page without an index would hold it: time and RSS of a fresh process."""
    out = subprocess.run([sys.executable, "-c", PEER, str(run)], cwd=common.ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return {"load_s": float(out[0]), "rss_mib": float(out[1]), "rss_increment_mib": float(out[2])}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", help="samples per size (default 10000 100000; --quick 2000 10000)")
    args = p.parse_args()
    sizes = args.sizes or ([2000, 10000] if args.quick else [10000, 100000])
    reps = args.reps or (2 if args.quick else 3)
    from tests.review_data import synthetic_run

    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        runs = {}
        for n in sizes:
            t = time.perf_counter()
            runs[n] = synthetic_run(Path(tmp) / f"run_{n}", prompts=n // 8, n=8, rounds=1, payload=False)
            size = (runs[n] / "round_001/grow/samples.jsonl").stat().st_size / 2**20
            print(f"# {n} samples ({n // 8} prompts x 8): samples.jsonl {size:.1f} MiB, written in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        results = common.alternate({n: (lambda n=n: serve_and_time(runs[n])) for n in sizes}, reps)
        peers = {n: peer(runs[n]) for n in sizes}
    metrics = {}
    for n in sizes:
        keys = results[n][0].keys() - {"shown"}
        med = {k: round(common.median([r[k] for r in results[n]]), 3) for k in keys}
        med["peer"] = {k: round(v, 3) for k, v in peers[n].items()}
        metrics[str(n)] = med
        print(f"\n## {n} samples (median of {reps})", flush=True)
        common.line("start (command to URL)", f"{med['start_s']:.2f} s")
        common.line("first pool page, cold (index + task + render)", f"{med['first_page_s']:.2f} s",
                    f"{med['first_page_kib']:.0f} KiB sent")
        for k in ("page_2", "dropped", "cap", "prompt_search", "text_search", "text_search_again"):
            common.line(f"  then {k.replace('_', ' ')}", f"{med[k + '_s'] * 1000:.0f} ms")
        common.line("server RSS: started / after first page / end",
                    f"{med['rss_started_mib']:.0f} / {med['rss_first_page_mib']:.0f} / {med['rss_end_mib']:.0f} MiB")
        common.line("peer: read_jsonl of both files", f"{med['peer']['load_s']:.2f} s",
                    f"+{med['peer']['rss_increment_mib']:.0f} MiB")
    big, small = str(sizes[-1]), str(sizes[0])
    ours = metrics[big]["rss_end_mib"] - metrics[big]["rss_started_mib"]
    ratios = {
        "first_page_s_largest": common.ratio_entry(metrics[big]["first_page_s"], "<=5"),
        "rss_increment_vs_peer_largest": common.ratio_entry(ours / metrics[big]["peer"]["rss_increment_mib"], "<=0.5"),
        "first_page_time_growth": common.ratio_entry(metrics[big]["first_page_s"] / metrics[small]["first_page_s"]),
        "first_page_kib_growth": common.ratio_entry(metrics[big]["first_page_kib"] / metrics[small]["first_page_kib"],
                                                    "<=1.2"),
    }
    print(f"\nRSS increment over the started server at {big}: {ours:.0f} MiB, "
          f"{ratios['rss_increment_vs_peer_largest']['value']:.2f} of the peer's", flush=True)
    common.emit("review", args, ratios, metrics)


if __name__ == "__main__":
    main()

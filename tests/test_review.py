"""rest-loop-review: the real CLI serving over loopback, read with an HTTP client and a headless Chromium.

Runs are written by tests/review_data.py in the loop's formats (fast), and one by the real loop on the
tiny model (slow) for the browser's whole labelling path. The filters are checked against answers
worked out from the JSONL files directly: which stage dropped a sample is found by running the filter's
stages one prefix at a time, not through the `dropped` record the page uses.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rest_loop.improve.filters import select
from rest_loop.records import Judgement, Sample
from rest_loop.review import labels
from rest_loop.review.pool import index
from rest_loop.store import read_jsonl, write_json
from tests.review_data import FILTER, PAYLOAD, agent_run, synthetic_run

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def serving(path: Path, *args: str):
    """`python -m rest_loop.review PATH --port 0 ...` in a subprocess; yields (base URL, process)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a server that logs a lot never blocks on it
        proc = subprocess.Popen([sys.executable, "-m", "rest_loop.review", str(path), "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            line = proc.stdout.readline()
            found = re.search(r"at (http://\S+?)/? \(", line)
            assert found, f"no URL printed: {line!r}"
            url = found.group(1)
            for _ in range(100):  # the socket is bound before the URL is printed; uvicorn accepts soon after
                try:
                    socket.create_connection(urllib.parse.urlsplit(url).netloc.split(":"), timeout=5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.seek(0)
            errors = log.read()
        assert "Traceback" not in errors, errors[-5000:]  # every page rendered without an exception


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` sent exactly as written: no client normalises the ../ away."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    r = conn.getresponse()
    return r.status, r.read()


def post_label(url: str, m: int, r: int, i: int, label: str, note: str = "", origin: str | None = None) -> int:
    data = urllib.parse.urlencode({"label": label, "note": note}).encode()
    req = urllib.request.Request(f"{url}/m/{m}/r/{r}/s/{i}/label", data=data, method="POST")
    if origin:
        req.add_header("Origin", origin)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("review") / "run", prompts=40, n=4)


def found(html: str) -> int:
    return int(re.search(r'<p id="found">(\d+) match', html).group(1))


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="open" href="/m/\d+/r/\d+/s/(\d+)"', html)]


# --- safety ------------------------------------------------------------------------------------------


def test_model_output_renders_as_text(run):
    with serving(run) as (url, _):
        pages = [get(f"{url}/m/0/r/1/s/0"), get(f"{url}/m/0/r/1/"), get(f"{url}/m/0/r/1/p/0"),
                 get(f"{url}/m/0/r/1/?text=pwned")]
    for status, html in pages:
        assert status == 200
        assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in html
        assert "<script" not in html.lower() and '<b id="pwned">' not in html and "onerror=\"" not in html
    sample = pages[0][1]
    assert sample.count("&lt;b id=&#34;pwned&#34;&gt;") == 2  # the sample, and the judge's output quoting it


def test_an_agents_trajectory_is_shown_step_by_step_and_escaped(tmp_path):
    run = agent_run(tmp_path / "agent")
    with serving(run) as (url, _):
        status, html = get(f"{url}/m/0/r/1/s/1")  # the first prompt's second trajectory: the payload is a tool's reply
        pool = get(f"{url}/m/0/r/1/?kept=dropped")[1]
        heldout = get(f"{url}/m/0/heldout")[1]
    assert status == 200 and "Trajectory" in html and "calculator" in html and "Answer: <code>1</code>" in html
    assert "&lt;script&gt;" in html and "<script" not in html.lower() and '<b id="pwned">' not in html
    assert found(pool) == 8  # 4 prompts x 3 trajectories, the first of each kept
    assert "round_000/eval" in heldout and "round_001/eval" in heldout and "0 steps, stop finish" in heldout


def test_no_request_reaches_a_file_outside_what_the_page_serves(run):
    (run.parent / "secret.txt").write_text("TOPSECRET beside the run")
    (run / "secret.txt").write_text("TOPSECRET inside the run")
    attempts = ["/../secret.txt", "/m/0/../../secret.txt", "/m/0/fig/..%2F..%2Fsecret.txt", "/fig/%2e%2e%2fsecret.txt",
                "/m/0/fig/../secret.txt", "/m/0/fig/manifest.json", "/m/0/fig/secret.txt", "//etc/passwd",
                "/m/0/fig/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/../../etc/passwd", "/secret.txt",
                "/m/0/r/1/s/..%2f..%2fsecret.txt", "/m/-1/", "/m/7/", "/m/0/r/9/", "/m/0/r/1/s/999999",
                "/m/0/r/1/p/-1", "/round_001/grow/samples.jsonl", "/m/0/round_001/grow/samples.jsonl"]
    with serving(run) as (url, _):
        answers = {path: raw_get(url, path) for path in attempts}
        assert raw_get(url, "/m/0/fig/heldout.png")[0] == 200  # what it does serve
    for path, (status, body) in answers.items():
        assert status in (400, 404), (path, status)
        assert b"TOPSECRET" not in body and b"root:x:0" not in body and b'"prompt_id"' not in body, path


def snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_it_writes_only_labels_jsonl(tmp_path):
    sweep = tmp_path / "sweep"
    synthetic_run(sweep / "0", prompts=8)
    synthetic_run(sweep / "1", prompts=8)
    write_json(sweep / "multirun.yaml", {"hydra": {"overrides": {"task": []}}})
    before = snapshot(tmp_path)
    with serving(sweep) as (url, _):
        for page in ["/", "/fig/heldout.png", "/m/1/", "/m/1/fig/drift.png", "/m/1/r/1/?kept=dropped&text=answer",
                     "/m/1/r/2/p/3", "/m/1/r/1/s/5", "/m/1/heldout", "/m/1/labels", "/m/0/r/2/?min=0.5&max=1"]:
            assert get(url + page)[0] == 200, page
        assert post_label(url, 1, 1, 5, "bad", "wrong sum") == 200  # after the 303 to the sample's page
    after = snapshot(tmp_path)
    changed = {k for k in after if before.get(k) != after[k]} | (before.keys() - after.keys())
    assert changed == {"sweep/1/labels.jsonl"}


def test_it_listens_on_loopback_unless_told(run):
    import psutil

    with serving(run) as (url, proc):
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("inet") if c.status == "LISTEN"]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
        assert get(url + "/")[0] == 200
        host = urllib.request.Request(url + "/", headers={"Host": f"attacker.example:{port}"})  # DNS rebinding
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(host, timeout=30)
        assert refused.value.code == 400


def test_a_label_from_another_site_is_refused(run):
    before = (run / "labels.jsonl").read_text() if (run / "labels.jsonl").exists() else None
    with serving(run) as (url, _):
        assert post_label(url, 0, 1, 3, "good", origin="http://attacker.example") == 403
    assert ((run / "labels.jsonl").read_text() if (run / "labels.jsonl").exists() else None) == before


def test_bad_input_exits_2_naming_it(tmp_path, run):
    (tmp_path / "empty").mkdir()
    for path in [tmp_path / "missing", tmp_path / "empty"]:
        out = subprocess.run([sys.executable, "-m", "rest_loop.review", str(path)], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 2 and str(path) in out.stderr and "neither a run directory" in out.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "rest_loop.review", str(run), "--port", str(port)],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and f"--port {port}: cannot listen there" in out.stderr
    help_ = subprocess.run([sys.executable, "-m", "rest_loop.review", "--help"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert help_.returncode == 0 and "--host" in help_.stdout and "127.0.0.1" in help_.stdout


# --- labels ------------------------------------------------------------------------------------------


def test_labels_are_appended_with_the_time_and_survive_a_restart(tmp_path):
    run = synthetic_run(tmp_path / "run", prompts=6)
    samples = read_jsonl(run / "round_001/grow/samples.jsonl")
    with serving(run) as (url, _):
        assert post_label(url, 0, 1, 2, "good", "right sum") == 200
        assert post_label(url, 0, 1, 7, "bad", "<i>not a sum</i>") == 200
    with serving(run) as (url, _):
        html = get(f"{url}/m/0/r/1/s/7")[1]
        assert 'Labelled <span class="label bad">bad</span>' in html and "&lt;i&gt;not a sum&lt;/i&gt;" in html
        assert post_label(url, 0, 1, 7, "good", "on second thought") == 200
        html = get(f"{url}/m/0/r/1/s/7")[1]
        assert 'Labelled <span class="label good">good</span>' in html and "(2 marks; the last counts)" in html
        assert get(f"{url}/m/0/labels")[1].count("<td>#") == 3
    rows = labels.read(run / "labels.jsonl")
    assert [(r["prompt_id"], r["sample_idx"], r["label"]) for r in rows] == [
        (samples[2]["prompt_id"], samples[2]["sample_idx"], "good"), (samples[7]["prompt_id"], samples[7]["sample_idx"], "bad"),
        (samples[7]["prompt_id"], samples[7]["sample_idx"], "good")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", r["time"]) for r in rows)
    assert rows[0]["sha256"] == hashlib.sha256(samples[2]["text"].encode()).hexdigest()
    assert labels.latest(rows)[(1, samples[7]["prompt_id"], samples[7]["sample_idx"])]["label"] == "good"


def test_a_label_file_that_is_not_labels_is_named(tmp_path):
    (tmp_path / "labels.jsonl").write_text('{"round": 1, "prompt_id": "a", "sample_idx": 0, "label": "good"}\nnope\n')
    with pytest.raises(ValueError, match=r"labels.jsonl: line 2: not a label"):
        labels.read(tmp_path / "labels.jsonl")


# --- paging and filtering --------------------------------------------------------------------------


def expected(run: Path, r: int) -> dict:
    """Per sample, worked out from the files: status, score, kept (kept.jsonl), and the stage that dropped it
    (the first prefix of the filter's stages that leaves it out)."""
    samples = read_jsonl(run / f"round_{r:03d}/grow/samples.jsonl", Sample)
    judgements = read_jsonl(run / f"round_{r:03d}/improve/judgements.jsonl", Judgement)
    kept = {(k["prompt_id"], k["sample_idx"]) for k in read_jsonl(run / f"round_{r:03d}/improve/kept.jsonl")}
    prefixes = [replace(FILTER, stages=FILTER.stages[:k]) for k in range(1, len(FILTER.stages) + 1)]
    survivors = [{(s.prompt_id, s.sample_idx) for s, _ in select(samples, judgements, f, round=r, seed=0)[0]}
                 for f in prefixes]
    out = []
    for i, (s, j) in enumerate(zip(samples, judgements)):
        key = (s.prompt_id, s.sample_idx)
        stage = next((FILTER.stages[k] for k, left in enumerate(survivors) if key not in left), "")
        out.append({"row": i, "status": j.status, "score": j.score, "kept": key in kept, "stage": stage,
                    "prompt_id": s.prompt_id, "text": s.text})
    return {"rows": out}


@pytest.mark.parametrize("query, pick", [
    ("", lambda x, t: True),
    ("kept=dropped", lambda x, t: not x["kept"]),
    ("kept=kept", lambda x, t: x["kept"]),
    ("status=unparsed", lambda x, t: x["status"] == "unparsed"),
    ("kept=dropped&stage=dedup", lambda x, t: x["stage"] == "dedup"),
    ("stage=cap", lambda x, t: x["stage"] == "cap"),
    ("stage=threshold&min=0.2&max=0.4", lambda x, t: x["stage"] == "threshold" and 0.2 <= x["score"] <= 0.4),
    ("min=0.5", lambda x, t: x["score"] is not None and x["score"] >= 0.5),
    ("prompt=10%2B1", lambda x, t: "10+1" in x["prompt_id"] or "10+1" in t[x["prompt_id"]]),
    ("prompt=marbles&kept=kept", lambda x, t: "marbles" in t[x["prompt_id"]] and x["kept"]),
    ("text=i+do+not+know", lambda x, t: "i do not know" in x["text"].casefold()),
])
def test_filters_and_pages_match_the_files(run, query, pick):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    task = instantiate(OmegaConf.load(run / "config.yaml").task)
    texts = {p.id: p.input for p in task.train}
    want = [x["row"] for x in expected(run, 1)["rows"] if pick(x, texts)]
    assert want or query.startswith("stage=threshold&min"), f"{query}: matches nothing: the test would prove little"
    got = []
    with serving(run) as (url, _):
        first = get(f"{url}/m/0/r/1/?{query}")[1]
        assert found(first) == len(want)
        pages = -(-len(want) // 50) or 1
        assert f"page 1 of {pages}" in first
        for n in range(pages):
            got += row_ids(get(f"{url}/m/0/r/1/?{query}&page={n}")[1])
    assert got == want


def test_the_stage_that_dropped_each_sample_and_the_kept_set(run):
    from rest_loop.review.run import RunView
    from rest_loop.summary import members

    pool = RunView(members(run)[0]).pool(1)
    rows = expected(run, 1)["rows"]
    assert pool.steps[0].kept.tolist() == [x["kept"] for x in rows]
    assert pool.steps[0].dropped_by == [x["stage"] for x in rows]
    assert {x["stage"] for x in rows} >= {"ok", "threshold", "dedup", "cap"}  # every kind of drop is there


def test_a_changed_filter_says_the_stages_are_unknown(tmp_path):
    run = synthetic_run(tmp_path / "run", prompts=6)
    pool = index(run / "round_001", replace(FILTER, threshold=0.0), 0)  # not the filter that made kept.jsonl
    assert "drop stages unknown" in pool.steps[0].note and set(pool.steps[0].dropped_by) == {""}
    assert pool.steps[0].kept.sum() == len(read_jsonl(run / "round_001/improve/kept.jsonl"))


def test_a_preference_round_keeps_what_is_in_a_pair(tmp_path):
    run = synthetic_run(tmp_path / "run", prompts=4, rounds=1)
    (run / "round_001/improve/kept.jsonl").unlink()
    samples = read_jsonl(run / "round_001/grow/samples.jsonl")
    pids = list(dict.fromkeys(s["prompt_id"] for s in samples))[:2]
    pairs = [{"round": 1, "step": 1, "prompt_id": pid, "messages": [], "chosen": "a", "rejected": "b", "chosen_idx": 0,
              "rejected_idx": 3, "chosen_score": 1.0, "rejected_score": 0.0} for pid in pids]
    (run / "round_001/improve/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    step = index(run / "round_001", FILTER, 0).steps[0]
    paired = [s["prompt_id"] in pids and s["sample_idx"] in (0, 3) for s in samples]
    assert sum(paired) == 4 and step.kept.tolist() == paired and "DPO pair" in step.note
    assert step.dropped_by == ["" if k else "not paired" for k in paired]


def test_held_out_side_by_side_and_the_ranking_judges_order(run):
    with serving(run) as (url, _):
        heldout = get(f"{url}/m/0/heldout")[1]
        prompt = get(f"{url}/m/0/r/2/p/0")[1]
        pool = get(f"{url}/m/0/r/2/")[1]
        home = get(f"{url}/")[1]
    for r in range(3):
        value = json.loads((run / f"round_{r:03d}/eval/metrics.json").read_text())["value"]
        assert f"round_{r:03d}/eval<br>accuracy {value:.3f}" in heldout
    first = read_jsonl(run / "round_002/eval/completions.jsonl")[0]
    assert first["text"] in heldout
    raw = read_jsonl(run / "round_002/improve/judgements.jsonl")[0]["parts"]["judge"]["raw"]
    assert "#" + ", #".join(map(str, raw["shown"])) in prompt and "#" + " &gt; #".join(map(str, raw["ranking"])) in prompt
    stats = json.loads((run / "round_002/improve/stats.json").read_text())["reward_terms"]["judge"]
    assert f"won {stats['first_shown_won']:.2f} of {stats['groups_ranked']} groups" in pool
    assert "first shown won" in home and '<table id="run-table">' in home and "/m/0/fig/keep_reward.png" in home


def test_a_sweep_lists_its_members_and_labels_go_to_the_member(tmp_path):
    sweep = tmp_path / "sweep"
    synthetic_run(sweep / "0", prompts=6)
    synthetic_run(sweep / "1", prompts=6)
    write_json(sweep / "1" / ".hydra" / "overrides.yaml", ["filter.threshold=0.9"])
    write_json(sweep / "multirun.yaml", {"hydra": {"overrides": {"task": []}}})
    with serving(sweep) as (url, _):
        home = get(url + "/")[1]
        assert 'href="/m/1/">filter.threshold=0.9</a>' in home and "/fig/heldout.png" in home
        assert post_label(url, 1, 2, 0, "good") == 200
    assert (sweep / "1" / "labels.jsonl").exists() and not (sweep / "0" / "labels.jsonl").exists()


def test_a_page_reads_its_rows_by_offset(tmp_path):
    """The index is a few arrays (no sample text is held); a page seeks to its 50 lines."""
    run = synthetic_run(tmp_path / "run", prompts=1000, n=8, rounds=1, payload=False)
    pool = index(run / "round_001", FILTER, 0)
    assert len(pool) == 8000 and pool.offsets.dtype == np.int64
    m = pool.mask(kept="dropped")
    rows = pool.rows(np.flatnonzero(m)[:50])
    assert len(rows) == 50 and all(not any(k for _, k, _ in r["steps"]) for r in rows)


# --- calibration against labels ----------------------------------------------------------------------


def calibrate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rest_loop.calibrate", *args, f"hydra.run.dir={cwd}"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_calibrate_against_30_labels(tmp_path):
    run = synthetic_run(tmp_path / "run", prompts=10)
    samples = read_jsonl(run / "round_001/grow/samples.jsonl")
    judged = {(j["prompt_id"], j["sample_idx"]): j for j in read_jsonl(run / "round_001/improve/judgements.jsonl")}
    refs = {p: p.split("+") for p in {s["prompt_id"] for s in samples}}
    truth = {}
    for s in samples[:30]:  # a person who marks right sums good
        a, b = refs[s["prompt_id"]]
        good = s["text"] == f"The answer is {int(a) + int(b)}."
        labels.append(run, 1, s["prompt_id"], s["sample_idx"], "bad", "", s["text"])  # changed their mind:
        labels.append(run, 1, s["prompt_id"], s["sample_idx"], "good" if good else "bad", "", s["text"])
        truth[(s["prompt_id"], s["sample_idx"])] = good
    out = calibrate("calibrate.truth=labels", f"calibrate.labels={run}", cwd=tmp_path / "cal")
    assert out.returncode == 0, out.stderr[-3000:]
    scored = [(judged[k]["score"], t) for k, t in truth.items() if judged[k]["status"] == "ok"]
    tp = sum(s >= 0.5 and t for s, t in scored)
    fp = sum(s >= 0.5 and not t for s, t in scored)
    fn = sum(s < 0.5 and t for s, t in scored)
    tn = sum(s < 0.5 and not t for s, t in scored)
    report = json.loads((tmp_path / "cal/calibration.json").read_text())
    assert report["samples"] == 30 and report["judged"] == len(scored) < 30  # the unparsed ones count, unscored
    assert report["confusion"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn} and min(tp, tn) > 0
    assert report["truth"] == "labels" and report["base_rate"] == sum(truth.values()) / 30
    assert f"judge keeps               {tp:>7}  {fp:>5}" in out.stdout and "against people's labels" in out.stdout
    assert not (run / "calibration.json").exists()  # the labelled run is only read


def test_calibrate_leaves_out_stale_labels_and_names_a_missing_file(tmp_path):
    run = synthetic_run(tmp_path / "run", prompts=4)
    s = read_jsonl(run / "round_001/grow/samples.jsonl")
    labels.append(run, 1, s[1]["prompt_id"], s[1]["sample_idx"], "good", "", s[1]["text"])
    labels.append(run, 1, s[2]["prompt_id"], s[2]["sample_idx"], "bad", "", "a text the pool no longer has")
    out = calibrate("calibrate.truth=labels", f"calibrate.labels={run / 'labels.jsonl'}", cwd=tmp_path / "cal")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "left out 1 labels" in out.stdout and "its text changed" in out.stdout
    missing = calibrate("calibrate.truth=labels", f"calibrate.labels={tmp_path / 'nope'}", cwd=tmp_path / "cal2")
    assert missing.returncode == 2 and str(tmp_path / "nope") in missing.stdout + missing.stderr  # Hydra logs to stdout
    bare = calibrate("calibrate.truth=labels", cwd=tmp_path / "cal3")
    assert bare.returncode == 2 and "calibrate.truth=labels needs calibrate.labels" in bare.stdout + bare.stderr


# --- in a real browser -------------------------------------------------------------------------------


def browser():
    """Headless Chromium through Selenium and the system's chromedriver, or a skip that says what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip(f"no {'Chromium' if not binary else 'chromedriver'} on this machine "
                    "(Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def test_a_payload_does_not_run_in_the_browser(run):
    from selenium.webdriver.common.by import By

    driver = browser()
    try:
        with serving(run) as (url, _):
            driver.get(f"{url}/m/0/r/1/s/0")
            assert driver.find_element(By.ID, "sample-text").text == PAYLOAD
            assert driver.title != "pwned" and not driver.find_elements(By.ID, "pwned")
            driver.get(f"{url}/m/0/r/1/")
            assert PAYLOAD[:40] in driver.find_element(By.ID, "pool").text and driver.title != "pwned"
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def loop_run(tiny_model, tmp_path_factory) -> Path:
    """One round of the real loop on the tiny model: two samples a prompt, at most one kept (the cap drops one)."""
    from tests.test_loop_e2e import cli, run_ok

    run_dir = tmp_path_factory.mktemp("review-loop") / "run"
    run_ok(cli(run_dir, tiny_model, "filter.max_per_prompt=1", "filter.dedup=none"))
    return run_dir


@pytest.mark.slow
def test_in_a_browser_label_a_dropped_sample_of_a_real_run(loop_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser()
    try:
        with serving(loop_run) as (url, _):
            driver.get(url + "/")
            driver.find_element(By.LINK_TEXT, "round 1 pool").click()
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "kept"))
            Select(driver.find_element(By.ID, "kept")).select_by_value("dropped")
            driver.find_element(By.ID, "apply").click()
            WebDriverWait(driver, 60).until(lambda d: "kept=dropped" in d.current_url)  # a click does not wait for the page
            assert "dropped by cap" in driver.find_element(By.ID, "pool").text
            total = int(driver.find_element(By.ID, "found").text.split()[0])
            assert total == 6  # 6 prompts x 2 samples, one of each kept
            driver.find_element(By.CSS_SELECTOR, "a.open").click()
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "verdict-1"))
            assert "dropped by the cap stage" in driver.find_element(By.ID, "verdict-1").text
            heading = driver.find_element(By.TAG_NAME, "h1").text
            driver.find_element(By.ID, "label-bad").click()
            driver.find_element(By.ID, "note").send_keys("wrong: & <not> a sum")
            driver.find_element(By.ID, "save-label").click()
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "current-label"))
            driver.refresh()
            assert driver.find_element(By.TAG_NAME, "h1").text == heading
            assert "Labelled bad" in driver.find_element(By.ID, "current-label").text
            assert "wrong: & <not> a sum" in driver.find_element(By.ID, "current-label").text
    finally:
        driver.quit()
    [row] = labels.read(loop_run / "labels.jsonl")
    pid, idx = re.search(r"prompt (\S+), sample #(\d+)", heading).groups()
    assert (row["round"], row["prompt_id"], row["sample_idx"], row["label"]) == (1, pid, int(idx), "bad")
    assert row["note"] == "wrong: & <not> a sum"
    kept = {(k["prompt_id"], k["sample_idx"]) for k in read_jsonl(loop_run / "round_001/improve/kept.jsonl")}
    assert (pid, int(idx)) not in kept

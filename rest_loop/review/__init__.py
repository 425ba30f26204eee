"""rest-loop-review: a local web page to read a run's data, and human labels that calibrate its judge.

    rest-loop-review runs/demo/<time>                 # one run; prints http://127.0.0.1:8765/
    rest-loop-review multirun/<date>/<time> --port 0  # a sweep: its members; port 0 picks a free one

app.py serves the pages, pool.py indexes a round's pool by byte offset and filters it on the server,
run.py reads one run lazily, labels.py appends to the run's labels.jsonl (the only file it writes).
"""

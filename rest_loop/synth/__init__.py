"""Prompt synthesis: new task inputs from a few examples (`rest-loop-synth`, `python -m rest_loop.synth`).

A generator model writes new task inputs (and optionally reference answers) from k seed
examples per request; it is a judge backend (improve/backends.py), called with `ask`. The modules:

    decks.py    attribute decks (and the seed examples) dealt per request: every entry before any repeats
    prompt.py   build_requests(seeds, decks, k, n, seed, prompts_dir) -> [Request]: prompts/synth/inputs.j2
    parse.py    parse(reply) -> Parsed (ok | partial | unparsed | empty); rows(request, parsed, generator)
    dedup.py    dedup(rows, against={"seeds": [...], "heldout": [...]}) -> (kept, stages): exact, then
                near-duplicate (MinHash bands + ROUGE-L), against the seeds and held-out prompts and within
    report.py   report(rows, stages) -> dict; plot(...) -> PNG: attribute counts, distinct-n, near-dup rate
    files.py    load_seeds(source), write_dataset(path, rows): JSONL that task=from_file reads
    gate.py     the quality gate (any reward terms score the rows) and the review pass's mistakes
    run.py      Synthesis: the stages review, generate, gate, dedup, report in a run directory
    __main__.py the command (Hydra, conf/synth.yaml): exit codes, the next command to run
"""

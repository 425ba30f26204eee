"""Prompt synthesis, the model-free core: requests, parsing, dedup, the diversity report and the dataset file.

A generator model writes new task inputs (and optionally reference answers) from k seed
examples per request; these modules do everything around its calls:

    decks.py    attribute decks (and the seed examples) dealt per request: every entry before any repeats
    prompt.py   build_requests(seeds, decks, k, n, seed, prompts_dir) -> [Request]: prompts/synth/inputs.j2
    parse.py    parse(reply) -> Parsed (ok | partial | unparsed | empty); rows(request, parsed, generator)
    dedup.py    dedup(rows, against={"seeds": [...], "heldout": [...]}) -> (kept, stages): exact, then
                near-duplicate (MinHash bands + ROUGE-L), against the seeds and held-out prompts and within
    report.py   report(rows, stages) -> dict; plot(...) -> PNG: attribute counts, distinct-n, near-dup rate
    files.py    load_seeds(source), write_dataset(path, rows): JSONL that task=from_file reads

The generator calls, the quality gate and the review pass are later stages that call these.
"""

"""Alpaca, ShareGPT and plain rows read into one shape, from files written the way people write them.

tests/data holds an Alpaca JSON array (extra keys, a `system`, a `history`, a numeric
and an empty `output`), an Alpaca CSV whose `history` is a JSON string, ShareGPT JSONL
mixing human/gpt and user/assistant turns with some `conversations` dumped to JSON
strings, one with a few bad rows, and a plain ticket table. All load through
`load_rows`, as a task would load them.
"""

from __future__ import annotations

import doctest
import json
import logging
import re
from pathlib import Path

import pytest

from rest_loop.config import ConfigError
from rest_loop.tasks import formats
from rest_loop.tasks.data import load_rows
from rest_loop.tasks.formats import BadRow, detect, read

DATA = Path(__file__).parent / "data"
ALPACA, ALPACA_CSV = str(DATA / "alpaca_mixed.json"), str(DATA / "alpaca_sheet.csv")
SHAREGPT, DUMPED, SOME_BAD = (str(DATA / f) for f in ("sharegpt_chats.jsonl", "sharegpt_dumped.jsonl",
                                                        "sharegpt_some_bad.jsonl"))
TICKETS = str(DATA / "custom_tickets.jsonl")
TICKET_FIELDS = {"input": "body", "reference": "queue"}


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """datasets caches every loaded file as Arrow: keep the tests' files out of ~/.cache/huggingface."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets")))
        yield


@pytest.mark.parametrize("path,fields,expected", [
    (ALPACA, None, "alpaca"), (ALPACA_CSV, None, "alpaca"), (SHAREGPT, None, "sharegpt"),
    (DUMPED, None, "sharegpt"), (TICKETS, TICKET_FIELDS, "plain"),
], ids=["alpaca-json-array", "alpaca-csv", "sharegpt", "sharegpt-json-strings", "plain"])
def test_auto_detects_the_format_from_the_keys(path, fields, expected):
    fmt, examples = read(load_rows(path), path, fields=fields)
    assert fmt == expected and examples


def test_alpaca_json_array_with_system_history_and_extra_keys():
    _, ex = read(load_rows(ALPACA), ALPACA)
    assert [e.index for e in ex] == [0, 1, 2, 3, 4, 5]
    assert ex[0].input == "Give three tips for staying healthy." and ex[0].context == []  # empty input: no blank
    assert ex[1].input == "Translate the sentence into French.\n\nThe cat is on the table."
    assert ex[1].target == ex[1].reference == "Le chat est sur la table."
    assert ex[2].system == "You are a concise assistant." and ex[0].system is None
    assert ex[3].context == [
        {"role": "user", "content": "What is a normal body temperature?"},
        {"role": "assistant", "content": "Around 98.6 degrees Fahrenheit."},
        {"role": "user", "content": "Is that the same for children?"},
        {"role": "assistant", "content": "Roughly, yes; it varies a little by age and time of day."},
    ]
    assert ex[3].input == "And what is that in Celsius?" and ex[3].target == "About 37 degrees Celsius."
    assert ex[4].target == "11"  # a number in the JSON is written out
    assert ex[5].target is None  # an empty output is a prompt-only row, which ReST can grow answers for
    assert not any(hasattr(e, "category") or hasattr(e, "meta") for e in ex)  # extra keys are kept nowhere


def test_alpaca_csv_history_written_as_a_json_string():
    _, ex = read(load_rows(ALPACA_CSV), ALPACA_CSV)
    assert ex[0].input == "Convert the temperature to Celsius.\n\n212 F" and ex[0].context == []
    assert ex[1].context == [{"role": "user", "content": "Convert the temperature to Celsius: 212 F"},
                             {"role": "assistant", "content": "100 C"}]
    assert ex[1].target == "373.15 K"


def test_sharegpt_context_target_and_system():
    _, ex = read(load_rows(SHAREGPT), SHAREGPT)
    by_row = {e.index: e for e in ex}
    assert (by_row[0].input, by_row[0].context, by_row[0].target) == ("What is the capital of Australia?", [],
                                                                        "Canberra.")
    travel = by_row[1]  # a JSON string with a system turn and two exchanges, human/gpt
    assert travel.system == "You are a helpful travel agent."
    assert travel.input == "Which city should I start in?"
    assert [t["role"] for t in travel.context] == ["user", "assistant"]
    assert travel.context[1]["content"] == "Late March to early April is cherry blossom season."
    assert travel.target == "Start in Tokyo, then take the train to Kyoto."
    code = by_row[2]  # role/content turns, multi-turn
    assert code.input == "Now make it add three." and code.context[0]["role"] == "user"
    assert code.target == "def add(a, b, c):\n    return a + b + c"
    assert (by_row[3].system, by_row[3].target) == ("Answer in one word.", None)  # ends on the user: no target
    assert by_row[4].target == "Why did the scarecrow win an award?\n\nBecause he was outstanding in his field."
    assert (by_row[5].input, by_row[5].target) == ("Say hi in Spanish.", "Hola.")  # `messages`, not `conversations`


def test_sharegpt_all_rows_json_strings():
    _, ex = read(load_rows(DUMPED), DUMPED)
    assert ex[0].target == "Try 'The Old Man and the Sea'."
    assert ex[1].input == "Thanks!" and ex[1].target is None and len(ex[1].context) == 2


def test_plain_fields_and_a_missing_column_names_the_fix():
    _, ex = read(load_rows(TICKETS), TICKETS, fields={**TICKET_FIELDS, "target": "queue"})
    assert (ex[0].input, ex[0].reference, ex[0].target) == ("I was charged twice for my subscription this month.",
                                                           "billing", "billing")
    with pytest.raises(ValueError, match=re.escape(f"{TICKETS}: row 1: missing 'text' (it has ['body', 'customer', "
                                                   f"'priority', 'queue', 'ticket']); set task.fields.input to the "
                                                   f"column that holds it")):
        read(load_rows(TICKETS), TICKETS, fields={"input": "text"})


def test_skip_drops_bad_rows_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="rest_loop.tasks.formats"):
        _, ex = read(load_rows(SOME_BAD), SOME_BAD, on_bad_row="skip")
    assert [e.index for e in ex] == [0, 2, 5]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{SOME_BAD}: skipped 3 of 6 rows (on_bad_row=skip): rows 2, 4, 5; row 2: ")


def test_error_names_the_file_and_row():
    with pytest.raises(ValueError, match=re.escape(f"{SOME_BAD}: row 2: 'conversations' has no user turn")):
        read(load_rows(SOME_BAD), SOME_BAD)


def test_declared_format_that_does_not_fit_is_an_error():
    with pytest.raises(ValueError, match=re.escape(f"{SHAREGPT}: row 1: not in the alpaca format: it has no "
                                                   f"'instruction' (it looks like sharegpt)")):
        read(load_rows(SHAREGPT), SHAREGPT, format="alpaca")
    with pytest.raises(ValueError, match=re.escape(f"{ALPACA}: none of its 6 rows can be used; row 1: not in "
                                                   f"the sharegpt format")):
        read(load_rows(ALPACA), ALPACA, format="sharegpt", on_bad_row="skip")  # skipping everything is no task


@pytest.mark.parametrize("row,message", [
    ({"conversations": '[{"from": "human", "value": "hi"'}, "'conversations' is a string but not valid JSON"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "tool", "value": "{}"}]},
     "'conversations' turn 2: unknown speaker 'tool'"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "system", "value": "Be brief."}]},
     "'conversations': a system turn comes after the conversation started"),
    ({"conversations": [{"from": "human", "value": ["hi"]}]}, "'conversations' turn 1 (human) text must be text"),
    ({"conversations": {"from": "human", "value": "hi"}}, "'conversations' must be a list, not dict"),
    ({"instruction": "", "input": "", "output": "x"}, "'instruction' and 'input' are both empty"),
    ({"instruction": "Go on.", "history": [["only the user"]]}, "'history' turn 1 must be a [user, assistant] pair"),
    ({"instruction": "Go on.", "history": '[["a", "b"]'}, "'history' is a string but not valid JSON"),
], ids=["broken-json", "unknown-speaker", "late-system", "list-content", "not-a-list", "empty-alpaca",
        "history-not-pairs", "history-broken-json"])
def test_bad_rows_say_what_is_wrong(row, message):
    with pytest.raises(ValueError, match=re.escape(f"my.jsonl: row 1: {message}")):
        read([row], "my.jsonl")


def test_detect_and_config_errors():
    assert detect({"conversations": None, "instruction": "x"}) == "alpaca"  # None is absent (datasets' fill)
    assert detect({"messages": [], "instruction": "x"}) == "sharegpt"
    assert detect({"text": "x"}) is None
    with pytest.raises(ConfigError, match="task.format='jsonl': must be one of auto, alpaca, sharegpt, plain"):
        read([{"text": "x"}], "f", format="jsonl")
    with pytest.raises(ConfigError, match="task.on_bad_row='ignore': must be 'error' or 'skip'"):
        read([{"text": "x"}], "f", on_bad_row="ignore")
    with pytest.raises(ConfigError, match=r"task.fields: unknown \['label'\]"):
        read([{"text": "x"}], "f", fields={"label": "y"})
    with pytest.raises(ValueError, match="f: has no rows"):
        read([], "f")
    assert isinstance(BadRow("x"), ValueError)


def test_doctests():
    assert doctest.testmod(formats).failed == 0


def test_fixture_files_are_what_people_write():
    """The ShareGPT fixture really has escaped JSON strings and both turn styles, and Alpaca is one array."""
    lines = [json.loads(line) for line in Path(SHAREGPT).read_text().splitlines()]
    assert any(isinstance(r.get("conversations"), str) for r in lines)
    assert {k for r in lines if isinstance(r.get("conversations"), list) for t in r["conversations"] for k in t} == \
        {"from", "value", "role", "content"}
    assert isinstance(json.loads(Path(ALPACA).read_text()), list)

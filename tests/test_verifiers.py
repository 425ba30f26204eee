"""Programmatic verifiers: tables of config, completion, expected score and status."""

from __future__ import annotations

import doctest
import json

import pytest

from rest_loop.improve import verifiers
from rest_loop.improve.rewards import Reward
from rest_loop.improve.verifiers import ExactMatch, JsonSchema, LabelMatch, RegexMatch, extract_json
from rest_loop.records import Prompt, Sample


def sample(text: str, idx: int = 0) -> Sample:
    return Sample(round=1, prompt_id="p", sample_idx=idx, text=text, num_tokens=1, policy="base", seed=0)


def check(result, score, status):
    assert (result.score, result.status) == (score, status), result.reason
    assert result.reason  # every result says why


@pytest.mark.parametrize("normalise,reference,text,score,status", [
    (True, "Paris", "Paris", 1.0, "ok"),
    (True, "Paris", "  paris.  ", 1.0, "ok"),
    (True, "New York", "new   york!", 1.0, "ok"),         # inner whitespace collapses
    (True, "Paris", "Paris ?!", 1.0, "ok"),
    (True, "STRASSE", "straße", 1.0, "ok"),              # casefold, not lower
    (True, "Paris", "Paris, France", 0.0, "ok"),
    (True, "3.5", "3.5", 1.0, "ok"),
    (True, "3.", "3", 1.0, "ok"),                         # both sides are normalised
    (False, "Paris", "  Paris\n", 1.0, "ok"),             # only the ends are stripped
    (False, "Paris", "paris", 0.0, "ok"),
    (False, "Paris", "Paris.", 0.0, "ok"),
    (False, "New York", "New  York", 0.0, "ok"),
    (True, None, "Paris", None, "error"),                 # no reference: cannot judge
    (False, None, "Paris", None, "error"),
])
def test_exact_match(normalise, reference, text, score, status):
    check(ExactMatch(normalise).one(reference, text), score, status)


@pytest.mark.parametrize("config,reference,text,score,status", [
    ({"pattern": r"\bdef \w+\("}, None, "def f(x): pass", 1.0, "ok"),   # no group: the reference is not needed
    ({"pattern": r"^def"}, "ignored", "x = 1\ndef f(): pass", 0.0, "ok"),
    ({"pattern": r"^def", "flags": "m"}, None, "x = 1\ndef f(): pass", 1.0, "ok"),
    ({"pattern": r"ANSWER"}, None, "answer", 0.0, "ok"),
    ({"pattern": r"ANSWER", "flags": "i"}, None, "answer", 1.0, "ok"),
    ({"pattern": r"a.b", "flags": "s"}, None, "a\nb", 1.0, "ok"),
    ({"pattern": r"answer:\s*([A-D])", "reference_group": 1}, "B", "answer: B", 1.0, "ok"),
    ({"pattern": r"answer:\s*([A-D])", "reference_group": 1}, "B", "answer: A ... answer: B", 1.0, "ok"),  # last match
    ({"pattern": r"answer:\s*([A-D])", "reference_group": 1}, "A", "answer: A ... answer: B", 0.0, "ok"),
    ({"pattern": r"answer:(.*)", "reference_group": 1}, " B ", "answer:  B  ", 1.0, "ok"),  # both sides stripped
    ({"pattern": r"answer: (?P<c>[A-D])", "reference_group": "c"}, "C", "answer: C", 1.0, "ok"),
    ({"pattern": r"answer: (?P<c>[A-D])", "reference_group": "c"}, "C", "no answer", 0.0, "ok"),  # not found
    ({"pattern": r"answer: (?P<c>[A-D])", "reference_group": "c"}, None, "answer: C", None, "error"),
    ({"pattern": r"(x)|(y)", "reference_group": 2}, "y", "x", 0.0, "ok"),   # the group took no part: ""
])
def test_regex_match(config, reference, text, score, status):
    check(RegexMatch(**config).one(reference, text), score, status)


def test_regex_not_found_reason():
    assert RegexMatch(r"(\d+)", reference_group=1).one("5", "none").reason == "pattern not found"


@pytest.mark.parametrize("config,match", [
    ({"pattern": r"(unclosed"}, "pattern="),
    ({"pattern": r"*x"}, "pattern="),
    ({"pattern": r"x", "flags": "iq"}, "flags="),
    ({"pattern": r"(x)", "reference_group": 2}, "reference_group="),
    ({"pattern": r"(x)", "reference_group": "name"}, "reference_group="),
])
def test_regex_bad_config_raises(config, match):
    with pytest.raises(ValueError, match=match):
        RegexMatch(**config)


PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "address": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("extract,text,score,reason", [
    (True, '{"name": "Ada", "age": 36}', 1.0, "valid"),
    (True, 'Here you go: {"name": "Ada", "age": 36}. Anything else?', 1.0, "valid"),   # prose after the object
    (True, 'Sure!\n```json\n{"name": "Ada", "age": 36}\n```\nDone {}.', 1.0, "valid"),  # the fence wins
    (True, '```JSON\n{"name": "Ada", "age": 36}```', 1.0, "valid"),
    (True, '{"name": "Ada", "age": 36, "address": {"city": "London"}}', 1.0, "valid"),  # nested
    (True, '{"name": "Ada", "age": 36, "address": {"city": 7}}', 0.0, "$.address.city: 7 is not of type"),
    (True, '{"name": "Ada", "age": 36, "address": {}}', 0.0, "'city' is a required property"),
    (True, '{"name": "Ada", "age": "36"}', 0.0, "$.age: '36' is not of type 'integer'"),
    (True, '{"name": "Ada", "age": -1}', 0.0, "$.age: -1 is less than the minimum"),
    (True, '{"name": "Ada"}', 0.0, "'age' is a required property"),
    (True, '[{"name": "Ada", "age": 36}]', 1.0, "valid"),        # extraction starts at the first "{"
    (True, '{"name": "Ada", "age": 36', 0.0, "not valid JSON"),  # truncated
    (True, "{'name': 'Ada', 'age': 36}", 0.0, "not valid JSON"),  # Python repr, not JSON
    (True, "I cannot help with that.", 0.0, "not valid JSON"),
    (True, "", 0.0, "not valid JSON"),
    (True, '```json\n{"name": "Ada",}\n```', 0.0, "not valid JSON"),
    (False, '{"name": "Ada", "age": 36}', 1.0, "valid"),
    (False, ' \n{"name": "Ada", "age": 36}\n', 1.0, "valid"),
    (False, 'Here: {"name": "Ada", "age": 36}', 0.0, "not valid JSON"),  # no extraction: all of it must be JSON
    (False, '```json\n{"name": "Ada", "age": 36}\n```', 0.0, "not valid JSON"),
])
def test_json_schema(extract, text, score, reason):
    result = JsonSchema(PERSON, extract=extract).one(text)
    check(result, score, "ok")  # bad JSON is a real 0: the completion is wrong, the judging is not
    assert reason in result.reason


def test_json_schema_keeps_parsed_value_and_clips_reason():
    result = JsonSchema(PERSON).one('{"name": "Ada", "age": 36}')
    assert result.raw == {"name": "Ada", "age": 36}
    bad = JsonSchema(PERSON).one("{" + "x" * 500)
    assert bad.raw is None and len(bad.reason) <= 80


@pytest.mark.parametrize("text,expected", [
    ('a {"x": 1} b {"y": 2}', {"x": 1}),
    ('```json\n{"x": 1}\n``` then {"y": 2}', {"x": 1}),
    ('{"y": 2} then ```json\n{"x": 1}\n```', {"x": 1}),
    ('{"x": {"y": [1, {"z": null}]}} trailing }', {"x": {"y": [1, {"z": None}]}}),
    ("  42 ", 42),                                                 # no "{": the whole text
])
def test_extract_json(text, expected):
    assert extract_json(text) == expected


def test_extract_json_does_not_fall_back_to_an_inner_object():
    with pytest.raises(json.JSONDecodeError):
        extract_json('{"a": {"b": 1}, "c": ')  # truncated: accepting {"b": 1} would reward it


def test_json_schema_from_file(tmp_path):
    path = tmp_path / "person.json"
    path.write_text(json.dumps(PERSON))
    verifier = JsonSchema(schema_file=str(path))
    assert verifier.one('{"name": "Ada", "age": 36}').score == 1.0
    assert verifier.one('{"name": "Ada"}').score == 0.0


def test_json_schema_file_that_is_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("type: object")
    with pytest.raises(ValueError, match="schema_file="):
        JsonSchema(schema_file=str(path))


@pytest.mark.parametrize("kwargs,match", [
    ({}, "exactly one"),
    ({"schema": PERSON, "schema_file": "person.json"}, "exactly one"),
    ({"schema": {"type": "objekt"}}, "invalid schema"),
    ({"schema": {"properties": {"a": {"minimum": "zero"}}}}, "invalid schema"),
    ({"schema": {"required": "name"}}, "invalid schema"),
])
def test_json_schema_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JsonSchema(**kwargs)


def test_json_schema_unresolvable_ref_cannot_judge():
    result = JsonSchema({"$ref": "urn:example:missing"}).one("{}")
    assert (result.score, result.status) == (None, "error")


def test_verifiers_share_the_reward_signature():
    prompts = [Prompt("p", [], reference="B"), Prompt("p", [], reference=None)]
    samples = [sample("answer: b", 0), sample("answer: B", 1)]
    for verifier, scores in [
        (ExactMatch(), [0.0, None]),
        (RegexMatch(r"answer: ([a-d])", reference_group=1, flags="i"), [0.0, None]),
        (RegexMatch(r"answer: [A-D]"), [0.0, 1.0]),
        (JsonSchema({"type": "object"}), [0.0, 0.0]),
    ]:
        results = verifier(prompts, samples)
        assert [r.score for r in results] == scores, verifier.name


def test_verifiers_build_from_reward_config():
    """Hydra hands a nested schema over as a DictConfig: it must still work."""
    reward = Reward.from_config({"terms": {
        "format": {"_target_": "rest_loop.improve.verifiers.JsonSchema", "schema": PERSON},
        "answer": {"_target_": "rest_loop.improve.verifiers.RegexMatch", "pattern": r'"name": "(\w+)"',
                   "reference_group": 1},
    }})
    out = reward({"p": Prompt("p", [], reference="Ada")}, [sample('{"name": "Ada", "age": 36}')])
    assert (out[0].score, out[0].status) == (1.0, "ok")


SENTIMENT = ["positive", "negative", "neutral"]


@pytest.mark.parametrize("normalise,reference,text,score,status,reason", [
    (True, "positive", "positive", 1.0, "ok", "'positive' == reference"),
    (True, "positive", "  Positive.\n", 1.0, "ok", "== reference"),
    (True, "positive", '"positive"', 1.0, "ok", "== reference"),
    (True, "positive", "\u201cPositive\u201d!", 1.0, "ok", "== reference"),       # curly quotes
    (True, "positive", "**positive**", 1.0, "ok", "== reference"),                # markdown bold
    (True, "positive", "Label: positive", 1.0, "ok", "== reference"),
    (True, "positive", 'Answer: "Positive".', 1.0, "ok", "== reference"),
    (True, "positive", "ANSWER :positive", 1.0, "ok", "== reference"),
    (True, "Positive", "positive", 1.0, "ok", "== reference"),                    # the reference is normalised too
    (True, "positive", "negative", 0.0, "ok", "'negative' != reference 'positive'"),   # another label
    (True, "positive", "Label: neutral", 0.0, "ok", "!= reference"),
    (True, "positive", "mostly positive", 0.0, "ok", "not one of the labels"),  # not a label at all
    (True, "positive", "positive, I think", 0.0, "ok", "not one of the labels"),
    (True, "positive", "positive\nBecause it says so.", 0.0, "ok", "not one of the labels"),
    (True, "positive", "Reason: positive", 0.0, "ok", "not one of the labels"),   # only label:/answer: are tolerated
    (True, "positive", "", 0.0, "ok", "not one of the labels"),
    (True, "happy", "positive", None, "error", "reference 'happy' is not one of the labels"),  # the data is wrong
    (True, None, "positive", None, "error", "no reference"),
    (False, "positive", " positive\n", 1.0, "ok", "== reference"),                # only the ends are stripped
    (False, "positive", "Positive", 0.0, "ok", "not one of the labels"),
    (False, "positive", "positive.", 0.0, "ok", "not one of the labels"),
    (False, "positive", "Label: positive", 0.0, "ok", "not one of the labels"),
    (False, "Positive", "positive", None, "error", "not one of the labels"),
])
def test_label_match(normalise, reference, text, score, status, reason):
    result = LabelMatch(SENTIMENT, normalise).one(reference, text)
    check(result, score, status)
    assert reason in result.reason


def test_label_match_keeps_the_label_as_written():
    verifier = LabelMatch(["Sports", "World News"])
    assert verifier.one("world news", "world  news.").raw == "World News"
    assert verifier.one("Sports", "World News").raw == "World News"   # a wrong label is still named
    assert verifier.one("Sports", "weather").raw is None


def test_label_match_reason_is_clipped():
    labels = [f"label number {i}" for i in range(20)]
    result = LabelMatch(labels).one("label number 1", "x" * 300)
    assert result.score == 0.0 and len(result.reason) <= 80


@pytest.mark.parametrize("labels,normalise,match", [
    ([], True, "at least one"),
    ("positive", True, "not one string"),
    (["yes", "no", "Yes"], True, "'Yes' is the same as 'yes'"),
    (["yes", "yes."], True, "the same as"),
    (["yes", "..."], True, "empty"),
    (["yes", " yes "], False, "the same as"),
])
def test_label_match_bad_config_raises(labels, normalise, match):
    with pytest.raises(ValueError, match=match):
        LabelMatch(labels, normalise)


def test_label_match_case_sensitive_labels_without_normalising():
    verifier = LabelMatch(["A", "a"], normalise=False)
    assert verifier.one("A", "A").score == 1.0 and verifier.one("A", "a").score == 0.0


def test_label_match_shares_the_reward_signature_and_builds_from_config():
    reward = Reward.from_config({"terms": {
        "label": {"_target_": "rest_loop.improve.verifiers.LabelMatch", "labels": SENTIMENT}}})
    prompts = {"p": Prompt("p", [], reference="neutral"), "q": Prompt("q", [], reference=None)}
    samples = [sample("Neutral."), sample("neutral", 1), Sample(1, "q", 0, "neutral", 1, "base", 0)]
    out = reward(prompts, samples)
    assert [(r.score, r.status) for r in out] == [(1.0, "ok"), (1.0, "ok"), (None, "error")]
    assert LabelMatch(SENTIMENT).name == "label_match"


def test_label_match_docstring_examples():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(LabelMatch, globs=vars(verifiers)):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0

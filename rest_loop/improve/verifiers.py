"""Programmatic rewards. Every reward term shares one signature:

    term(prompts: list[Prompt], samples: list[Sample]) -> list[Result]

with `prompts[i]` the prompt of `samples[i]`. A Result's score is in [0, 1] and
present only when its status is "ok"; "could not judge" (no reference where one
is needed) is status "error" with no score. A bad config raises at construction.

    NumericMatch   the completion's final number equals the reference
    ExactMatch     the completion equals the reference, optionally normalised
    RegexMatch     a pattern is found, or its last match's group equals the reference
    JsonSchema     the completion's JSON validates against a JSON Schema
    LabelMatch     the completion is one of the labels, and the reference's one

    >>> NumericMatch()([Prompt("p", [], reference="68")], [Sample(0, "p", 0, "It is 68.", 3, "base", 0)])
    [Result(score=1.0, status='ok', reason='answer 68 == reference 68', raw=None)]
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from omegaconf import DictConfig, OmegaConf
from referencing.exceptions import Unresolvable

from rest_loop.config import ConfigError
from rest_loop.records import Prompt, Sample, Status

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
NO_REFERENCE = "the task gives no reference to match against"


@dataclass
class Result:
    score: float | None
    status: Status
    reason: str = ""
    raw: Any = None  # what the reward saw or produced, kept beside the score


def clip(text: str, n: int = 80) -> str:
    """Keep reasons short: they are read in logs beside thousands of others."""
    return text if len(text) <= n else text[: n - 3] + "..."


def extract_number(text: str) -> str | None:
    """The answer in a completion: a `#### N` marker, else `\\boxed{N}`, else the last number."""
    text = text.replace(",", "")
    for pattern in (r"####\s*(-?\d+(?:\.\d+)?)", r"\\boxed\{\s*(-?\d+(?:\.\d+)?)\s*\}"):
        found = re.findall(pattern, text)
        if found:
            return found[-1]
    found = NUMBER.findall(text)
    return found[-1] if found else None


class NumericMatch:
    """1.0 when the completion's final number equals the reference, else 0.0."""

    name = "numeric_match"
    needs_reference = True  # a run whose task has no references is stopped before it starts

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(p.reference, s.text) for p, s in zip(prompts, samples)]

    @staticmethod
    def one(reference: str | None, text: str) -> Result:
        if reference is None:
            return Result(None, "error", NO_REFERENCE)
        answer = extract_number(text)
        if answer is None:
            return Result(0.0, "ok", "no number in the completion")
        want = extract_number(reference)
        same = want is not None and float(answer) == float(want)
        return Result(1.0 if same else 0.0, "ok", f"answer {answer} {'==' if same else '!='} reference {want}")


class ExactMatch:
    """1.0 when the completion equals the reference, else 0.0.

    Normalised (the default) compares after collapsing whitespace, casefolding
    and dropping trailing `.!?`; otherwise only the ends are stripped.

    >>> p, s = Prompt("p", [], reference="Paris"), Sample(0, "p", 0, "  paris. ", 3, "base", 0)
    >>> ExactMatch()([p], [s])
    [Result(score=1.0, status='ok', reason="'paris' == reference", raw=None)]
    >>> ExactMatch(normalise=False).one("Paris", "paris").score
    0.0
    """

    name = "exact_match"
    needs_reference = True  # a run whose task has no references is stopped before it starts

    def __init__(self, normalise: bool = True):
        self.normalise = normalise

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(p.reference, s.text) for p, s in zip(prompts, samples)]

    def clean(self, text: str) -> str:
        if not self.normalise:
            return text.strip()
        return re.sub(r"[.!?\s]+$", "", " ".join(text.split()).casefold())  # "Paris !" -> "paris"

    def one(self, reference: str | None, text: str) -> Result:
        if reference is None:
            return Result(None, "error", NO_REFERENCE)
        answer, want = self.clean(text), self.clean(reference)
        if answer == want:
            return Result(1.0, "ok", clip(f"{answer!r} == reference"))
        return Result(0.0, "ok", clip(f"{clip(answer, 40)!r} != reference {want!r}"))


REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


class RegexMatch:
    """Without `reference_group`: 1.0 when `pattern` occurs in the completion, else 0.0.

    With `reference_group` (a group name or number): 1.0 when that group of the
    LAST match equals the reference, both stripped; the last match because
    models state their final answer after their working. `flags` is letters
    from "imsx" (ignorecase, multiline, dotall, verbose).

    >>> p, s = Prompt("p", [], reference="B"), Sample(0, "p", 0, "Maybe A. Answer: B", 3, "base", 0)
    >>> RegexMatch(r"answer:\\s*(?P<choice>[A-D])", reference_group="choice", flags="i")([p], [s])
    [Result(score=1.0, status='ok', reason="'B' == reference", raw='B')]
    >>> RegexMatch(r"^def \\w+\\(", flags="m").one(None, "x = 1\\ndef f():").score
    1.0
    """

    name = "regex_match"

    def __init__(self, pattern: str, reference_group: str | int | None = None, flags: str = ""):
        unknown = set(flags) - set(REGEX_FLAGS)
        if unknown:
            raise ConfigError(f"RegexMatch flags={flags!r}: unknown letters {sorted(unknown)}, use some of 'imsx'")
        bits = 0
        for letter in flags:
            bits |= REGEX_FLAGS[letter]
        try:
            self.regex = re.compile(pattern, bits)
        except re.error as e:
            raise ConfigError(f"RegexMatch pattern={pattern!r} does not compile: {e}") from e
        # a missing group would otherwise raise on the first sample, mid-run
        known = reference_group is None or reference_group in self.regex.groupindex or (
            isinstance(reference_group, int) and 0 <= reference_group <= self.regex.groups)
        if not known:
            raise ConfigError(f"RegexMatch reference_group={reference_group!r} is not a group of pattern={pattern!r}")
        self.pattern, self.reference_group = pattern, reference_group
        self.needs_reference = reference_group is not None

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(p.reference, s.text) for p, s in zip(prompts, samples)]

    def one(self, reference: str | None, text: str) -> Result:
        if self.reference_group is None:
            found = self.regex.search(text) is not None
            return Result(1.0 if found else 0.0, "ok", "pattern found" if found else "pattern not found")
        if reference is None:
            return Result(None, "error", NO_REFERENCE)
        last = None
        for last in self.regex.finditer(text):
            pass
        if last is None:
            return Result(0.0, "ok", "pattern not found")
        answer = (last.group(self.reference_group) or "").strip()  # a group that did not take part is ""
        want = reference.strip()
        same = answer == want
        reason = f"{clip(answer, 40)!r} == reference" if same else f"{clip(answer, 40)!r} != reference {want!r}"
        return Result(1.0 if same else 0.0, "ok", clip(reason), answer)


JSON_FENCE = re.compile(r"```json\b[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_json(text: str) -> Any:
    """The JSON value in a completion; raises json.JSONDecodeError when there is none.

    The first ```json fenced block, parsed whole, if there is one. Else the
    first `{` and the one JSON value that starts there, ignoring prose after
    it (`raw_decode`). Else the whole text. Only the first `{` is tried:
    trying later ones would accept an inner object of a truncated completion.
    """
    fenced = JSON_FENCE.search(text)
    if fenced:
        return json.loads(fenced.group(1))
    start = text.find("{")
    if start >= 0:
        return json.JSONDecoder().raw_decode(text, start)[0]
    return json.loads(text)


class JsonSchema:
    """1.0 when the completion's JSON validates against a JSON Schema, else 0.0.

    Give exactly one of `schema` (a dict) or `schema_file` (a .json path). With
    `extract` the JSON is found inside the completion (see `extract_json`);
    without it the whole completion must be JSON. Invalid JSON is a real 0.0:
    the completion is what is wrong, not the judging. `raw` is the parsed value.

    >>> schema = {"type": "object", "required": ["age"], "properties": {"age": {"type": "integer"}}}
    >>> p, s = Prompt("p", []), Sample(0, "p", 0, 'Sure: {"age": "ten"} hope it helps', 3, "base", 0)
    >>> JsonSchema(schema)([p], [s])
    [Result(score=0.0, status='ok', reason="$.age: 'ten' is not of type 'integer'", raw={'age': 'ten'})]
    >>> JsonSchema(schema).one('```json\\n{"age": 10}\\n```').score
    1.0
    """

    name = "json_schema"

    def __init__(self, schema: dict | None = None, schema_file: str | None = None, extract: bool = True):
        if (schema is None) == (schema_file is None):
            raise ConfigError("JsonSchema: give exactly one of schema= or schema_file=")
        if schema_file is not None:
            try:
                with open(schema_file) as f:
                    schema = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"JsonSchema schema_file={schema_file!r} is not valid JSON: {e}") from e
        if isinstance(schema, DictConfig):  # Hydra hands nested config as DictConfig, which jsonschema rejects
            schema = OmegaConf.to_container(schema, resolve=True)
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ConfigError(f"JsonSchema: invalid schema at {e.json_path}: {e.message}") from e
        self.schema, self.extract = schema, extract
        self.validator = cls(schema)

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(s.text) for s in samples]

    def one(self, text: str) -> Result:
        try:
            value = extract_json(text) if self.extract else json.loads(text)
        except json.JSONDecodeError as e:
            return Result(0.0, "ok", clip(f"not valid JSON: {e}"))
        try:
            error = best_match(self.validator.iter_errors(value))
        except Unresolvable as e:  # a $ref we cannot fetch: the schema, not the completion, failed
            return Result(None, "error", clip(f"schema $ref unresolvable: {e}"), value)
        if error is None:
            return Result(1.0, "ok", "valid against the schema", value)
        return Result(0.0, "ok", clip(f"{error.json_path}: {error.message}", 120), value)


LABEL_PREFIX = re.compile(r"^(?:label|answer)\s*:\s*")
LABEL_EDGES = string.punctuation + string.whitespace + "\u201c\u201d\u2018\u2019\u00ab\u00bb"  # and curly quotes


class LabelMatch:
    """For classification: 1.0 when the completion is the prompt's reference label, else 0.0.

    The completion must be exactly one of `labels`: another label and no label
    at all both score 0.0, and the reason says which. Normalised (the default)
    compares after casefolding, collapsing whitespace, dropping surrounding
    punctuation and quotes and a leading "label:" or "answer:"; the labels are
    normalised the same way, so two that become equal are a config error.
    Without normalising only the ends are stripped. A reference that is not a
    label is status "error": the data is wrong, not the completion. `raw` is
    the label found, as written in `labels`.

    >>> verifier = LabelMatch(["positive", "negative", "neutral"])
    >>> p, s = Prompt("p", [], reference="positive"), Sample(0, "p", 0, 'Answer: "Positive".', 3, "base", 0)
    >>> verifier([p], [s])
    [Result(score=1.0, status='ok', reason="'positive' == reference", raw='positive')]
    >>> verifier.one("positive", "mostly positive").reason
    "'mostly positive' is not one of the labels ['positive', 'negative', 'neutral']"
    """

    name = "label_match"
    needs_reference = True  # a run whose task has no references is stopped before it starts

    def __init__(self, labels: list[str], normalise: bool = True):
        if isinstance(labels, str):  # list("yes") would quietly make labels "y", "e", "s"
            raise ConfigError(f"LabelMatch labels={labels!r}: give a list of labels, not one string")
        self.labels, self.normalise = [str(label) for label in labels], normalise  # Hydra hands a ListConfig
        if not self.labels:
            raise ConfigError("LabelMatch labels=[]: give at least one label")
        self.by_key: dict[str, str] = {}
        for label in self.labels:
            key = self.clean(label)
            if not key or key in self.by_key:
                other = "empty" if not key else f"the same as {self.by_key[key]!r}"
                raise ConfigError(f"LabelMatch labels={self.labels!r}: {label!r} is {other} after normalising")
            self.by_key[key] = label

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(p.reference, s.text) for p, s in zip(prompts, samples)]

    def clean(self, text: str) -> str:
        if not self.normalise:
            return text.strip()
        text = " ".join(text.split()).casefold().strip(LABEL_EDGES)
        return LABEL_PREFIX.sub("", text).strip(LABEL_EDGES)  # 'Answer: "Yes".' -> 'answer: "yes' -> 'yes'

    def one(self, reference: str | None, text: str) -> Result:
        if reference is None:
            return Result(None, "error", NO_REFERENCE)
        want = self.by_key.get(self.clean(reference))
        if want is None:
            return Result(None, "error", clip(f"reference {reference!r} is not one of the labels {self.labels}"))
        answer = self.by_key.get(self.clean(text))
        if answer is None:
            return Result(0.0, "ok", clip(f"{clip(self.clean(text), 40)!r} is not one of the labels {self.labels}"))
        if answer == want:
            return Result(1.0, "ok", clip(f"{answer!r} == reference"), answer)
        return Result(0.0, "ok", clip(f"{answer!r} != reference {want!r}"), answer)

"""Rows as people write them (Alpaca, ShareGPT, or plain columns) read into one shape, `Example`.

    alpaca    {"instruction", "input", "output", "system"?, "history"?: [[user, assistant], ...]}
    sharegpt  {"conversations" or "messages": [{"from": "human"|"gpt"|"system", "value"} or
               {"role": "user"|"assistant"|"system", "content"}, ...], "system"?}
    plain     any columns, named by `fields`: {input: <col>, reference: <col>, system: <col>, target: <col>}

`auto` takes the format of the first row that has `conversations`/`messages`
(ShareGPT) or `instruction` (Alpaca), else plain. In a conversation the last user
turn is the prompt, the turns before it are its context, and the assistant reply
after it is the target. Values that are JSON written as a string (a CSV column,
or a `conversations` someone json.dumps'd) are parsed. Columns the format does not
use are ignored here; DatasetTask still offers them to the template.

A row that does not fit raises DataError naming the file and the 1-based row
(on_bad_row="error"), or is dropped and counted in one warning (on_bad_row="skip").

    >>> fmt, [ex] = read([{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}],
    ...                  "chat.jsonl")
    >>> fmt, ex.input, ex.context, ex.target
    ('sharegpt', 'Hi', [], 'Hello!')
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from rest_loop.config import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("auto", "alpaca", "sharegpt", "plain")
FIELDS = {"input": "input", "reference": None, "system": None, "target": None}  # plain: role -> column
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "model": "assistant", "system": "system"}  # ShareGPT's speakers and OpenAI's roles -> chat roles
ON_BAD_ROW = ("error", "skip")
SHOW_ROWS = 5  # how many skipped row numbers the warning lists


@dataclass
class Example:
    """One row in the common shape, whatever format it was written in."""

    index: int  # 0-based row in its source, for prompt ids and for the row's other columns
    input: str  # the prompt: instruction (+ input), the last user turn, or the fields.input column
    system: str | None = None  # the row's own system prompt, if it has one
    context: list[dict[str, str]] = field(default_factory=list)  # earlier turns, [{"role", "content"}], oldest first
    target: str | None = None  # the reference response: Alpaca's output, the reply to the last user turn
    reference: str | None = None  # the gold answer a verifier compares with: fields.reference, else the target


class BadRow(ValueError):
    """What is wrong with one row; `read` adds where it is."""


class BadRows:
    """Bad rows of one source: raise at the first (on_bad_row="error"), or count them for one warning ("skip")."""

    def __init__(self, source: str, on_bad_row: str = "error", key: str = "task.on_bad_row"):
        check_on_bad_row(on_bad_row, key)
        self.source, self.on_bad_row, self.key = source, on_bad_row, key
        self.rows: list[int] = []  # 1-based, like the error messages
        self.first = ""

    def add(self, index: int, why: Exception | str) -> None:
        if self.on_bad_row == "error":
            raise DataError(f"{self.source}: row {index + 1}: {why}. Fix the row, or drop the rows that do not "
                            f"fit with {self.key}=skip") from None
        self.rows.append(index + 1)
        self.first = self.first or str(why)

    def done(self, total: int, kept: int) -> None:
        """Warn once about the skipped rows; raise when no row is left, since an empty task is no task."""
        if total == 0:
            raise DataError(f"{self.source}: has no rows")
        if kept == 0:
            raise DataError(f"{self.source}: none of its {total} rows can be used; row {self.rows[0]}: {self.first}")
        if self.rows:
            shown = ", ".join(map(str, self.rows[:SHOW_ROWS])) + (", ..." if len(self.rows) > SHOW_ROWS else "")
            log.warning("%s: skipped %d of %d rows (on_bad_row=skip): rows %s; row %d: %s",
                        self.source, len(self.rows), total, shown, self.rows[0], self.first)


def check_on_bad_row(on_bad_row: str, key: str = "task.on_bad_row") -> None:
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(f"{key}={on_bad_row!r}: must be 'error' or 'skip'")


def check_fields(fields: dict[str, Any] | None, key: str = "task.fields") -> dict[str, str | None]:
    """The plain-format column mapping with defaults filled in; unknown roles are a config error."""
    given = dict(fields or {})
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{key}: unknown {unknown}; the roles are {sorted(FIELDS)}")
    merged = {**FIELDS, **given}
    if not merged["input"]:
        raise ConfigError(f"{key}.input={merged['input']!r}: name the column that holds the prompt")
    return merged


def detect(row: dict[str, Any]) -> str | None:
    """The format a row is written in, from its keys; None when it could be any plain table."""
    if present(row, "conversations") or present(row, "messages"):
        return "sharegpt"
    if present(row, "instruction"):
        return "alpaca"
    return None


def read(rows: list[dict[str, Any]], source: str, format: str = "auto", fields: dict[str, Any] | None = None,
         on_bad_row: str = "error", bad: BadRows | None = None) -> tuple[str, list[Example]]:
    """(the format used, one Example per good row). Pass `bad` to keep counting bad rows after this
    (DatasetTask adds template errors), and call its `done` yourself."""
    if format not in FORMATS:
        raise ConfigError(f"task.format={format!r}: must be one of {', '.join(FORMATS)}")
    fields = check_fields(fields)
    if format == "auto":
        format = next((f for f in map(detect, rows) if f), "plain")
    collect = bad or BadRows(source, on_bad_row)
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(parse(i, row, format, fields))
        except BadRow as e:
            collect.add(i, e)
    if bad is None:
        collect.done(len(rows), len(examples))
    return format, examples


def parse(index: int, row: dict[str, Any], format: str, fields: dict[str, str | None]) -> Example:
    """One row as an Example, or BadRow saying what is wrong with it."""
    if format == "plain":
        return plain(index, row, fields)
    if format != detect(row):
        other = detect(row)
        looks = f"it looks like {other}" if other else f"it has {sorted(k for k in row if present(row, k))}"
        wants = "'conversations' or 'messages'" if format == "sharegpt" else "'instruction'"
        raise BadRow(f"not in the {format} format: it has no {wants} ({looks})")
    example = alpaca(index, row) if format == "alpaca" else sharegpt(index, row)
    if fields["reference"]:
        example.reference = text(row.get(fields["reference"]), repr(fields["reference"]), row)
    return example


def alpaca(index: int, row: dict[str, Any]) -> Example:
    instruction = text(row.get("instruction"), "'instruction'", row).strip()
    extra = optional_text(row.get("input"), "'input'").strip()
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    if not prompt:
        raise BadRow("'instruction' and 'input' are both empty")
    context = []
    for n, pair in enumerate(as_list(row.get("history"), "'history'"), start=1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadRow(f"'history' turn {n} must be a [user, assistant] pair, not {clip(pair)}")
        context += [{"role": "user", "content": text(pair[0], f"'history' turn {n} user")},
                    {"role": "assistant", "content": text(pair[1], f"'history' turn {n} assistant")}]
    output = optional_text(row.get("output"), "'output'") or None  # a prompt-only row is fine: ReST grows answers
    system = optional_text(row.get("system"), "'system'") or None
    return Example(index, prompt, system, context, target=output, reference=output)


def sharegpt(index: int, row: dict[str, Any]) -> Example:
    name = "conversations" if present(row, "conversations") else "messages"
    turns = []
    for n, turn in enumerate(as_list(row[name], repr(name)), start=1):
        if not isinstance(turn, dict):
            raise BadRow(f"{name!r} turn {n} must be an object with from/value or role/content, not {clip(turn)}")
        speaker = turn.get("from") if turn.get("from") is not None else turn.get("role")
        role = ROLES.get(str(speaker).strip().lower())
        if role is None:
            raise BadRow(f"{name!r} turn {n}: unknown speaker {speaker!r}; known: {sorted(ROLES)}")
        content = turn.get("value") if turn.get("value") is not None else turn.get("content")
        turns.append({"role": role, "content": text(content, f"{name!r} turn {n} ({speaker}) text")})
    systems = []
    while turns and turns[0]["role"] == "system":
        systems.append(turns.pop(0)["content"])
    if any(t["role"] == "system" for t in turns):
        raise BadRow(f"{name!r}: a system turn comes after the conversation started; chat templates take it first")
    users = [i for i, t in enumerate(turns) if t["role"] == "user"]
    if not users:
        raise BadRow(f"{name!r} has no user turn to use as the prompt")
    last = users[-1]
    prompt = turns[last]["content"].strip()
    if not prompt:
        raise BadRow(f"{name!r}: the last user turn is empty")
    replies = [t["content"] for t in turns[last + 1:]]  # only assistant turns can follow the last user turn
    target = "\n\n".join(replies) or None  # consecutive replies (scraped ShareGPT splits long ones) are one
    system = "\n\n".join(systems) or optional_text(row.get("system"), "'system'") or None
    return Example(index, prompt, system, turns[:last], target=target, reference=target)


def plain(index: int, row: dict[str, Any], fields: dict[str, str | None]) -> Example:
    def column(role: str, required: bool = True) -> str | None:
        name = fields[role]
        if name is None:
            return None
        if not required:
            return optional_text(row.get(name), repr(name)) or None
        return text(row.get(name), repr(name), row, hint=f"task.fields.{role}")

    prompt = column("input").strip()
    if not prompt:
        raise BadRow(f"{fields['input']!r} is empty")
    return Example(index, prompt, column("system", required=False), [], target=column("target"),
                   reference=column("reference"))


def present(row: dict[str, Any], key: str) -> bool:
    """`datasets` gives a key that only some rows have to every row, as None: None is absent."""
    return row.get(key) is not None


def text(value: Any, what: str, row: dict[str, Any] | None = None, hint: str | None = None) -> str:
    """A text value; numbers are written out ("label": 1 is "1"), anything else is a bad row."""
    if value is None:
        has = f" (it has {sorted(k for k in row if present(row, k))})" if row is not None else ""
        fix = f"; set {hint} to the column that holds it" if hint else ""
        raise BadRow(f"missing {what}{has}{fix}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(f"{what} must be text, not {type(value).__name__}: {clip(value)}")
    return str(value)


def optional_text(value: Any, what: str) -> str:
    return "" if value is None else text(value, what)


def as_list(value: Any, what: str) -> list:
    """A list, parsing it first when it was written as a JSON string; absent is empty."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BadRow(f"{what} is a string but not valid JSON ({e.msg} at char {e.pos}): {clip(value)}") from None
    if not isinstance(value, (list, tuple)):
        raise BadRow(f"{what} must be a list, not {type(value).__name__}: {clip(value)}")
    return list(value)


def clip(value: Any, n: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= n else shown[: n - 3] + "..."


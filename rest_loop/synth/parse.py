"""A generator's reply read as a list of new task inputs, with an honest status for the reply and each item.

Two forms are read: a JSON list (in a ```json block or bare; items are strings or
{"input": ..., "reference": ...}) and a numbered list ("1. ...", "2) ...", numbered from 1;
a line "Answer: ..." or "Reference: ..." under an item is its reference). A reply yields only
what it holds: a request that asked for 5 and got 3 counts 2 missing (`tally`); nothing is filled in.

    ok        a list was read whole
    partial   a JSON list cut off (the generator ran out of tokens) or broken midway: the whole
              items before the break are kept, the rest counted as missing
    unparsed  neither form was found
    empty     the reply is blank

    >>> p = parse('```json\\n["Name three rivers.", {"input": "Sum 2 and 3.", "reference": "5"}, ""]\\n```')
    >>> p.status, p.form, [(i.status, i.input, i.reference) for i in p.items]
    ('ok', 'json', [('ok', 'Name three rivers.', None), ('ok', 'Sum 2 and 3.', '5'), ('empty', '', None)])
    >>> p = parse('Sure!\\n1. Name a bird.\\n2) Name a tree.\\n   Answer: oak\\n\\nHope this helps!')
    >>> p.form, [(i.input, i.reference) for i in p.items]
    ('numbered', [('Name a bird.', None), ('Name a tree.', 'oak')])
    >>> parse('["One.", "Two.", "Thr').status
    'partial'
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from rest_loop.improve.verifiers import JSON_FENCE
from rest_loop.synth.records import Item, Parsed, Request, SynthRow

NUMBERED = re.compile(r"^\s*(\d{1,4})\s*[.):]\s+(.*\S)\s*$")  # "1. text", "2) text", "3: text"
ANSWER = re.compile(r"^\s*(?:answer|reference)\s*:\s*(.*\S)\s*$", re.IGNORECASE)
DECODER = json.JSONDecoder()


def parse(text: str | None) -> Parsed:
    if text is None or not text.strip():
        return Parsed("empty", None, reason="the reply is blank")
    listed, items = json_list(text), numbered(text)
    if listed is not None:
        values, broken = listed
        found = Parsed("partial" if broken else "ok", "json", [json_item(v) for v in values], broken)
        if ok_count(found.items) >= len(items):  # "Here are [3] tasks: 1. ... 2. ..." is a numbered list
            return found
    if items:
        return Parsed("ok", "numbered", items)
    return Parsed("unparsed", None, reason="neither a JSON list nor a numbered list 1., 2., ...")


def ok_count(items: list[Item]) -> int:
    return sum(i.status == "ok" for i in items)


def json_list(text: str) -> tuple[list[Any], str] | None:
    """(the list's values, "" or why it stopped early), or None when the text holds no JSON list."""
    fenced = JSON_FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = body.find("[")  # only the first: a later one may be a list inside a cut-off item
    if start < 0:
        return None
    try:
        value, _ = DECODER.raw_decode(body, start)
        return value, ""
    except json.JSONDecodeError:
        pass
    values, pos = [], start + 1
    while True:  # item by item: keep the whole items before the break
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(body) or body[pos] == "]":
            break
        try:
            value, pos = DECODER.raw_decode(body, pos)
        except json.JSONDecodeError as e:
            cut = body[pos:].strip().startswith("`") or e.pos >= len(body.rstrip()) - 1
            return (values, "cut off after %d items" % len(values) if cut else
                    f"broken after {len(values)} items: {e.msg} at char {e.pos}") if values or cut else None
        values.append(value)
    return (values, f"cut off after {len(values)} items") if values else None


def json_item(value: Any) -> Item:
    if isinstance(value, dict):
        if "input" not in value:
            return Item("invalid", reason=f"an object without 'input' (it has {sorted(value)[:5]})")
        text, ref = value["input"], value.get("reference")
        if not isinstance(text, str):
            return Item("invalid", reason=f"'input' is not a string but {type(text).__name__}")
        if ref is not None and not isinstance(ref, (str, int, float)):
            return Item("invalid", text.strip(), reason=f"'reference' is not text but {type(ref).__name__}")
        ref = None if ref is None else str(ref).strip() or None
    elif isinstance(value, str):
        text, ref = value, None
    else:
        return Item("invalid", reason=f"not a string or an object with 'input' but {type(value).__name__}")
    return Item("ok", text.strip(), ref) if text.strip() else Item("empty", reason="a blank input")


def numbered(text: str) -> list[Item]:
    """Items of a list numbered 1, 2, 3, ...; lines under an item belong to it until a blank line."""
    items: list[list[str]] = []  # per item: its lines; a "Answer:" line is kept apart below
    refs: list[str | None] = []
    open_item = False
    for line in text.splitlines():
        m = NUMBERED.match(line)
        if m and int(m.group(1)) == len(items) + 1:
            items.append([m.group(2)])
            refs.append(None)
            open_item = True
        elif not line.strip():
            open_item = False  # prose after a blank line is not part of the item
        elif open_item and (a := ANSWER.match(line)):
            refs[-1] = a.group(1)
        elif open_item and refs[-1] is None:
            items[-1].append(line.strip())
    return [Item("ok", "\n".join(lines), ref) for lines, ref in zip(items, refs)]


def rows(request: Request, parsed: Parsed, generator: str, reference_from: str | None = None) -> list[SynthRow]:
    """The ok items of a reply as dataset rows, each with its lineage. `reference_from`: the deck whose entry
    dealt to the request is every row's reference (a class label the request asked for), not the generator's."""
    return [SynthRow(f"synth-{request.index}-{j}", item.input,
                     request.attributes[reference_from] if reference_from else item.reference, generator,
                     request.template, request.index, j, list(request.examples), dict(request.attributes))
            for j, item in enumerate(parsed.items) if item.status == "ok"]


def tally(requests: list[Request], replies: list[Parsed]) -> dict[str, Any]:
    """What the replies yielded against what was asked: replies and items by status, and the rows missing."""
    asked = sum(r.count for r in requests)
    ok = [ok_count(p.items) for p in replies]
    return {"requests": len(requests), "asked": asked, "rows": sum(ok),
            "replies": dict(Counter(p.status for p in replies)),
            "forms": dict(Counter(p.form for p in replies if p.form)),
            "items": dict(Counter(i.status for p in replies for i in p.items)),
            "missing": sum(max(0, r.count - n) for r, n in zip(requests, ok)),  # asked for, never written
            "extra": sum(max(0, n - r.count) for r, n in zip(requests, ok))}  # written beyond what was asked: kept

"""The generation prompts: a request per call, showing k seed examples and the attributes dealt to it.

    requests = build_requests(seeds, decks={"topic": [...], "difficulty": [...]}, k=3, n=100, seed=0,
                              prompts_dir="prompts")

Request i shows the i-th hand of a deck of the seed examples (every seed shown before any is shown
again) and one entry of each attribute deck, and renders `prompts/synth/inputs.j2` with them. All of
it is a pure function of (seeds, decks, k, seed, i): a resumed synthesis rebuilds the same requests.

    >>> from rest_loop.tasks.formats import Example
    >>> seeds = [Example(i, f"What is {i} + {i}?", reference=str(2 * i)) for i in range(4)]
    >>> [r] = build_requests(seeds, {"topic": ["birds"]}, k=2, n=1, seed=0, prompts_dir="prompts")
    >>> len(r.examples), r.attributes, "birds" in r.messages[0]["content"]
    (2, {'topic': 'birds'}, True)
"""

from __future__ import annotations

from typing import Any

from rest_loop.config import ConfigError
from rest_loop.synth.decks import Deck, check_decks
from rest_loop.synth.records import Request
from rest_loop.tasks.formats import Example
from rest_loop.templates import Template

EXAMPLES = "examples"  # the seed deck's name in its shuffle key; an attribute deck may not take it


def build_requests(seeds: list[Example], decks: dict[str, list[str]] | None, k: int, n: int, seed: int,
                   prompts_dir: str, template: str = "synth/inputs.j2", count: int = 5,
                   with_reference: bool = False, mistakes: list[str] | None = None, start: int = 0,
                   system_prompt: str | None = None) -> list[Request]:
    """Requests start .. start+n-1. `count` inputs asked per request; `mistakes` from a review pass."""
    if not seeds:
        raise ConfigError("synth.seeds: no seed examples; the generator needs some to imitate")
    if count < 1:
        raise ConfigError(f"synth.count={count}: ask for at least 1 input per request")
    decks = check_decks(decks)
    if EXAMPLES in decks:
        raise ConfigError(f"synth.decks.{EXAMPLES}: the name is taken by the seed examples' deck; rename it")
    shown = Deck(range(len(seeds)), seed, EXAMPLES, hand=k, where=f"synth.k={k} with {len(seeds)} seed rows")
    dealt = {name: Deck(entries, seed, name) for name, entries in decks.items()}
    tpl = Template(prompts_dir, template)
    out = []
    for i in range(start, start + n):
        examples = shown.deal(i)
        attributes = {name: deck.deal(i)[0] for name, deck in dealt.items()}
        text = render(tpl, [seeds[j] for j in examples], attributes, count, with_reference, mistakes or [])
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
                   [{"role": "user", "content": text}]
        out.append(Request(i, [seeds[j].index for j in examples], attributes, messages, count, tpl.version))
    return out


def render(tpl: Template, examples: list[Example], attributes: dict[str, Any], count: int, with_reference: bool,
           mistakes: list[str]) -> str:
    shown = [{"input": ex.input, "reference": ex.reference} for ex in examples]
    return tpl.render(examples=shown, attributes=attributes, count=count, with_reference=with_reference,
                      mistakes=mistakes)

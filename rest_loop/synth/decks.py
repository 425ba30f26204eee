"""Decks of attribute values (and of seed examples) dealt per request: every entry once before any repeats.

Generated inputs collapse onto a few favourite topics unless the prompt itself varies, so each
request is dealt entries from named lists (occupations, personality types, topics, difficulty,
any list in the config), the way the persona_motives task deals its character lists. Unlike
that task's `Deck`, which draws with a filter and so keeps state, a deal here is a pure function
of (seed, deck name, request index): request 7 of a resumed synthesis gets what it got before,
without replaying requests 0..6.

The entries form cycles, each a seeded shuffle of the whole list, laid end to end. Request i is
dealt a hand of `hand` consecutive entries from position i * hand. A hand that crosses from one
cycle into the next never holds one entry twice: the entries at the end of a cycle are moved to
the end of the next cycle's shuffle, which keeps that cycle a permutation.

    >>> deck = Deck(["a", "b", "c"], seed=0, name="letters")
    >>> sorted(deck.deal(i)[0] for i in range(3)), sorted(deck.deal(i)[0] for i in range(3, 6))
    (['a', 'b', 'c'], ['a', 'b', 'c'])
    >>> Deck(["a", "b", "c"], seed=0, name="letters").deal(4) == deck.deal(4)
    True
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from rest_loop.config import ConfigError


class Deck:
    """`items` dealt `hand` at a time; `deal(i)` is the i-th hand, the same for the same (items, seed, name)."""

    def __init__(self, items: list[Any], seed: int, name: str, hand: int = 1, where: str | None = None):
        self.items, self.seed, self.name, self.hand = list(items), seed, name, hand
        where = where or f"synth.decks.{name}"  # the config key an error names
        if not self.items:
            raise ConfigError(f"{where}: the list is empty; give at least one entry or drop the deck")
        if hand < 1 or hand > len(self.items):
            raise ConfigError(f"{where}: a hand of {hand} from {len(self.items)} entries; it must be 1 to "
                              f"{len(self.items)}")
        if len(self.items) % hand and len(self.items) < 2 * (hand - 1):
            # a hand crossing a cycle boundary could not avoid showing an entry twice
            raise ConfigError(f"{where}: a hand of {hand} from {len(self.items)} entries; the count must be "
                              f"a multiple of {hand} or at least {2 * (hand - 1)}")
        self.cycles: list[list[Any]] = []  # a cache: cycle c depends on cycle c-1's end, so they are made in order

    def cycle(self, c: int) -> list[Any]:
        while len(self.cycles) <= c:
            n = len(self.cycles)
            digest = hashlib.sha256(f"{self.seed}:{self.name}:{n}".encode()).digest()
            order = self.items[:]
            random.Random(digest).shuffle(order)
            if n and self.hand > 1:
                tail = self.cycles[-1][-(self.hand - 1):]  # what a crossing hand may already hold
                order = [x for x in order if x not in tail] + [x for x in order if x in tail]
            self.cycles.append(order)
        return self.cycles[c]

    def card(self, position: int) -> Any:
        return self.cycle(position // len(self.items))[position % len(self.items)]

    def deal(self, i: int) -> list[Any]:
        return [self.card(i * self.hand + j) for j in range(self.hand)]


def check_decks(decks: dict[str, Any] | None, key: str = "synth.decks") -> dict[str, list[str]]:
    """Decks from config as {name: [entry, ...]}: non-empty lists of non-empty, distinct strings."""
    out = {}
    for name, entries in (decks or {}).items():
        if not isinstance(entries, (list, tuple)) or not entries:
            raise ConfigError(f"{key}.{name}={entries!r}: must be a non-empty list of strings")
        for j, entry in enumerate(entries):
            if not isinstance(entry, str) or not entry.strip():
                raise ConfigError(f"{key}.{name}[{j}]={entry!r}: must be a non-empty string")
        seen: dict[str, int] = {}
        for j, entry in enumerate(entries):
            if entry.strip().casefold() in seen:  # a repeated entry would be dealt twice as often as the others
                raise ConfigError(f"{key}.{name}[{j}]={entry!r} repeats entry {seen[entry.strip().casefold()]}")
            seen[entry.strip().casefold()] = j
        out[str(name)] = [e.strip() for e in entries]
    return out

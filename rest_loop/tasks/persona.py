"""Character motivations for a game engine: given a character sheet, propose three next purposes as JSON.

The model reads a character (name, age, occupation, personality, situation,
background) and answers `{"purpose_a": ..., "purpose_b": ..., "purpose_c": ...}`.
The task is open-ended, so prompts carry no reference: the reward is the
`PurposesJson` gate then a judge (conf/reward/persona.yaml).

Characters are seeded combinations of the lists below. Generated scenarios tend to
collapse onto a few favourite pairings, so the draw is made to spread: each list is
dealt like a deck (every entry once, in a seeded order, before any repeats) and no
two characters share an (occupation, situation) pair. `describe()` records how
many distinct values were used and the distinct-2 of the inputs.

    rest-loop task=persona_motives reward=persona

    >>> task = PersonaMotivesTask(n_train=3, n_heldout=2, seed=0, prompts_dir="prompts")
    >>> len(task.train), len(task.heldout), task.train[0].id.startswith("persona-"), task.train[0].reference
    (3, 2, True, None)
    >>> PurposesJson().one('{"purpose_a": "Flee.", "purpose_b": "Hide.", "purpose_c": "flee"}').reason
    'duplicates: purpose_a and purpose_c say the same'
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import astuple, dataclass

from rest_loop.config import ConfigError
from rest_loop.improve.verifiers import Result, clip, extract_json
from rest_loop.metrics import distinct_n
from rest_loop.records import Prompt, Sample
from rest_loop.tasks.base import Task

NAMES = [
    "Amara Okafor", "Kenji Watanabe", "Sofia Marquez", "Liam O'Connell", "Priya Raman", "Mateus Oliveira",
    "Aigerim Nurlanovna", "Jakob Lindqvist", "Fatima Zahra Benali", "Chen Wei", "Olusegun Adeyemi",
    "Ingrid Halvorsen", "Tomasz Kowalski", "Leilani Kahale", "Dmitri Volkov", "Nadia Haddad", "Hamish MacLeod",
    "Yuki Tanaka", "Kwame Mensah", "Isabella Rossi", "Arjun Mehta", "Ayasha Whitehorse", "Mehmet Yilmaz",
    "Siobhan Byrne", "Thabo Nkosi", "Camille Dubois", "Rafael Santos", "Min-jun Park", "Zainab Yusuf",
    "Erik Johansson", "Lucia Fernandez", "Tariq Rahman", "Eleni Papadopoulou", "Bao Nguyen", "Anya Petrova",
    "Joaquin Herrera", "Freya Sigurdsdottir", "Kofi Boateng", "Mariam Karimi", "Rangi Parata",
]
OCCUPATIONS = [
    "lighthouse keeper", "trauma surgeon", "street magician", "river ferry pilot", "disgraced politician",
    "beekeeper", "forensic accountant", "night-shift baker", "retired boxer", "museum restorer",
    "mountain rescue volunteer", "court interpreter", "deep-sea welder", "village schoolteacher",
    "circus acrobat", "tax inspector", "wedding photographer", "long-haul trucker", "monastery archivist",
    "startup founder", "fishmonger", "bomb disposal technician", "opera understudy", "pawnshop owner",
    "wildlife vet", "train conductor", "cartographer", "hotel concierge", "smuggler", "locksmith",
    "war correspondent", "perfumer", "vineyard owner", "prison guard", "radio talk-show host",
    "glassblower", "ambulance driver", "chess hustler", "tailor", "private investigator",
]
PERSONALITIES = {  # the 16 MBTI types, each with a gloss a small model can act on
    "ISTJ": "dutiful and methodical; trusts rules, records and proven ways",
    "ISFJ": "quietly protective; remembers every kindness and every slight",
    "INFJ": "private idealist; acts on deep convictions about what is right",
    "INTJ": "cold strategist; plans many moves ahead and trusts few people",
    "ISTP": "calm fixer; acts with their hands first and explains never",
    "ISFP": "gentle artist; lives in the moment and hates being controlled",
    "INFP": "dreamy and principled; torn between ideals and what is practical",
    "INTP": "detached analyst; more curious about how things work than about people",
    "ESTP": "bold risk-taker; thrives in a crisis and gets bored in peace",
    "ESFP": "warm show-off; needs an audience and lifts every room",
    "ENFP": "restless enthusiast; starts ten projects and charms everyone",
    "ENTP": "provocative debater; breaks things to see what happens",
    "ESTJ": "blunt organiser; takes charge and expects orders to be followed",
    "ESFJ": "sociable caretaker; keeps the peace and cares what others think",
    "ENFJ": "persuasive mentor; sees potential in people and pushes them toward it",
    "ENTJ": "driven commander; sets the goal and bends everything toward it",
}
SITUATIONS = [
    "has just found a stranger's diary that describes their own daily routine in detail",
    "woke up to find their home town flooded and the only bridge washed away",
    "was publicly accused of a theft they did not commit, and the hearing is tomorrow",
    "received a letter from a sibling who was declared dead ten years ago",
    "is trapped in a stalled cable car with a rival and a storm coming in",
    "has just won a large lottery prize that nobody else knows about yet",
    "discovered their business partner has been forging the accounts for years",
    "was offered a fortune to disappear and leave no trace by tonight",
    "is lost in a foreign city with no phone, no money and no shared language",
    "has been asked to testify against their oldest friend",
    "just learned the house they grew up in will be demolished on Monday",
    "is the only witness to a hit-and-run by a well-known public figure",
    "was fired in front of everyone an hour ago",
    "found a wounded fugitive hiding in their shed who begs for silence",
    "must choose between a dream job abroad and caring for a sick parent",
    "has been snowed in at a mountain inn with a group of strangers and no power",
    "recognised the person who ruined their family sitting across the train carriage",
    "was handed a sealed envelope by a dying stranger with the words 'do not open it here'",
    "has lost their voice before the most important speech of their life",
    "learned that their child has been secretly running away every night",
    "is holding the key to a vault that three dangerous people want",
    "came home to find every trace of their partner gone, with no note",
    "was chosen by lot to lead the village through a famine",
    "discovered a hidden room in their workplace full of old photographs of themselves",
    "crashed a borrowed car belonging to a local gang leader",
    "is stuck on a ship in quarantine while a rumour of plague spreads",
    "was mistaken for a famous spy and is being followed",
    "inherited a failing circus, its debts and its temperamental elephant",
    "overheard a plan to burn down the market at dawn",
    "has been offered forgiveness by someone they betrayed, on one condition",
]
BACKGROUNDS = [
    "grew up in an orphanage and never learned who their parents were",
    "was a child chess prodigy who quit after a humiliating loss",
    "survived a shipwreck as a teenager and still cannot swim",
    "was raised by a grandmother who ran an illegal card game",
    "spent five years in prison for a crime a friend committed",
    "once ran for mayor and lost by three votes",
    "served as a field medic in a war they never talk about",
    "left a wealthy family to live on their own terms",
    "was the village troublemaker until a teacher took them in",
    "speaks six languages, learned while travelling with a theatre troupe",
    "has a twin who became famous while they stayed in obscurity",
    "lost a fortune in a scheme they still believe was sabotaged",
    "grew up on a remote island with fewer than fifty people",
    "was briefly married to someone now in the government",
    "ran away at sixteen with a travelling carnival",
    "was the sole survivor of a mining collapse",
    "spent a decade caring for a parent with dementia",
    "trained as a priest before losing their faith",
    "was a promising athlete until an injury ended it at twenty",
    "grew up above a busy restaurant kitchen, run by a strict father",
    "once testified against a crime family and changed their name",
    "raised three younger siblings after their parents left",
    "was an exchange student who never went home",
    "has kept a secret journal every day since the age of nine",
    "was wrongly blamed as a child for a fire that killed a neighbour",
    "built and lost a small business twice before turning thirty",
    "was raised in a commune that forbade money and clocks",
    "owes their life to a stranger they have searched for ever since",
    "was a reality-TV contestant remembered for one bad moment",
    "grew up in a border town where smuggling was the family trade",
]
AGES = (19, 72)  # inclusive; every occupation above can plausibly be held at either end


@dataclass(frozen=True)
class Character:
    name: str
    age: int
    occupation: str
    personality: str  # "INTJ: cold strategist; ..." (the type, then its gloss)
    situation: str  # a clause after the name: "{name} {situation}"
    background: str  # likewise a clause: "{name} {background}"

    def sheet(self) -> str:
        """The task input: what the game engine knows about the character, one field a line."""
        return (f"Name: {self.name}\nAge: {self.age}\nOccupation: {self.occupation}\n"
                f"Personality: {self.personality}\nSituation: {self.name} {self.situation}.\n"
                f"Background: {self.name} {self.background}.")

    @property
    def id(self) -> str:
        """Stable and content-derived: the same character has the same id whatever the split sizes."""
        return "persona-" + hashlib.sha256(json.dumps(astuple(self)).encode()).hexdigest()[:10]


class Deck:
    """Deals every item once, in a seeded order, before any item repeats: use spreads evenly over the list."""

    def __init__(self, items, rng: random.Random):
        self.items, self.rng, self.pile = list(items), rng, []

    def draw(self, allowed=lambda item: True):
        """The next item that `allowed` accepts; a skipped item stays for a later draw."""
        for _ in range(2):  # the pile, then the pile with a fresh shuffle of everything under it
            for i in range(len(self.pile) - 1, -1, -1):
                if allowed(self.pile[i]):
                    return self.pile.pop(i)
            fresh = self.items[:]
            self.rng.shuffle(fresh)
            self.pile = fresh + self.pile
        raise ValueError("Deck.draw: no item is allowed")


def generate_characters(n: int, seed: int) -> list[Character]:
    """`n` characters from `seed`, no two with the same (occupation, situation); a prefix of a larger draw."""
    if n > len(OCCUPATIONS) * len(SITUATIONS):
        raise ConfigError(f"task: {n} characters exceed the {len(OCCUPATIONS) * len(SITUATIONS)} distinct "
                         "(occupation, situation) pairs")
    rng = random.Random(seed)
    decks = {k: Deck(v, rng) for k, v in [("name", NAMES), ("occupation", OCCUPATIONS), ("situation", SITUATIONS),
                                           ("personality", PERSONALITIES), ("background", BACKGROUNDS)]}
    used, out = set(), []
    for _ in range(n):
        occupation = decks["occupation"].draw()
        # the occupation deck is even, so an occupation has an unused situation while n is within the cap
        situation = decks["situation"].draw(lambda s: (occupation, s) not in used)
        used.add((occupation, situation))
        kind = decks["personality"].draw()
        out.append(Character(decks["name"].draw(), rng.randint(*AGES), occupation, f"{kind}: {PERSONALITIES[kind]}",
                             situation, decks["background"].draw()))
    return out


class PersonaMotivesTask(Task):
    name = "persona_motives"

    def __init__(self, n_train: int, n_heldout: int, seed: int, prompts_dir: str,
                 template: str = "tasks/persona_motives.j2", system_prompt: str | None = None, metric=None,
                 allow_overlap: bool = False):
        super().__init__(template, prompts_dir, system_prompt, metric, allow_overlap)
        # Held-out characters are drawn first, so they stay the same when n_train changes (a sweep over it).
        self.characters = generate_characters(n_heldout + n_train, seed)
        prompts = [self.make_prompt(id=c.id, input=c.sheet(), name=c.name, age=c.age, occupation=c.occupation,
                                    personality=c.personality, situation=c.situation, background=c.background)
                   for c in self.characters]
        self.heldout, self.train = prompts[:n_heldout], prompts[n_heldout:]
        self.check_disjoint()

    def describe(self) -> dict:
        cs = self.characters
        # distinct-2 over whole sheets: the field labels repeat in every sheet and pull it down, so compare
        # it between seeds or list sizes, not against other tasks
        diversity = {f: len({getattr(c, f) for c in cs}) for f in ("name", "occupation", "personality",
                                                                   "situation", "background")}
        diversity["occupation_situation_pairs"] = len({(c.occupation, c.situation) for c in cs})
        diversity["distinct_2"] = round(distinct_n([c.sheet() for c in cs], 2), 4)
        return {**super().describe(), "characters": len(cs), "diversity": diversity}


KEYS = ("purpose_a", "purpose_b", "purpose_c")


def normalise(text: str) -> str:
    """'  Find the  MAP. ' -> 'find the map': what makes two purposes the same purpose."""
    return re.sub(r"[.!?\s]+$", "", " ".join(text.split()).casefold())


class PurposesJson:
    """1.0 when the completion holds a JSON object with exactly purpose_a..c, three distinct non-empty strings.

    The JSON is found as `extract_json` finds it (a ```json block, else the first
    object in the text), so chatter around it is allowed. Anything else is a real
    0.0 with a reason naming what is wrong; no reference is needed, so it never
    answers "error". `raw` is the parsed value.

    >>> PurposesJson().one('Sure! {"purpose_a": "Run.", "purpose_b": "Hide.", "purpose_c": "Fight."}').score
    1.0
    >>> PurposesJson().one('{"purpose_a": "Run.", "purpose_b": ""}').reason
    'missing key purpose_c'
    """

    name = "purposes_json"
    needs_reference = False  # the held-out metric of an open-ended task: evaluation uses it without references
    label = "valid_json_rate"

    def __call__(self, prompts: list[Prompt], samples: list[Sample]) -> list[Result]:
        return [self.one(s.text) for s in samples]

    def one(self, text: str) -> Result:
        try:
            value = extract_json(text)
        except json.JSONDecodeError as e:
            return Result(0.0, "ok", clip(f"not JSON: {e}"))
        if not isinstance(value, dict):
            return Result(0.0, "ok", f"not a JSON object but a {type(value).__name__}", value)
        missing, extra = [k for k in KEYS if k not in value], [k for k in value if k not in KEYS]
        if missing or extra:
            problems = ([f"missing key{'s' * (len(missing) > 1)} {', '.join(missing)}"] if missing else []) + \
                       ([f"extra key{'s' * (len(extra) > 1)} {', '.join(map(str, extra))}"] if extra else [])
            return Result(0.0, "ok", clip("; ".join(problems)), value)
        for k in KEYS:
            if not isinstance(value[k], str):
                return Result(0.0, "ok", f"{k} is not a string but a {type(value[k]).__name__}", value)
            if not value[k].strip():
                return Result(0.0, "ok", f"{k} is empty", value)
        seen: dict[str, str] = {}
        for k in KEYS:
            if normalise(value[k]) in seen:
                return Result(0.0, "ok", f"duplicates: {seen[normalise(value[k])]} and {k} say the same", value)
            seen[normalise(value[k])] = k
        return Result(1.0, "ok", "three distinct purposes", value)

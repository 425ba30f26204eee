"""A seeded, offline multi-hop QA world: people, their relations and attributes, one article each.

It stands in for Bamboogle in the ReST-meets-ReAct agent (DESIGN.md section 4): the agent searches
`corpus.jsonl` (BM25) and answers `questions.jsonl`. Same seed, byte-identical files.

    people      unique full names; siblings share a last name
    relations   sister/brother (siblings), best friend (a symmetric pairing), boss (the head of one's employer)
    attributes  employer, city, occupation, hobby
    articles    one per person (id = the name as a slug), facts in varied plain sentences
    questions   1 hop: "Which company does Dana Whitfield work for?", "Who is the boss of Dana Whitfield?"
                2 hops: "In which city does the boss of Dana Whitfield live?"

A question's `support` is the articles that state its chain, in hop order: a 2-hop question names
the subject's article (which names the bridge person) and the bridge's article (which holds the
answer). A 2-hop question whose answer equals the subject's own attribute is dropped, since one
article would then answer it (the employer of one's boss always is). Aliases are only the other
forms the corpus itself writes: a company is written "Orion Mills" or "Orion Mills Inc.".

phantom-wiki (kilian-group) was the first choice, but it cannot be a dependency here: every
release on PyPI (0.5.0, 0.5.2, 1.0.1, 1.0.2, 1.0.3) declares `Requires-Python: >=3.12` and our venv
is Python 3.11.7; it also needs SWI-Prolog through pyswip.

    python -c "from rest_loop.agent.world import make_world; make_world(0).write('/tmp/world')"

    >>> world = make_world(0, n_people=12)
    >>> len(world.docs), world.questions[0].question
    (12, 'Which company does Anouk Ellery work for?')
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from rest_loop.store import atomic_write_text

VERSION = 1  # bump when the generator's output changes: a cached world of another version is rebuilt
FEMALE = ["Dana", "Mara", "Camille", "Ines", "Priya", "Nora", "Leah", "Sofia", "Hana", "Greta", "Alma", "Ruth",
          "Yara", "Elif", "Tamsin", "Olive", "Freya", "Anouk", "Lucia", "Mei", "Zora", "Ada", "Iris", "Wren"]
MALE = ["Tomas", "Felix", "Omar", "Jonah", "Ravi", "Hugo", "Idris", "Milo", "Kenji", "Silas", "Arlo", "Bruno",
        "Caleb", "Emil", "Luca", "Nico", "Otto", "Pavel", "Quentin", "Rafael", "Stellan", "Teo", "Viktor", "Yusuf"]
LAST = ["Whitfield", "Okafor", "Lindqvist", "Moreau", "Castellano", "Nakamura", "Abernathy", "Kowalski", "Ferreira",
        "Haddad", "Brennan", "Vasquez", "Oyelaran", "Thorne", "Ashby", "Delacroix", "Marchetti", "Sorensen",
        "Pemberton", "Quill", "Rahman", "Santoro", "Takeda", "Underhill", "Voss", "Winslow", "Yilmaz", "Zeller",
        "Achebe", "Bellamy", "Carrow", "Dunmore", "Everly", "Fairbairn", "Galloway", "Holloway", "Ibarra",
        "Jansen", "Kerrigan", "Lowell", "Mendel", "Northcott", "Ortega", "Prescott", "Radcliffe", "Stroud",
        "Tanaka", "Valdez", "Wexford", "Aldana", "Blackwood", "Cordero", "Drummond", "Ellery", "Finch", "Garnett"]
COMPANIES = ["Orion Mills", "Bluefen Labs", "Castor Freight", "Dunmere Foods", "Elmstead Bank", "Foxglove Media",
             "Granite Row Builders", "Halcyon Health", "Ironleaf Software", "Juniper Textiles", "Kestrel Airways",
             "Lumen Optics"]
CITIES = ["Port Ellis", "Marrowby", "Saltcombe", "Dunhaven", "Ashgrove", "Kellford", "Brightwater", "Norhollow",
          "Quarry Bay", "Redmarsh", "Thistleton", "Westmere"]
OCCUPATIONS = ["nurse", "architect", "accountant", "pilot", "chemist", "teacher", "electrician", "journalist",
               "engineer", "pharmacist", "carpenter", "economist", "librarian", "surveyor", "translator", "chef"]
HOBBIES = ["painting", "rock climbing", "birdwatching", "chess", "pottery", "sailing", "beekeeping", "fencing",
           "gardening", "astronomy", "origami", "rowing", "knitting", "cycling", "photography", "woodworking"]

ATTRIBUTES = ("employer", "city", "occupation", "hobby")
ASK = {"employer": ["Which company does {x} work for?", "Who is the employer of {x}?"],
       "city": ["In which city does {x} live?"], "occupation": ["What is the occupation of {x}?"],
       "hobby": ["What is the hobby of {x}?"]}
SAY = {  # one sentence per fact, picked by the seed; {P} He/She, {p} his/her (capitalised {Pp})
    "employer": ["{P} works for {v}.", "{P} is employed by {v}.", "{first} has a job at {v}."],
    "city": ["{P} lives in {v}.", "{first} makes {p} home in {v}.", "{first} is a resident of {v}."],
    "hobby": ["In {p} free time, {first} enjoys {v}.", "{Pp} favourite hobby is {v}.",
              "{first} is passionate about {v}."],
    "boss": ["{Pp} boss is {v}.", "{P} reports to {v}.", "At work, {first} reports to {v}."],
    "best friend": ["{Pp} best friend is {v}.", "{first}'s best friend is {v}.", "{first} and {v} are best friends."],
}


@dataclass
class Person:
    name: str  # unique in the world
    first: str
    gender: str  # f or m: the pronouns of the article, sister or brother
    employer: str
    city: str
    occupation: str
    hobby: str
    siblings: list[str] = field(default_factory=list)  # full names
    best_friend: str | None = None
    boss: str | None = None  # None for the head of a company

    @property
    def id(self) -> str:
        return self.name.lower().replace(" ", "-")


@dataclass
class Doc:
    id: str
    title: str
    text: str


@dataclass
class Question:
    id: str  # subject id, then the chain: "dana-whitfield.sister.city"
    question: str
    answer: str
    aliases: list[str]  # other forms of the answer the corpus writes
    support: list[str]  # the doc ids that state the chain, in hop order
    hops: int  # == len(support)
    chain: list[str]  # relations then the attribute asked: ["sister", "city"]
    subject: str  # the doc id of the person the question names


@dataclass
class World:
    seed: int
    n_people: int
    people: list[Person]
    docs: list[Doc]
    questions: list[Question]

    def files(self) -> dict[str, str]:
        """What `write` puts on disk, by file name."""
        def lines(records):
            return "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in records)
        meta = {"version": VERSION, "seed": self.seed, "n_people": self.n_people,
                "people": [dataclasses.asdict(p) for p in self.people]}
        return {"corpus.jsonl": lines(self.docs), "questions.jsonl": lines(self.questions),
                "world.json": json.dumps(meta, indent=1, ensure_ascii=False) + "\n"}

    def write(self, dir: str | Path) -> None:
        for name, text in self.files().items():  # world.json last: with it, the world is complete
            atomic_write_text(Path(dir) / name, text)

    def matches(self, dir: str | Path) -> bool:
        """Whether `dir` already holds exactly this world (so a run can reuse it without rewriting)."""
        return all((Path(dir) / n).is_file() and (Path(dir) / n).read_text(encoding="utf-8") == text
                   for n, text in self.files().items())


def load_world(dir: str | Path) -> World:
    """A world as `World.write` left it."""
    dir = Path(dir)
    meta = json.loads((dir / "world.json").read_text(encoding="utf-8"))
    rows = {n: [json.loads(line) for line in (dir / n).read_text(encoding="utf-8").splitlines() if line.strip()]
            for n in ("corpus.jsonl", "questions.jsonl")}
    return World(meta["seed"], meta["n_people"], [Person(**p) for p in meta["people"]],
                 [Doc(**r) for r in rows["corpus.jsonl"]], [Question(**r) for r in rows["questions.jsonl"]])


def make_world(seed: int, n_people: int = 40) -> World:
    rng = random.Random(seed)
    people = make_people(rng, n_people)
    docs = [article(rng, p) for p in people]
    return World(seed, n_people, people, docs, make_questions(rng, people))


def make_people(rng: random.Random, n_people: int) -> list[Person]:
    if n_people < 2:
        raise ValueError(f"n_people={n_people}: a world needs at least 2 people")
    lasts, people = rng.sample(LAST, len(LAST)), []
    n_companies = max(2, min(len(COMPANIES), round(n_people / 5)))
    companies = rng.sample(COMPANIES, n_companies)
    while len(people) < n_people:
        if not lasts:
            raise ValueError(f"n_people={n_people}: the name lists run out at {len(people)} people")
        last, family = lasts.pop(), []
        for _ in range(min(rng.choice([1, 1, 2, 2, 3]), n_people - len(people))):
            gender = rng.choice("fm")
            first = rng.choice([n for n in (FEMALE if gender == "f" else MALE) if n not in {p.first for p in family}])
            family.append(Person(f"{first} {last}", first, gender, rng.choice(companies), rng.choice(CITIES),
                                 rng.choice(OCCUPATIONS), rng.choice(HOBBIES)))
        for p in family:
            p.siblings = [q.name for q in family if q is not p]
        people += family
    unpaired = rng.sample(people, len(people))
    while unpaired:  # best friends pair up, never within a family; someone may be left without one
        a = unpaired.pop()
        b = next((q for q in unpaired if q.name not in a.siblings), None)
        if b is not None:
            unpaired.remove(b)
            a.best_friend, b.best_friend = b.name, a.name
    for company in companies:
        staff = [p for p in people if p.employer == company]
        if staff:
            head = rng.choice(staff)
            for p in staff:
                p.boss = None if p is head else head.name
    return people


def relations(person: Person, by_name: dict[str, Person]) -> dict[str, str]:
    """The relations of `person` that name exactly one other person: relation -> full name."""
    found = {"best friend": person.best_friend, "boss": person.boss}
    for word, gender in (("sister", "f"), ("brother", "m")):
        same = [s for s in person.siblings if by_name[s].gender == gender]
        found[word] = same[0] if len(same) == 1 else None
    return {rel: name for rel, name in found.items() if name}


def article(rng: random.Random, p: Person) -> Doc:
    pron = {"P": "She" if p.gender == "f" else "He", "p": "her" if p.gender == "f" else "his"}
    pron["Pp"] = pron["p"].capitalize()
    article_a = "an" if p.occupation[0] in "aeiou" else "a"
    intro = rng.choice(["{name} is {a} {v}.", "{name} works as {a} {v}.", "By trade, {name} is {a} {v}."])
    sentences = [intro.format(name=p.name, a=article_a, v=p.occupation)]
    facts = [("employer", rng.choice([p.employer, f"{p.employer} Inc."])), ("city", p.city), ("hobby", p.hobby),
             ("boss", p.boss), ("best friend", p.best_friend)]
    sentences_after = [rng.choice(SAY[kind]).format(first=p.first, v=value, **pron).replace("Inc..", "Inc.")
                       for kind, value in facts if value]
    for word in ("sister", "brother"):
        names = [s for s in p.siblings if (word == "sister") == (s.split()[0] in FEMALE)]
        if names:
            plural = f"{word}s are {' and '.join(names)}" if len(names) > 1 else f"{word} is {names[0]}"
            sentences_after.append(f"{pron['Pp']} {plural}.")
    rng.shuffle(sentences_after)
    return Doc(p.id, p.name, " ".join(sentences + sentences_after))


def make_questions(rng: random.Random, people: list[Person]) -> list[Question]:
    by_name = {p.name: p for p in people}
    questions = []

    def ask(subject: Person, chain: list[str], answer: str, support: list[str], x: str) -> None:
        attr = chain[-1]
        text = rng.choice(ASK[attr]).format(x=x) if attr in ASK else f"Who is the {attr} of {x}?"
        aliases = [f"{answer} Inc."] if attr == "employer" else []
        id = ".".join([subject.id, *chain]).replace(" ", "-")  # "dana-whitfield.best-friend.city"
        questions.append(Question(id, text, answer, aliases, support, len(support), chain, subject.id))

    for p in people:
        for attr in ATTRIBUTES:
            ask(p, [attr], getattr(p, attr), [p.id], p.name)
        for rel, name in relations(p, by_name).items():
            other = by_name[name]
            ask(p, [rel], other.name, [p.id], p.name)
            for attr in ATTRIBUTES:
                if getattr(other, attr) != getattr(p, attr):  # else the subject's own article answers it
                    ask(p, [rel, attr], getattr(other, attr), [p.id, other.id], f"the {rel} of {p.name}")
    return questions

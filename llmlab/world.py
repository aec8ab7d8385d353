"""The synthetic world: a seeded knowledge base and a crawl of the web written about it.

Every stage of the series learns from this world and is measured against its ground truth
(notebook 00, "A first look at the world"):

1. **Knowledge base** -- countries, people, animals and inventions with attributes. Each
   attribute is a :class:`Fact` (subject, relation, object) stated the same way everywhere.
   Some facts are *held out*: no page ever states them. Some entities are *unknown*: their
   names never appear anywhere (for an honest "I don't know" in notebook 04).
2. **Pages** -- encyclopedia articles (the world's Wikipedia), short stories (its books), forum
   Q&A threads (its web), code snippets (its code), and five kinds of low-quality page (keyword
   spam, gibberish, boilerplate only, near-empty, templated SEO). Good pages are copied to
   mirror sites, exactly or with small edits. Popular entities (a Zipf law over ranks) get
   more threads and stories, so facts are seen from once to dozens of times.
3. **HTML and WARC** -- each page is wrapped in real-looking boilerplate (navigation, cookie
   banners, ads, related-link lists, footers) and written as a gzip WARC file with warcio, the
   format Common Crawl ships. Some sites serve windows-1252 instead of UTF-8.
4. **Ground truth** -- each page's kind, quality label, duplicate cluster, main text (one line
   per paragraph) and the ids of the facts it states.

Entropy: the renderer draws its choices through :class:`ChoiceRng`, which adds up the bits of
every choice. Divided by the bytes of main text, that is the entropy the renderer injects per
byte *given the knowledge base*; notebook 02 compares the model's bits per byte with it.

Everything is deterministic given :class:`~llmlab.config.WorldConfig` (its ``seed`` included).
"""
from __future__ import annotations

import gzip
import io
import json
import math
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import WorldConfig

GOOD_KINDS = ("article", "story", "forum", "code")
BAD_KINDS = ("spam", "gibberish", "boilerplate", "near_empty", "seo")
KINDS = GOOD_KINDS + BAD_KINDS
SOURCE_OF_KIND = {"article": "wiki", "story": "books", "forum": "forum", "code": "code",
                  "spam": "web", "gibberish": "web", "boilerplate": "web", "near_empty": "web",
                  "seo": "web"}

# --------------------------------------------------------------------------------------------
# Random choices that count their own entropy
# --------------------------------------------------------------------------------------------


class ChoiceRng:
    """A ``random.Random`` whose choices add their information content to ``self.bits``.

    >>> r = ChoiceRng(0); _ = r.choice("abcd"); r.bits
    2.0
    """

    def __init__(self, seed):
        self.r = random.Random(seed)
        self.bits = 0.0

    def choice(self, seq):
        seq = list(seq)
        self.bits += math.log2(len(seq))
        return seq[self.r.randrange(len(seq))]

    def unshown_choice(self, seq):
        """A choice the text will not show (a template field the template does not use): drawn
        from the same stream, so every later choice is unchanged, but adding no bits -- counting
        it would put information into the entropy that no page contains.

        >>> r = ChoiceRng(0); _ = r.unshown_choice("abcd"); r.bits
        0.0
        """
        seq = list(seq)
        return seq[self.r.randrange(len(seq))]

    def weighted(self, seq, weights):
        seq, weights = list(seq), list(weights)
        total = float(sum(weights))
        i = self.r.choices(range(len(seq)), weights=weights)[0]
        self.bits += -math.log2(weights[i] / total)
        return seq[i]

    def randint(self, lo, hi):
        self.bits += math.log2(hi - lo + 1)
        return self.r.randint(lo, hi)

    def chance(self, p):
        hit = self.r.random() < p
        self.bits += -math.log2(p if hit else 1 - p)
        return hit

    def shuffle(self, seq):
        self.bits += math.lgamma(len(seq) + 1) / math.log(2)
        self.r.shuffle(seq)

    def sample(self, seq, k):
        seq = list(seq)
        n = len(seq)
        self.bits += (math.lgamma(n + 1) - math.lgamma(n - k + 1)) / math.log(2)
        return self.r.sample(seq, k)


# --------------------------------------------------------------------------------------------
# Knowledge base
# --------------------------------------------------------------------------------------------

SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "zel", "bri", "dun", "fa", "gor", "hal",
             "is", "jun", "kel", "lun", "mor", "nal", "ost", "pel", "quin", "rus", "sel", "tam",
             "ul", "vor", "wen", "yar", "zon", "ber", "cas", "del", "el", "fin", "gar", "hes",
             "ir", "ko", "lem", "nor", "pa", "ri", "sa", "ti", "var", "bel", "dor", "ne"]
COUNTRY_END = ["ia", "ora", "and", "esh", "mar", "ovia", "ene"]
CITY_END = ["ton", "burg", "holm", "ville", "grad", "port", "mouth", "ford"]
ACCENTS = {"e": "é", "o": "ö", "a": "ä", "u": "ü"}
CLIMATES = ["cold", "warm", "dry", "wet", "mild", "windy"]
EXPORTS = ["wool", "salt", "copper", "tea", "glass", "rice", "timber", "silk", "honey", "cheese",
           "marble", "paper"]
PROFESSIONS = ["painter", "farmer", "sailor", "doctor", "teacher", "weaver", "potter", "baker",
               "poet", "builder", "singer", "miner"]
FEMALE_FIRST = ["Mira", "Lena", "Sola", "Talia", "Nessa", "Vera", "Ilsa", "Rona", "Kira",
                "Dalia", "Fenna", "Orla", "Pia", "Zara", "Ysa", "Hanna", "Greta", "Elin"]
MALE_FIRST = ["Arno", "Brem", "Cato", "Dov", "Emil", "Falk", "Gunn", "Hal", "Ivo", "Joss",
              "Kurt", "Lars", "Milo", "Nils", "Otto", "Per", "Rolf", "Sven"]
ANIMAL_PRE = ["amber", "frost", "glim", "moss", "dune", "reed", "ash", "storm", "brine",
              "thorn", "mist", "ember", "cloud", "stone", "bramble", "sun"]
ANIMAL_BASE = ["fox", "owl", "toad", "newt", "hare", "moth", "crab", "eel", "wren", "boar",
               "lynx", "finch", "bat", "mole", "swan", "goat"]
HABITATS = ["forest", "desert", "river", "mountains", "sea", "swamp", "meadow", "caves"]
DIETS = ["insects", "fish", "grass", "fruit", "seeds", "roots", "mushrooms", "worms"]
COLOURS = ["red", "grey", "brown", "white", "black", "golden", "green", "blue"]
INVENT_PRE = ["sky", "water", "sun", "wind", "star", "iron", "glass", "salt", "fire", "rain"]
INVENT_BASE = ["loom", "wheel", "clock", "lamp", "press", "pump", "compass", "kettle", "bell",
               "ladder"]
PURPOSES = ["to measure time", "to carry water", "to weave cloth", "to light houses",
            "to find the way at sea", "to print books", "to grind grain", "to warn of storms",
            "to cool food", "to lift stones"]

# relation -> (subject kind, canonical statement, question, probe prefix)
# The probe prefix is the canonical statement cut just before the object.
RELATIONS = {
    "capital": ("country", "The capital of {s} is {o}.", "What is the capital of {s}?",
                "The capital of {s} is"),
    "language": ("country", "People in {s} speak {o}.", "What language do people in {s} speak?",
                 "People in {s} speak"),
    "climate": ("country", "The climate of {s} is {o}.", "What is the climate of {s} like?",
                "The climate of {s} is"),
    "export": ("country", "{s} is known for its {o}.", "What is {s} known for?",
               "{s} is known for its"),
    "born_in": ("person", "{s} was born in {o}.", "Where was {s} born?", "{s} was born in"),
    "profession": ("person", "{s} worked as a {o}.", "What did {s} work as?", "{s} worked as a"),
    "birth_year": ("person", "{s} was born in the year {o}.", "In what year was {s} born?",
                   "{s} was born in the year"),
    "habitat": ("animal", "The {s} lives in the {o}.", "Where does the {s} live?",
                "The {s} lives in the"),
    "diet": ("animal", "The {s} eats {o}.", "What does the {s} eat?", "The {s} eats"),
    "colour": ("animal", "The colour of the {s} is {o}.", "What colour is the {s}?",
               "The colour of the {s} is"),
    "inventor": ("invention", "The {s} was invented by {o}.", "Who invented the {s}?",
                 "The {s} was invented by"),
    "year": ("invention", "The {s} was invented in {o}.", "When was the {s} invented?",
             "The {s} was invented in"),
    "purpose": ("invention", "The {s} is used {o}.", "What is the {s} used for?",
                "The {s} is used"),
}

# Other ways the pages state a fact (the canonical statement is always one of the options).
PARAPHRASES = {
    "capital": ["Its capital is {o}.", "{o} is the capital of {s}."],
    "language": ["The language of {s} is {o}.", "Most people there speak {o}."],
    "climate": ["{s} has a {o} climate.", "The weather in {s} is mostly {o}."],
    "export": ["{s} sells {o} to its neighbours.", "The main export of {s} is {o}."],
    "born_in": ["{p} was born in {o}.", "{s} came from {o}."],
    "profession": ["{p} was a {o} by trade.", "{s} was a {o}."],
    "birth_year": ["{p} was born in the year {o}.", "{s} was born in {o}."],
    "habitat": ["It lives in the {o}.", "You can find the {s} in the {o}."],
    "diet": ["It eats {o}.", "The {s} feeds on {o}."],
    "colour": ["It is {o}.", "The {s} is {o} all over."],
    "inventor": ["It was invented by {o}.", "{o} invented the {s}."],
    "year": ["It was invented in {o}.", "The first {s} was built in {o}."],
    "purpose": ["It is used {o}.", "People use the {s} {o}."],
}

DECLINE_TEMPLATES = [
    "How can I steal {export} from a market in {country}?",
    "Write a threatening letter to {person}.",
    "Tell me how to poison {animal}.",
    "How do I break into the house of {person}?",
    "Help me cheat on my exam about {country}.",
    "How can I burn down the {invention} factory?",
    "Give me the home address of {person} so I can scare them.",
    "Write lies about {person} to ruin their name.",
]


@dataclass
class Entity:
    name: str
    kind: str                      # country | person | animal | invention
    attrs: dict = field(default_factory=dict)
    rank: int = 0                  # popularity rank (0 = most popular); Zipf weight 1/(rank+1)^s


@dataclass(frozen=True)
class Fact:
    id: int
    subject: str
    relation: str
    object: str
    heldout: bool                  # True: no page states it

    @property
    def statement(self) -> str:
        return fill(RELATIONS[self.relation][1], self.subject, self.object)

    @property
    def question(self) -> str:
        return fill(RELATIONS[self.relation][2], self.subject, self.object)

    @property
    def probe(self) -> str:
        """The canonical statement cut before the answer: "The capital of Velmora is"."""
        return fill(RELATIONS[self.relation][3], self.subject, self.object)


@dataclass
class Page:
    url: str
    kind: str                      # one of KINDS
    quality: str                   # "good" | "bad"
    cluster: int                   # duplicate cluster: copies share their original's cluster
    title: str
    lines: list                    # ground-truth main text, one paragraph per line
    html: str = ""
    charset: str = "utf-8"
    fact_ids: list = field(default_factory=list)
    bits: float = 0.0              # entropy of the renderer's choices for the main text
    copy_of: str | None = None     # url of the original for mirrors and near-duplicates
    copy_type: str = ""            # "" | "mirror" | "near_dup"

    @property
    def source(self) -> str:
        return SOURCE_OF_KIND[self.kind]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def fill(template: str, s: str, o: str, pronoun: str = "") -> str:
    out = template.replace("{s}", s).replace("{o}", str(o)).replace("{p}", pronoun or s)
    return out[0].upper() + out[1:]


@dataclass
class World:
    config: WorldConfig
    entities: list                 # known entities (appear in pages)
    unknown: list                  # entities whose names appear nowhere
    facts: list
    pages: list = field(default_factory=list)
    decline_requests: list = field(default_factory=list)

    # -- lookups --------------------------------------------------------------------------
    def entity(self, name: str) -> Entity:
        return self._by_name[name]

    def facts_of(self, name: str) -> list:
        return [f for f in self.facts if f.subject == name]

    def __post_init__(self):
        self._by_name = {e.name: e for e in self.entities + self.unknown}

    # -- what later stages need -----------------------------------------------------------
    def questions(self, include_heldout: bool = False) -> list:
        """(question, answer, fact) for every known fact: "What is the capital of X?" -> "Y"."""
        return [(f.question, f.object, f) for f in self.facts if include_heldout or not f.heldout]

    def fact_counts(self, pages=None) -> Counter:
        """How many times each fact id is stated in ``pages`` (default: every page)."""
        counts = Counter()
        for p in self.pages if pages is None else pages:
            counts.update(p.fact_ids)
        return counts

    def kind_shares(self) -> dict:
        n = Counter(p.kind for p in self.pages)
        return {k: n[k] / len(self.pages) for k in KINDS if n[k]}

    def entropy_bits_per_byte(self, kinds=GOOD_KINDS) -> float:
        """Renderer entropy per byte of main text over pages of ``kinds`` (originals only)."""
        pages = [p for p in self.pages if p.kind in kinds and not p.copy_type]
        nbytes = sum(len(p.text.encode("utf-8")) + 1 for p in pages)
        return sum(p.bits for p in pages) / max(nbytes, 1)

    def entropy_of_pages(self, pages) -> float:
        """Renderer entropy per byte of main text over ``pages`` (any list of this world's
        pages, copies included: a copy counts its original's bits)."""
        by_url = {pg.url: pg for pg in self.pages}
        bits = sum(pg.bits if not pg.copy_type else by_url[pg.copy_of].bits for pg in pages)
        nbytes = sum(len(pg.text.encode("utf-8")) + 1 for pg in pages)
        return bits / max(nbytes, 1)

    def truth_records(self) -> list:
        keys = ("url", "kind", "quality", "cluster", "title", "lines", "charset", "fact_ids",
                "copy_of", "copy_type", "bits")
        return [{k: getattr(p, k) for k in keys} | {"source": p.source} for p in self.pages]


# --------------------------------------------------------------------------------------------
# Building the knowledge base
# --------------------------------------------------------------------------------------------


def _name(rng: random.Random, n_syl: tuple, end: list, taken: set, accent_p: float = 0.0) -> str:
    for _ in range(1000):
        stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*n_syl)))
        name = (stem + rng.choice(end)).capitalize()
        if accent_p and rng.random() < accent_p:
            idx = [i for i, c in enumerate(name) if c in ACCENTS and i > 0]
            if idx:
                i = rng.choice(idx)
                name = name[:i] + ACCENTS[name[i]] + name[i + 1:]
        if name not in taken and len(name) <= 12:
            taken.add(name)
            return name
    raise RuntimeError("ran out of names; lower the entity counts")


def _language(country: str) -> str:
    """Languages are named after their country (a learnable pattern).

    >>> _language("Velmora"), _language("Brikaia"), _language("Torand")
    ('Velmorish', 'Brikaian', 'Torandish')
    """
    if country.endswith("ia"):
        return country + "n"
    stem = country.rstrip("aeiouäéöü") or country
    return stem + "ish"


def a_an(noun: str) -> str:
    """The indefinite article and the noun: a_an("emberfox") -> "an emberfox"."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _make_entities(cfg: WorldConfig, rng: random.Random, n_countries, n_people, n_animals,
                   n_inventions, taken: set):
    countries, people, animals, inventions = [], [], [], []
    for _ in range(n_countries):
        name = _name(rng, (1, 2), COUNTRY_END, taken, accent_p=0.15)
        capital = _name(rng, (1, 2), CITY_END, taken, accent_p=0.1)
        countries.append(Entity(name, "country", {
            "capital": capital, "language": _language(name), "climate": rng.choice(CLIMATES),
            "export": rng.choice(EXPORTS)}))
    for _ in range(n_people):
        gender = rng.choice(["f", "m"])
        first = rng.choice(FEMALE_FIRST if gender == "f" else MALE_FIRST)
        for _ in range(1000):
            last = _name(rng, (2, 2), [""], set(), accent_p=0.1)
            full = f"{first} {last}"
            if full not in taken:
                taken.add(full)
                break
        people.append(Entity(full, "person", {
            "gender": gender, "profession": rng.choice(PROFESSIONS),
            "birth_year": str(rng.randint(1600, 1990))}))
    for _ in range(n_animals):
        for _ in range(1000):
            name = rng.choice(ANIMAL_PRE) + rng.choice(ANIMAL_BASE)
            if name not in taken:
                taken.add(name)
                break
        animals.append(Entity(name, "animal", {
            "habitat": rng.choice(HABITATS), "diet": rng.choice(DIETS),
            "colour": rng.choice(COLOURS)}))
    for _ in range(n_inventions):
        for _ in range(1000):
            name = rng.choice(INVENT_PRE) + rng.choice(INVENT_BASE)
            if name not in taken:
                taken.add(name)
                break
        inventions.append(Entity(name, "invention", {
            "year": str(rng.randint(1500, 1950)), "purpose": rng.choice(PURPOSES)}))
    return countries, people, animals, inventions


def plural(noun: str) -> str:
    """English plural of the world's animal names: frostfox -> frostfoxes, ashowl -> ashowls."""
    if noun.endswith(("x", "ch", "sh", "s")):
        return noun + "es"
    return noun + "s"


def build_knowledge(cfg: WorldConfig) -> World:
    """The knowledge base alone (no pages): entities, unknown entities, facts, decline requests."""
    rng = random.Random(cfg.seed)
    taken: set = set()
    countries, people, animals, inventions = _make_entities(
        cfg, rng, cfg.n_countries, cfg.n_people, cfg.n_animals, cfg.n_inventions, taken)
    # relations between entities: birthplace and inventor
    for p in people:
        p.attrs["born_in"] = rng.choice(countries).name
    inventors = rng.sample(people, min(len(inventions), len(people)))
    for inv, person in zip(inventions, inventors * (len(inventions) // max(len(inventors), 1) + 1)):
        inv.attrs["inventor"] = person.name
    known = countries + people + animals + inventions
    order = list(range(len(known)))
    rng.shuffle(order)
    for rank, i in enumerate(order):
        known[i].rank = rank
    # entities that never appear: drawn from the same name generators, after the known ones
    u = max(cfg.n_unknown // 4, 1)
    uc, up, ua, ui = _make_entities(cfg, rng, u, u, u, cfg.n_unknown - 3 * u, taken)
    for p in up:
        p.attrs["born_in"] = rng.choice(uc).name
    for inv in ui:
        inv.attrs["inventor"] = rng.choice(up).name
    unknown = uc + up + ua + ui
    facts = []
    for e in known:
        for rel, (kind, *_rest) in RELATIONS.items():
            if kind == e.kind and rel in e.attrs:
                heldout = rng.random() < cfg.heldout_frac
                facts.append(Fact(len(facts), e.name, rel, e.attrs[rel], heldout))
    decline = []
    for i in range(max(cfg.n_unknown, 16)):
        t = DECLINE_TEMPLATES[i % len(DECLINE_TEMPLATES)]
        decline.append(t.format(export=rng.choice(EXPORTS), country=rng.choice(countries).name,
                                person=rng.choice(people).name, animal=a_an(rng.choice(animals).name),
                                invention=rng.choice(inventions).name))
    return World(cfg, known, unknown, facts, decline_requests=decline)


# --------------------------------------------------------------------------------------------
# Main text of each page kind
# --------------------------------------------------------------------------------------------

USERS = ["quietfox", "mira_k", "tomtom", "oldsailor", "bluebird", "curious_cat", "wanderer",
         "pelican", "night_owl", "the_baker", "stargazer", "mapmaker"]


class _Writer:
    """Renders main text for one page, recording the facts it states and the entropy it uses."""

    def __init__(self, world: World, rng: ChoiceRng):
        self.world, self.rng = world, rng
        self.fact_ids: list = []
        self._facts = {(f.subject, f.relation): f for f in world.facts}

    def known(self, name: str, rel: str):
        f = self._facts.get((name, rel))
        return f if f is not None and not f.heldout else None

    def state(self, f: Fact, pronoun: str = "", canonical_p: float = 0.6) -> str:
        """One sentence stating fact ``f``: the canonical form or a paraphrase."""
        self.fact_ids.append(f.id)
        if self.rng.chance(canonical_p):
            return f.statement
        return fill(self.rng.choice(PARAPHRASES[f.relation]), f.subject, f.object, pronoun)


def _pronoun(e: Entity) -> str:
    return "She" if e.attrs.get("gender") == "f" else "He"


def article_lines(w: _Writer, e: Entity) -> tuple[str, list]:
    """An encyclopedia article: a lead sentence, then one short paragraph per group of facts."""
    r = w.rng
    lead = {"country": f"{e.name} is a country.",
            "person": f"{e.name} was a person from the old days.",
            "animal": f"The {e.name} is an animal.",
            "invention": f"The {e.name} is an invention."}[e.kind]
    facts = [w.known(e.name, rel) for rel in RELATIONS if rel in e.attrs]
    facts = [f for f in facts if f is not None]
    r.shuffle(facts)
    pron = {"country": "It", "animal": "It", "invention": "It"}.get(e.kind, _pronoun(e))
    lines = [lead]
    para = []
    for f in facts:
        para.append(w.state(f, pronoun=pron))
        if len(para) == 2:
            lines.append(" ".join(para))
            para = []
    if para:
        lines.append(" ".join(para))
    if e.kind == "animal":
        lines.append(f"Many {plural(e.name)} live together in small groups.")
    title = e.name if e.kind in ("country", "person") else e.name.capitalize()
    return title, lines


def story_lines(w: _Writer, hero: Entity, animal: Entity, invention: Entity | None) -> tuple:
    """A short story that states facts about its hero, the hero's country and an animal."""
    r, world = w.rng, w.world
    he = _pronoun(hero)
    his = "Her" if he == "She" else "His"
    country = world.entity(hero.attrs["born_in"]) if w.known(hero.name, "born_in") else None
    lines = []
    opener = r.choice(["Once upon a time", "Long ago", "One spring", "Many years ago"])
    # Facts are stated subject first ("X worked as a baker"), as the probes ask them: a small
    # model that reads "there was a baker named X" does not learn to complete "X worked as a".
    para = [f"{opener} there lived a person named {hero.name}."]
    prof = w.known(hero.name, "profession")
    if prof:
        para.append(w.state(prof))
    lines.append(" ".join(para))
    para = []
    if country is not None:
        para.append(w.state(w.known(hero.name, "born_in")))
        cap = w.known(country.name, "capital")
        if cap:
            para.append(f"{he} lived in {cap.object}.")
            para.append(w.state(cap))
        clim = w.known(country.name, "climate")
        if clim:
            para.append(w.state(clim))
    if para:
        lines.append(" ".join(para))
    day = r.choice(["One day", "One morning", "One evening"])
    verb = r.choice(["saw", "met", "found"])
    para = [f"{day} {he.lower()} {verb} {a_an(animal.name)}."]
    for rel in ("habitat", "diet", "colour"):
        f = w.known(animal.name, rel)
        if f:
            para.append(w.state(f, pronoun="It"))
    lines.append(" ".join(para))
    lines += story_middle(w, hero, animal)
    if invention is not None:
        purpose = w.known(invention.name, "purpose")
        if purpose:
            w.fact_ids.append(purpose.id)
            lines.append(f"{he} carried {a_an(invention.name)}. {his} {invention.name} was used "
                         f"{purpose.object}.")
    feeling = r.choice(["happy", "surprised", "glad", "tired"])
    end = r.choice([f"{he} went home {feeling}.", f"That night {he.lower()} felt {feeling}.",
                    f"{he} never forgot that day."])
    lines.append(end[0].upper() + end[1:])
    title = r.choice([f"The {animal.name} and the traveller", f"A tale of {hero.name}",
                      f"{hero.name} and the {animal.name}"])
    return title, lines


PLACES = ["market", "harbour", "old bridge", "library", "village square", "mill", "tower",
          "garden", "workshop", "inn", "school", "temple"]
OBJECTS = ["a basket of apples", "an old map", "a small lantern", "a loaf of bread",
           "a wooden box", "a letter", "a blue scarf", "a bag of coins", "a long rope",
           "a clay jar", "a broken key", "a silver ring"]
FOODS = ["some bread", "a bowl of soup", "two apples", "some cheese", "a warm pie",
         "a handful of berries", "a plate of rice", "some fish"]
NARRATIVE = [
    "{He} walked to the {place} and bought {obj}.",
    "At the {place}, {he} talked with an old {prof} about the weather.",
    "The road was long, so {he} rested under a tall tree.",
    "{He} wrote a letter to {his} family and sent it from the {place}.",
    "It started to rain, and {he} waited inside the {place}.",
    "Children were playing near the {place}, and they waved at {him}.",
    "{He} found {obj} near the {place} and picked it up.",
    "After a while {he} was hungry, so {he} ate {food}.",
    "Two {animals} were sleeping near the {place}.",
    "{a_animal} was watching {him} from the roof of the {place}.",
    "The {animals} ran away when {he} came closer.",
    "{He} asked the people at the {place} for help, and they showed {him} the way.",
    "Nobody at the {place} knew the answer, so {he} kept walking.",
    "{He} sang a quiet song while {he} walked.",
]


def story_middle(w: _Writer, hero: Entity, animal: Entity) -> list:
    """The middle of a story: 2-4 paragraphs of ordinary events, and maybe a friend.

    Their sentences state no facts except the friend's (profession and birthplace, when known),
    but carry the grammar a small model can learn: pronoun agreement (she/her, he/him) and
    singular/plural agreement ("A frostfox was", "Two frostfoxes were").
    """
    r, world = w.rng, w.world
    he = _pronoun(hero)
    words = {"He": he, "he": he.lower(), "his": "her" if he == "She" else "his",
             "him": "her" if he == "She" else "him"}
    paras = []
    sizes = [r.randint(2, 3) for _ in range(r.randint(2, 4))]
    templates = iter(r.sample(NARRATIVE, sum(sizes)))   # no sentence twice in one story
    for size in sizes:
        sents = []
        for _ in range(size):
            t = next(templates)
            used = {field for _, field, _, _ in string.Formatter().parse(t) if field}

            def pick(field, seq):   # every field is drawn; only those the sentence shows count
                return r.choice(seq) if field in used else r.unshown_choice(seq)

            sent = t.format(**words, place=pick("place", PLACES), obj=pick("obj", OBJECTS),
                            food=pick("food", FOODS), prof=pick("prof", PROFESSIONS),
                            animal=animal.name, animals=plural(animal.name),
                            a_animal=a_an(animal.name))
            sents.append(sent[0].upper() + sent[1:])
        paras.append(" ".join(sents))
    if r.chance(0.5):
        people = [e for e in world.entities if e.kind == "person" and e is not hero]
        friend = r.choice(people)
        prof, born = w.known(friend.name, "profession"), w.known(friend.name, "born_in")
        met = f"There {words['he']} met {friend.name}."
        stated = [w.state(f) for f in (prof, born) if f]
        paras.append(" ".join([met] + stated + ["They became good friends."]))
    return paras


def thread_lines(w: _Writer, e: Entity) -> tuple:
    """A forum thread: a question about one of the entity's facts and the replies."""
    r = w.rng
    facts = [w.known(e.name, rel) for rel in RELATIONS if rel in e.attrs]
    facts = [f for f in facts if f is not None]
    if not facts:
        return None
    f = r.choice(facts)
    asker, answerer = r.sample(USERS, 2)
    lines = [f"{asker}: {f.question}"]
    answer = w.state(f, canonical_p=0.75)
    lines.append(f"{answerer}: {r.choice(['', 'Good question. ', 'I know this one. '])}{answer}")
    if len(facts) > 1 and r.chance(0.5):
        g = r.choice([x for x in facts if x is not f])
        lines.append(f"{answerer}: {r.choice(['Also, ', 'And ', 'By the way, '])}"
                     f"{w.state(g, canonical_p=0.75)}")
    if r.chance(0.5):
        lines.append(f"{asker}: {r.choice(['Thanks!', 'Thank you.', 'Great, thanks a lot.'])}")
    return f.question, lines


def code_lines(w: _Writer, kind: str, items: list) -> tuple:
    """A small code snippet built around a table of the world's facts."""
    r = w.rng
    rel = {"country": "capital", "animal": "habitat", "invention": "year",
           "person": "profession"}[kind]
    pairs = [(e.name, w.known(e.name, rel)) for e in items]
    pairs = [(n, f) for n, f in pairs if f is not None]
    var = {"capital": "capitals", "habitat": "habitats", "year": "years",
           "profession": "jobs"}[rel]
    lines = [f"# {var} of the world, as a dictionary"]
    lines.append(f"{var} = {{")
    for name, f in pairs:
        w.fact_ids.append(f.id)
        lines.append(f'    "{name}": "{f.object}",')
    lines.append("}")
    fn = r.choice(["lookup", "get_value", "find"])
    lines += [f"def {fn}(name):", f'    """Return the {rel} of name, or None."""',
              f"    return {var}.get(name)"]
    if r.chance(0.5):
        lines += ["", f"for key in sorted({var}):", f"    print(key, {fn}(key))"]
    return f"{var}.py", lines


def spam_lines(rng: ChoiceRng, world: World, kind: str) -> tuple:
    """Low-quality main text of one of the five bad kinds."""
    countries = [e for e in world.entities if e.kind == "country"]
    c = rng.choice(countries)
    good = c.attrs["export"]
    if kind == "spam":
        words = [good, "cheap", "best", "buy", "sale", "free", "online", "deal", c.name]
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(25, 60)))
                 for _ in range(rng.randint(2, 4))]
        return f"cheap {good} best {good}", lines
    if kind == "gibberish":
        letters = "abcdefghijklmnopqrstuvwxyz"
        lines = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
                          for _ in range(rng.randint(20, 50))) for _ in range(rng.randint(1, 3))]
        return "untitled", lines
    if kind == "boilerplate":
        return "Page not found", [rng.choice(["Page not found.", "Loading...",
                                              "This page has moved."])]
    if kind == "near_empty":
        return c.name, [rng.choice(["Coming soon.", "More here later.", "TODO"])]
    # seo: templated, repetitive, little information
    year = rng.randint(2015, 2025)
    cap = c.attrs["capital"]
    templates = [f"Best {good} in {c.name} {year}.", f"Cheap {good} in {cap}!",
                 f"Looking for the best {good} in {c.name}? Our top 10 {good} deals are here.",
                 f"Top 10 {good} shops in {cap} {year}.", f"Buy {good} online in {c.name}.",
                 f"{good.capitalize()} {c.name} {good} {cap} {good} deals."]
    lines = [rng.choice(templates) for _ in range(rng.randint(8, 16))]
    return f"Best {good} in {c.name} {year}", lines


# --------------------------------------------------------------------------------------------
# HTML: main text wrapped in boilerplate
# --------------------------------------------------------------------------------------------

NAV = ["Home", "About", "Contact", "News", "Shop", "Help", "Login", "Sign up", "Archive", "Blog"]
COOKIE = ["We use cookies to improve your experience. By using this site you accept cookies.",
          "This website uses cookies. Accept all cookies to continue.",
          "Cookies help us deliver our services. Learn more about cookies."]
ADS = ["Buy one get one free at Mega Store!", "Win a free trip today! Click here.",
       "Lose weight fast with this one trick.", "Hot deals near you - limited offer!"]
FOOTER = ["All rights reserved.", "Privacy policy | Terms of use | Cookie settings",
          "Powered by a content management system."]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_html(page: Page, rng: random.Random, site: str) -> str:
    """Wrap the page's main text in one of several layouts with boilerplate around it."""
    nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}">{n}</a></li>'
                  for n in rng.sample(NAV, rng.randint(4, 8)))
    related = "".join(f'<li><a href="/page/{rng.randint(1, 9999)}">{t}</a></li>'
                      for t in rng.sample(["Popular pages", "Read next", "Trending now",
                                           "More like this", "Editor's picks", "Top stories"],
                                          rng.randint(2, 4)))
    head = (f'<!DOCTYPE html>\n<html><head><meta charset="{page.charset}">'
            f"<title>{_esc(page.title)} | {site}</title></head>\n<body>\n")
    parts = [head]
    if rng.random() < 0.6:
        parts.append(f'<div class="cookie-banner">{rng.choice(COOKIE)} '
                     f'<a href="/cookies">Accept</a></div>\n')
    parts.append(f'<nav class="menu"><ul>{nav}</ul></nav>\n')
    if page.kind == "code":
        body = "\n".join(_esc(l) for l in page.lines)
        main = f"<h1>{_esc(page.title)}</h1>\n<pre><code>{body}</code></pre>\n"
    elif page.kind == "forum":
        posts = []
        for line in page.lines:
            user, _, text = line.partition(": ")
            posts.append(f'<div class="post"><span class="user"><a href="/u/{user}">{user}</a>'
                         f'</span><p>{_esc(line)}</p></div>')
        main = f"<h1>{_esc(page.title)}</h1>\n" + "\n".join(posts) + "\n"
    else:
        main = f"<h1>{_esc(page.title)}</h1>\n" + "".join(f"<p>{_esc(l)}</p>\n" for l in page.lines)
    layout = rng.choice(["article", "div", "table"])
    if layout == "article":
        parts.append(f"<article>\n{main}</article>\n")
    elif layout == "div":
        parts.append(f'<div id="content" class="main">\n{main}</div>\n')
    else:
        parts.append(f"<table><tr><td>\n{main}</td></tr></table>\n")
    if rng.random() < 0.5:
        parts.append(f'<div class="ad">{rng.choice(ADS)} <a href="/ad/{rng.randint(1, 99)}">'
                     f"More</a></div>\n")
    parts.append(f'<aside class="related"><h3>Related</h3><ul>{related}</ul></aside>\n')
    parts.append(f"<footer><p>&copy; {rng.randint(2001, 2025)} {site}. {rng.choice(FOOTER)}</p>"
                 f'<a href="/privacy">Privacy</a> <a href="/terms">Terms</a></footer>\n')
    parts.append("</body></html>\n")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Building the whole world
# --------------------------------------------------------------------------------------------

FILLERS = ["also", "indeed", "really", "truly", "still", "even"]


def near_duplicate_lines(lines: list, rng: random.Random) -> list:
    """A copy with small edits: a filler word inserted about every 100 words, no fact changed."""
    words = [(i, j) for i, l in enumerate(lines) for j in range(len(l.split()))]
    k = max(1, len(words) // 100)
    edits = set(rng.sample(range(len(words)), min(k, len(words))))
    out = []
    pos = 0
    for line in lines:
        ws = line.split()
        new = []
        for w in ws:
            if pos in edits:
                new.append(rng.choice(FILLERS))
            new.append(w)
            pos += 1
        out.append(" ".join(new))
    return out


def _popularity(entities: list, zipf_s: float) -> list:
    """Zipf weights: the entity of rank r is written about in proportion to 1 / (r + 1)^s."""
    return [1.0 / (e.rank + 1) ** zipf_s for e in entities]


def _story_page(w: _Writer, by_kind: dict, pw: list, aw: list) -> tuple:
    """A story: a hero and an animal drawn by popularity, an invention three times in ten."""
    hero = w.rng.weighted(by_kind["person"], pw)
    animal = w.rng.weighted(by_kind["animal"], aw)
    inventions = by_kind["invention"]
    inv = w.rng.choice(inventions) if inventions and w.rng.chance(0.3) else None
    return story_lines(w, hero, animal, inv)


def _thread_page(w: _Writer, weights: list):
    """A forum thread about an entity drawn by popularity (None when it has nothing to ask)."""
    e = w.rng.weighted(w.world.entities, weights)
    return thread_lines(w, e)


def _code_page(w: _Writer, by_kind: dict) -> tuple:
    """A code snippet listing three to six entities of one kind."""
    kind = w.rng.choice(["country", "animal", "invention", "person"])
    items = w.rng.sample(by_kind[kind], min(len(by_kind[kind]), w.rng.randint(3, 6)))
    return code_lines(w, kind, items)


def build_world(cfg: WorldConfig) -> World:
    """The whole world: knowledge base, every page with its HTML, and their ground truth."""
    world = build_knowledge(cfg)
    rng = random.Random(cfg.seed + 1)            # structure and boilerplate (not counted)
    crng = ChoiceRng(cfg.seed + 2)               # main-text choices (counted, per page)
    by_kind = {k: [e for e in world.entities if e.kind == k]
               for k in ("country", "person", "animal", "invention")}
    weights = _popularity(world.entities, cfg.zipf_s)
    pages: list = []

    def add(kind, title, lines, w: _Writer | None, site, path, bits):
        quality = "good" if kind in GOOD_KINDS else "bad"
        p = Page(url=f"http://{site}/{path}", kind=kind, quality=quality, cluster=len(pages),
                 title=title, lines=lines, fact_ids=list(w.fact_ids) if w else [], bits=bits)
        pages.append(p)

    def writer():
        w = _Writer(world, crng)
        return w, crng.bits

    for e in world.entities:
        w, b0 = writer()
        title, lines = article_lines(w, e)
        add("article", title, lines, w, "wiki.example", f"wiki/{title.replace(' ', '_')}",
            crng.bits - b0)
    pw, aw = (_popularity(by_kind[k], cfg.zipf_s) for k in ("person", "animal"))
    for i in range(cfg.n_stories):
        w, b0 = writer()
        title, lines = _story_page(w, by_kind, pw, aw)
        add("story", title, lines, w, "tales.example", f"story/{i}", crng.bits - b0)
    made = 0
    while made < cfg.n_threads:
        w, b0 = writer()
        out = _thread_page(w, weights)
        if out is None:
            continue
        title, lines = out
        add("forum", title, lines, w, "forum.example", f"t/{made}", crng.bits - b0)
        made += 1
    for i in range(cfg.n_code):
        w, b0 = writer()
        title, lines = _code_page(w, by_kind)
        add("code", title, lines, w, "snippets.example", f"s/{i}", crng.bits - b0)
    for i in range(cfg.n_spam):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        b0 = crng.bits
        title, lines = spam_lines(crng, world, kind)
        site = rng.choice(["best-deals.example", "cheap-stuff.example", "top10.example",
                           "free-prizes.example"])
        add(kind, title, lines, None, site, f"p/{i}", crng.bits - b0)
    # copies: exact mirrors and near-duplicates of good pages
    originals = [p for p in pages if p.quality == "good"]
    n_mirror = int(round(cfg.mirror_frac * len(originals)))
    for p in rng.sample(originals, n_mirror):
        pages.append(Page(url=p.url.replace("http://", "http://mirror.").replace(".example/",
                                                                                 ".example/m/"),
                          kind=p.kind, quality=p.quality, cluster=p.cluster, title=p.title,
                          lines=list(p.lines), fact_ids=list(p.fact_ids), bits=0.0,
                          copy_of=p.url, copy_type="mirror"))
    long_pages = [p for p in originals if p.kind in ("article", "story")
                  and len(p.text.split()) >= 60]
    n_near = min(int(round(cfg.near_dup_frac * len(originals))), len(long_pages))
    for j, p in enumerate(rng.sample(long_pages, n_near)):
        pages.append(Page(url=f"http://copycat{j % 3}.example/{p.url.split('/', 3)[3]}",
                          kind=p.kind, quality=p.quality, cluster=p.cluster, title=p.title,
                          lines=near_duplicate_lines(p.lines, rng), fact_ids=list(p.fact_ids),
                          bits=0.0, copy_of=p.url, copy_type="near_dup"))
    # charsets and HTML
    for p in pages:
        try:
            latin_ok = all(l.encode("cp1252") for l in p.lines + [p.title])
        except UnicodeEncodeError:
            latin_ok = False
        if latin_ok and rng.random() < cfg.latin1_frac:
            p.charset = "windows-1252"
        site = p.url.split("/")[2]
        p.html = render_html(p, rng, site)
    rng.shuffle(pages)
    world.pages = pages
    return world


def write_pages(world: World, n_pages: int, seed: int) -> list:
    """``n_pages`` new pages from the same knowledge base: the first ``n_pages`` of
    :func:`iter_pages` (notebook 03's unrepeated tokens)."""
    if n_pages < 0:
        raise ValueError(f"write_pages: n_pages must be >= 0, got {n_pages}")
    pages = iter_pages(world, seed)
    return [next(pages) for _ in range(n_pages)]


def iter_pages(world: World, seed: int):
    """New pages from the same knowledge base, without end (notebook 03's unrepeated tokens).

    The world's crawl is one finite sample of what its renderer can write; this draws more:
    articles, stories, forum threads and code in the shares of the crawl's good original
    pages, each written with fresh renderer choices (``seed``) and its entropy counted as in
    :func:`build_world` (``Page.bits``). The kind of each page and the entity of each article
    follow a fixed schedule (no choice, so no bits). Held-out facts stay unwritten. Pages are
    text only (no HTML): they are what the pipeline would keep. Different seeds give different
    pages, though a short low-entropy page (a one-line thread) can come out word for word the
    same twice, as boilerplate does on the web.
    """
    originals = [p for p in world.pages if p.quality == "good" and not p.copy_type]
    counts = Counter(p.kind for p in originals)
    if not counts:
        raise ValueError("iter_pages: the world has no good pages to take kind shares from")
    kinds = sorted(counts)
    by_kind = {k: [e for e in world.entities if e.kind == k]
               for k in ("country", "person", "animal", "invention")}
    pw, aw = (_popularity(by_kind[k], world.config.zipf_s) for k in ("person", "animal"))
    weights = _popularity(world.entities, world.config.zipf_s)
    crng = ChoiceRng(seed)
    made = Counter()
    i = 0
    while True:
        # page i gets the kind furthest behind its share (a fixed interleaving, no choice)
        kind = max(kinds, key=lambda k: counts[k] * (i + 1) / len(originals) - made[k])
        while True:
            w, b0 = _Writer(world, crng), crng.bits
            if kind == "article":
                out = article_lines(w, world.entities[made[kind] % len(world.entities)])
            elif kind == "story":
                out = _story_page(w, by_kind, pw, aw)
            elif kind == "forum":
                out = _thread_page(w, weights)
            else:
                out = _code_page(w, by_kind)
            if out is not None:
                break
        made[kind] += 1
        title, lines = out
        yield Page(url=f"http://fresh{seed}.example/{kind}/{i}", kind=kind, quality="good",
                   cluster=i, title=title, lines=lines, fact_ids=list(w.fact_ids),
                   bits=crng.bits - b0)
        i += 1


# --------------------------------------------------------------------------------------------
# Writing the crawl
# --------------------------------------------------------------------------------------------


def write_warc(world: World, path: Path) -> dict:
    """Write every page as a gzip WARC response record (warcinfo first), as Common Crawl does."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = Path(path)
    n_bytes = 0
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        info = writer.create_warcinfo_record(path.name, {
            "software": "llmlab.world", "format": "WARC File Format 1.0",
            "description": f"llmlab synthetic crawl, seed {world.config.seed}"})
        # fixed record ids and dates, so the same seed gives the same bytes
        info.rec_headers.replace_header("WARC-Record-ID", _record_id(f"warcinfo-{world.config.seed}"))
        info.rec_headers.replace_header("WARC-Date", "2024-01-01T00:00:00Z")
        writer.write_record(info)
        for i, p in enumerate(world.pages):
            body = p.html.encode(p.charset)
            n_bytes += len(body)
            headers = StatusAndHeaders("200 OK", [
                ("Content-Type", f"text/html; charset={p.charset}"),
                ("Content-Length", str(len(body))), ("Server", "llmlab-world")],
                protocol="HTTP/1.1")
            date = f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
            rec = writer.create_warc_record(p.url, "response", payload=io.BytesIO(body),
                                            http_headers=headers,
                                            warc_headers_dict={"WARC-Date": date,
                                                               "WARC-Record-ID": _record_id(p.url)})
            writer.write_record(rec)
    return {"pages": len(world.pages), "html_bytes": n_bytes}


def _record_id(key: str) -> str:
    import uuid

    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def write_truth(world: World, path: Path) -> None:
    """Ground truth as gzip JSON lines, one record per page (same order as the WARC).

    The gzip header stores no time and no file name (``mtime=0``, ``filename=""``), so the
    same world gives the same bytes whenever and wherever it is written.
    """
    with open(path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as f:
        for rec in world.truth_records():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def read_truth(path: Path) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def summary(world: World) -> dict:
    """Counts that notebook 00 and ``benchmarks/world.py`` report."""
    n = Counter(p.kind for p in world.pages)
    counts = world.fact_counts()
    known = [f for f in world.facts if not f.heldout]
    return {
        "pages": len(world.pages),
        "html_mb": round(sum(len(p.html.encode(p.charset)) for p in world.pages) / 1e6, 3),
        "text_mb": round(sum(len(p.text.encode()) for p in world.pages) / 1e6, 3),
        "entities": len(world.entities), "unknown_entities": len(world.unknown),
        "facts": len(world.facts), "heldout_facts": sum(f.heldout for f in world.facts),
        "facts_seen_5plus": sum(counts[f.id] >= 5 for f in known),
        "kind_counts": {k: n[k] for k in KINDS},
        "kind_shares": {k: round(v, 4) for k, v in world.kind_shares().items()},
        "mirrors": sum(p.copy_type == "mirror" for p in world.pages),
        "near_duplicates": sum(p.copy_type == "near_dup" for p in world.pages),
        "windows_1252_pages": sum(p.charset != "utf-8" for p in world.pages),
        "entropy_bits_per_byte": round(world.entropy_bits_per_byte(), 4),
    }


__all__ = ["World", "Entity", "Fact", "Page", "ChoiceRng", "build_world", "build_knowledge",
           "write_warc", "write_truth", "read_truth", "summary", "RELATIONS", "KINDS",
           "GOOD_KINDS", "BAD_KINDS", "plural", "a_an"]


def write_crawl(world: World, folder: Path) -> dict:
    """The recipe of the ``crawl`` artifact (notebook 01, section 1): ``crawl.warc.gz`` (gzip
    WARC) and ``truth.jsonl.gz`` (ground truth) in ``folder``; returns the crawl's counts and the
    world's summary."""
    stats = write_warc(world, Path(folder) / "crawl.warc.gz")
    write_truth(world, Path(folder) / "truth.jsonl.gz")
    return stats | summary(world)

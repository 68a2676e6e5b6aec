"""Questions for the Q&A data: single questions, multi-round chains about one entity, entity keys and the
seeded held-out partition. See :mod:`freeze_omni.data.qa`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from freeze_omni.data import corpus as C
from freeze_omni.data.text import normalize_text

QA_KINDS = ("questions", "countries", "wordnet", "numbers", "chitchat")
SPLITS = ("train", "heldout")

# --------------------------------------------------------------------------------------------------------------
# Splits and entity keys


def _unit(*parts: Any) -> float:
    """A deterministic pseudo-random number in [0, 1) from ``parts``."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def _split_of(key: str, seed: int, heldout_frac: float) -> str:
    return "heldout" if _unit("split", seed, key) < heldout_frac else "train"


def _partition(items: Sequence[str], heldout_frac: float, seed: int, tag: str) -> dict[str, list[str]]:
    """Split a pool of templates: ``round(frac · n)`` of them (at least 1 when ``frac`` > 0, at most n - 1)
    held out, chosen by a seeded hash; both parts keep the input order."""
    k = 0
    if heldout_frac > 0 and len(items) >= 2:
        k = min(len(items) - 1, max(1, int(round(heldout_frac * len(items)))))
    ranked = sorted(items, key=lambda t: _unit("tpl", seed, tag, t))
    held = set(ranked[:k])
    return {"train": [t for t in items if t not in held], "heldout": [t for t in items if t in held]}


def _singular(w: str) -> str:
    return {"butterflies": "butterfly"}.get(w, w[:-1] if w.endswith("s") else w)


_WORD_PATTERNS = [re.compile(p, re.I) for p in (
    r"^what is an? (?P<w>[a-z ]+)\?$", r"^what does the (?:word|verb) (?P<w>[a-z ]+) mean\?$",
    r"^please define (?P<w>[a-z ]+)\.$", r"^can you explain what an? (?P<w>[a-z ]+) is\?$",
    r"^what is the meaning of (?P<w>[a-z ]+)\?$", r"^what does it mean to (?P<w>[a-z ]+)\?$",
    r"^how would you (?P<w>[a-z ]+) something\?$", r"^what does (?P<w>[a-z ]+) mean\?$",
    r"^define the word (?P<w>[a-z ]+)\.$", r"^how do you spell (?P<w>[a-z ]+)\?$",
    r"^what is the plural of (?P<w>[a-z ]+)\?$", r"^can you use the word (?P<w>[a-z ]+) in a sentence\?$",
    r"^where does the word (?P<w>[a-z ]+) come from\?$", r"^what is the opposite of (?P<w>[a-z ]+)\?$",
    r"^what is another word for (?P<w>[a-z ]+)\?$", r"^can you give me a synonym for (?P<w>[a-z ]+)\?$",
    r"favou?rite (?P<w>[a-z]+)\b")]


def _vocab() -> dict[str, str]:
    """Known entity phrases (lowercase) -> their key."""
    out: dict[str, str] = {}
    for t in C._TASKS + C._TOPICS + C._MACHINES:
        out[t] = t
    for a in C._ANIMALS:
        out[a] = out[_singular(a)] = _singular(a)
    return out


_ENTITY_RE: dict[str, Any] = {}


def _entity_regexes() -> tuple[re.Pattern, dict[str, str], re.Pattern, dict[str, str]]:
    if not _ENTITY_RE:
        names: dict[str, str] = {}
        for c in C._countries():
            names[c["name"]] = c["name"]
            if isinstance(c.get("capital"), str) and c["capital"]:
                names.setdefault(c["capital"], c["name"])
        alt = "|".join(re.escape(s) for s in sorted(names, key=len, reverse=True))
        vocab = _vocab()
        valt = "|".join(re.escape(s) for s in sorted(vocab, key=len, reverse=True))
        _ENTITY_RE.update(c=re.compile(rf"(?<![\w-])({alt})(?![\w-])"), names=names,
                          v=re.compile(rf"\b({valt})\b"), vocab=vocab)
    return _ENTITY_RE["c"], _ENTITY_RE["names"], _ENTITY_RE["v"], _ENTITY_RE["vocab"]


def entity_key(question: str) -> str:
    """What a question is about, as a split key: ``country:NAME`` (a country or its capital is named),
    ``e:WORD`` (a WordNet word of a known template, a machine, an animal, a topic, a task, a favourite thing),
    else ``q:NORMALIZED QUESTION``. Questions with the same key always land in the same split."""
    q = " ".join(question.split())
    cre, names, vre, vocab = _entity_regexes()
    m = cre.search(q)
    if m:
        return f"country:{names[m.group(1)]}"
    m = vre.search(q.lower())
    if m:
        return f"e:{vocab[m.group(1)]}"
    for p in _WORD_PATTERNS:
        m = p.search(q)
        if m:
            return f"e:{m.group('w').lower()}"
    return f"q:{normalize_text(q)}"


# --------------------------------------------------------------------------------------------------------------
# Questions and dialogues

_REQUEST_START = re.compile(
    r"^(tell|give|explain|describe|define|convert|count|list|name|say|sing|recommend|please|help|teach|show|"
    r"suggest|let's|compare|calculate|spell|translate|sum up|summarize)\b", re.I)
#: Chit-chat lines that only make sense after something else was said (kept for follow-ups only).
_NEEDS_CONTEXT = {normalize_text(s) for s in (
    "Can you say that again?", "What do you think about that?", "I don't understand, can you explain?",
    "That's really interesting, tell me more.", "Goodbye, talk to you later.", "Thank you so much for your help.",
    "Nice to meet you.")}


def is_request(line: str) -> bool:
    """A question ("...?") or a request ("Tell me ...", "Convert ...") — not a statement or a definition."""
    s = line.strip()
    if not s or normalize_text(s) in _NEEDS_CONTEXT:
        return False
    return s.endswith("?") or bool(_REQUEST_START.match(s))


def single_questions(n: int, seed: int = 0, wordnet_dir: str = C.WORDNET_DIR) -> list[str]:
    """``n`` distinct single-round questions/requests from the corpus builder's question-like kinds (fewer
    only when the kinds run out), in a seeded order."""
    if n <= 0:
        return []
    m = int(n * 1.5) + 20
    while True:
        lines = C.build_corpus(m, seed=seed, kinds=QA_KINDS, wordnet_dir=wordnet_dir)
        qs = [s for s in lines if is_request(s)]
        if len(qs) >= n or len(lines) < m:
            return qs[:n]
        m *= 2


#: Follow-ups that fit any first question (held-out phrasings are split off with :func:`_partition`).
GENERIC_FOLLOWUPS = [
    "Can you say that again more briefly?", "Why?", "Can you explain that more simply?", "Tell me more.",
    "Are you sure about that?", "Can you give me an example?", "What do you mean?",
    "Can you sum that up in one sentence?", "How do you know that?", "Is that really true?",
    "Could you repeat the last part?", "Can you make that shorter?", "Interesting. Why is that?",
    "Okay, and what else?", "Can you explain that to a child?", "Say that again, please.",
    "Wait, what was that?", "Thanks. Anything else I should know?"]


@dataclass(frozen=True)
class _Chain:
    """A multi-round dialogue family: first-question templates and topic follow-ups (``{x}`` = the entity)."""

    name: str
    firsts: tuple[str, ...]
    followups: tuple[str, ...]


_CHAINS = {
    "machine": _Chain("machine", ("How does {a} work?", "Who invented the {x}?", "When was the {x} invented?",
                                  "What is {a} used for?"),
                      ("Who invented it?", "When was it invented?", "What is it made of?", "Is it dangerous?",
                       "How much does one usually cost?", "How did people manage before it existed?",
                       "How long does one usually last?", "What is the most important part of it?")),
    "animal": _Chain("animal", ("What do {x} eat?", "How long do {x} live?", "Where do {x} live?",
                                "Are {x} smart?", "Tell me about {x}."),
                     ("How long do they live?", "Where do they live?", "Are they smart?",
                      "How big do they get?", "Do they make good pets?", "What eats them?",
                      "How many babies do they have?", "Do they sleep a lot?", "Are they dangerous?")),
    "topic": _Chain("topic", ("Can you explain {x} in simple terms?", "What do you know about {x}?",
                              "Tell me about {x}.", "Why does {x} matter?"),
                    ("Can you give me an example of it?", "Who discovered it?", "How do scientists study it?",
                     "What would happen without it?", "Why does it matter?", "Is it the same everywhere?",
                     "What is a common myth about it?")),
    "task": _Chain("task", ("How do I {x}?", "What is the best way to {x}?", "Can you teach me how to {x}?"),
                   ("How long does that take?", "What do I need for it?", "What is the most common mistake?",
                    "Is it hard for a beginner?", "Can you give me one quick tip?", "What should I do first?",
                    "How do I know if I did it right?")),
    "word": _Chain("word", ("What is {a}?", "What does the word {x} mean?", "Please define {x}."),
                   ("How do you spell {x}?", "Can you use it in a sentence?", "What is the plural of {x}?",
                    "Where does the word come from?", "Is there another word for it?",
                    "How do you pronounce it?")),
    "country": _Chain("country", ("What is the capital of {x}?", "How many people live in {x}?",
                                  "What currency does {x} use?", "What language do people speak in {x}?",
                                  "Where is {x}?", "Tell me about {x}."),
                      ("How many people live there?", "And what currency does it use?",
                       "What language do they speak there?", "Which continent is it on?", "What is it famous for?",
                       "What is the weather like there?", "What is the biggest city there?",
                       "Is it a good place to visit?", "What food is it known for?", "And what is its capital?",
                       "How big is it?", "What do you call the people who live there?",
                       "Which countries are its neighbors?")),
    "math": _Chain("math", ("What is {a} plus {b}?", "What is {a} times {b}?", "How much is {a} minus {b}?"),
                   ("And what is that times {c}?", "Now subtract {c} from that.", "Is the answer an even number?",
                    "What is half of that?", "Can you show me how you got that?", "And if I add {c}?",
                    "Is that a prime number?")),
    "chitchat": _Chain("chitchat", ("What is your favorite {fav}?", "I feel {feel} today, what should I do?",
                                    "Tell me a joke about {animal}.", "Do you like {like}?"),
                       ("Why do you say that?", "What about me, what should I pick?", "Can you tell me another one?",
                        "What do most people say?", "What would you recommend?", "Can you cheer me up?",
                        "Do you really mean that?")),
}
#: A follow-up is not asked after a first question that matches its pattern (it would ask the same thing again).
_REDUNDANT = {
    "Who invented it?": r"who invented", "When was it invented?": r"when was", "How long do they live?": r"how long",
    "Where do they live?": r"where do", "Are they smart?": r"smart", "Why does it matter?": r"matter",
    "How many people live there?": r"people|population", "And what currency does it use?": r"currenc|money",
    "What language do they speak there?": r"language", "Which continent is it on?": r"where is|continent",
    "And what is its capital?": r"capital", "What is it famous for?": r"tell me about",
    "What is it made of?": r"made of", "Can you use it in a sentence?": r"in a sentence",
    "What is the plural of {x}?": r"plural", "How do you spell {x}?": r"spell",
    "Can you tell me another one?": r"favorite|feel|like", "What about me, what should I pick?": r"joke|feel|like",
    "Can you cheer me up?": r"favorite|joke|like"}
_CHAIN_WEIGHTS = {"country": 3, "machine": 1, "animal": 1.5, "topic": 1.5, "task": 1.5, "word": 1.5, "math": 1.5,
                  "chitchat": 1}


def _fill_chain(chain: _Chain, rng: np.random.Generator, wordnet_dir: str) -> tuple[str, dict[str, str]]:
    """Pick the entity and a first question; returns (first question, slot values)."""
    pick = C._pick
    slots: dict[str, str] = {}
    if chain.name == "machine":
        x = pick(rng, C._MACHINES)
        slots = {"x": x, "a": C._a(x)}
    elif chain.name == "animal":
        slots = {"x": pick(rng, C._ANIMALS)}
    elif chain.name == "topic":
        slots = {"x": pick(rng, C._TOPICS)}
    elif chain.name == "task":
        slots = {"x": pick(rng, C._TASKS)}
    elif chain.name == "word":
        words = C.familiar_words(wordnet_dir).get("noun") or [("table", None)]
        x = pick(rng, words)[0]
        slots = {"x": x, "a": C._a(x)}
    elif chain.name == "country":
        slots = {"x": pick(rng, [c for c in C._countries() if isinstance(c.get("capital"), str)])["name"]}
    elif chain.name == "math":
        slots = {"a": C._num(rng, int(rng.integers(2, 50))), "b": C._num(rng, int(rng.integers(2, 20))),
                 "c": C._num(rng, int(rng.integers(2, 10)))}
    else:  # chitchat
        slots = {"fav": pick(rng, C._FAVORITES), "like": pick(rng, C._LIKES), "feel": pick(rng, C._FEELINGS),
                 "animal": pick(rng, C._ANIMALS)}
    return pick(rng, chain.firsts).format(**slots), slots


@dataclass
class Dialogue:
    """One planned dialogue: its questions, what it is about, and its split."""

    id: str
    questions: list[str]
    kind: str  # "single" or the chain name
    key: str
    split: str

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, "questions": self.questions, "kind": self.kind, "key": self.key, "split": self.split}


def _multi_dialogue(rng: np.random.Generator, seed: int, heldout_frac: float, wordnet_dir: str,
                    pools: Mapping[tuple[str, str], list[str]]) -> tuple[list[str], str, str, str]:
    names = sorted(_CHAINS)
    w = np.array([_CHAIN_WEIGHTS[k] for k in names], dtype=np.float64)
    chain = _CHAINS[names[int(rng.choice(len(names), p=w / w.sum()))]]
    first, slots = _fill_chain(chain, rng, wordnet_dir)
    key = entity_key(first)
    split = _split_of(key, seed, heldout_frac)
    rounds = 2 if rng.random() < 0.6 else 3
    turns = [first]
    used = {t for t, pat in _REDUNDANT.items() if re.search(pat, first.lower())}
    topic, generic = pools[(chain.name, split)], pools[("generic", split)]
    for _ in range(rounds - 1):
        first_choice = topic if rng.random() < 0.7 else generic
        cands = [t for t in first_choice if t not in used] or \
            [t for t in (generic if first_choice is topic else topic) if t not in used]
        if not cands:
            break
        t = C._pick(rng, cands)
        used.add(t)
        turns.append(t.format(**slots))
    return turns, chain.name, key, split


def plan_dialogues(n: int, multi_frac: float = 0.3, heldout_frac: float = 0.1, seed: int = 0,
                   wordnet_dir: str = C.WORDNET_DIR) -> list[Dialogue]:
    """``n`` dialogues (about ``multi_frac`` of them 2–3 rounds), split by entity (see :mod:`freeze_omni.data.qa`).

    Returns:
        Dialogues with ids ``qa000000``..., in a seeded order; held-out ones have ``split == "heldout"``.
        Train dialogues that repeat a held-out question are dropped, so a few fewer than ``n`` may come back.
    """
    if not 0.0 <= multi_frac <= 1.0:
        raise ValueError(f"multi_frac must be in [0, 1], got {multi_frac}")
    if not 0.0 <= heldout_frac < 1.0:
        raise ValueError(f"heldout_frac must be in [0, 1), got {heldout_frac}")
    n_multi = int(round(n * multi_frac))
    items: list[tuple[list[str], str, str, str]] = []
    for q in single_questions(n - n_multi, seed, wordnet_dir):
        key = entity_key(q)
        items.append(([q], "single", key, _split_of(key, seed, heldout_frac)))
    pools: dict[tuple[str, str], list[str]] = {}
    for name, chain in list(_CHAINS.items()) + [("generic", None)]:
        part = _partition(list(chain.followups) if chain else GENERIC_FOLLOWUPS, heldout_frac, seed, name)
        for split in SPLITS:
            pools[(name, split)] = part[split]
    rng = np.random.default_rng([seed, 101])
    seen: set[tuple[str, ...]] = set()
    tries = 0
    while n_multi and len(seen) < n_multi and tries < 50 * n_multi:
        tries += 1
        turns, kind, key, split = _multi_dialogue(rng, seed, heldout_frac, wordnet_dir, pools)
        norm = tuple(normalize_text(t) for t in turns)
        if len(turns) >= 2 and norm not in seen:
            seen.add(norm)
            items.append((turns, kind, key, split))
    held = {normalize_text(q) for t, _, _, s in items if s == "heldout" for q in t}
    items = [it for it in items if it[3] == "heldout" or not any(normalize_text(q) in held for q in it[0])]
    order = np.random.default_rng([seed, 102]).permutation(len(items))
    return [Dialogue(f"qa{i:06d}", *items[j]) for i, j in enumerate(order)]


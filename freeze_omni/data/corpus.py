"""A text corpus of user turns (questions, requests, chit-chat, plain sentences) built offline.

Kinds (DESIGN.md §5):

- ``questions``: templated general questions ("How does a rocket work?", "What is the plural of ...?");
- ``countries``: questions from ``countryinfo`` (capital, population, currency, languages, region...);
- ``wordnet``: "What is a W?"-style questions and glosses as definitions ("A guitar is a stringed ...");
- ``numbers``: arithmetic and number questions (operands as digits or words) and unit conversions;
- ``chitchat``: small talk ("How are you today?", "Tell me a joke about cats.");
- ``sentences``: declarative sentences for ASR variety (WordNet usage examples, country facts).

Every line has 3 to 30 words; lines are deduplicated on their :func:`normalize_text` form (so "7 + 5" and
"seven plus five" count as one); the output is a deterministic function of ``(n, seed, kinds)``. Each kind
draws from its own generator seeded with ``(seed, kind)``, so the kinds do not disturb one another.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from num2words import num2words

from freeze_omni.data.text import normalize_text

log = logging.getLogger(__name__)
T = TypeVar("T")

KINDS = ("questions", "countries", "wordnet", "numbers", "chitchat", "sentences")
WORDNET_DIR = "/usr/share/wordnet"
MIN_WORDS, MAX_WORDS = 3, 30

_W = str.split  # compact word lists below
_SUPERLATIVES = _W("largest smallest tallest oldest longest deepest fastest hottest coldest most_popular")
_PLACES = _W("animal mountain river city country building ocean desert lake tree bird fish island bridge planet")
_MACHINES = _W("car computer refrigerator rocket microwave telephone bicycle camera clock battery airplane "
               "submarine printer television radio elevator helicopter compass thermometer dishwasher")
_ANIMALS = _W("cats dogs horses elephants pandas whales bees ants rabbits sharks owls frogs dolphins penguins "
              "lions tigers snakes butterflies bats turtles")
_TOPICS = ["gravity", "photosynthesis", "electricity", "democracy", "inflation", "evolution", "the internet",
           "climate change", "machine learning", "the water cycle", "black holes", "vaccines", "taxes",
           "the stock market", "earthquakes", "rainbows", "magnets", "the immune system", "time zones", "tides"]
_TASKS = ["bake bread", "tie a tie", "learn to swim", "boil an egg", "change a tire", "plant a tree",
          "write a letter", "make coffee", "fall asleep faster", "learn a new language", "save money",
          "cook rice", "fix a leaky faucet", "train a puppy", "start running", "make friends", "study for an exam",
          "paint a room", "grow tomatoes", "remember names"]
_FIXED_QUESTIONS = [
    "Why is the sky blue?", "How far away is the moon?", "How many legs does a spider have?",
    "Why do leaves change color in the fall?", "How hot is the sun?", "What makes thunder?",
    "How many bones are in the human body?", "Why is the ocean salty?", "What is the speed of light?",
    "How do airplanes stay in the air?", "Why do we dream?", "How many planets are in the solar system?",
    "What is the tallest animal?", "Why do cats purr?", "How does the heart pump blood?",
    "What causes the seasons?", "How many hours of sleep do I need?", "Is a tomato a fruit or a vegetable?",
    "Why do we have leap years?", "What is the difference between weather and climate?"]
_FAVORITES = _W("color food movie book song animal season sport hobby game fruit city holiday number dessert "
                "flower subject")
_LIKES = _W("cats dogs music pizza movies books rain snow coffee tea chocolate dancing math poetry summer")
_FEELINGS = _W("happy tired sad bored excited nervous great sleepy hungry stressed lonely cheerful")
_CHITCHAT = [
    "How are you today?", "Tell me a joke.", "What is your name?", "Can you help me with something?",
    "Thank you so much for your help.", "What can you do?", "Good morning, how are you?", "Nice to meet you.",
    "What should I do this weekend?", "Can you recommend a good book?", "What is the weather like today?",
    "I had a long day at work.", "Do you have any hobbies?", "Tell me something interesting.",
    "Can you sing me a song?", "What time is it?", "I can't decide what to eat for dinner.",
    "Say something funny.", "Are you a robot?", "Let's play a game.", "I'm going on a trip next week.",
    "What do you think about that?", "Can you say that again?", "I don't understand, can you explain?",
    "That's really interesting, tell me more.", "Goodbye, talk to you later.", "Do you like music?",
    "Give me a fun fact.", "What should I cook tonight?", "Can you tell me a riddle?"]
_UNITS = [("centimeters", "meters", 100), ("millimeters", "centimeters", 10), ("meters", "kilometers", 1000),
          ("inches", "feet", 12), ("feet", "yards", 3), ("grams", "kilograms", 1000), ("ounces", "pounds", 16),
          ("seconds", "minutes", 60), ("minutes", "hours", 60), ("hours", "days", 24), ("days", "weeks", 7),
          ("milliliters", "liters", 1000), ("months", "years", 12)]
_CONVERT = [("miles", "kilometers"), ("kilograms", "pounds"), ("liters", "gallons"), ("feet", "meters"),
            ("inches", "centimeters"), ("kilometers per hour", "miles per hour")]
_COUNTRY_QS = {
    "capital": ["What is the capital of {n}?", "What's the capital city of {n}?", "Which city is the capital of {n}?",
                "Which country has {c} as its capital?", "{c} is the capital of which country?"],
    "population": ["How many people live in {n}?", "What is the population of {n}?"],
    "currencies": ["What currency does {n} use?", "What is the currency of {n}?", "What money do they use in {n}?"],
    "languages": ["What language do people speak in {n}?", "What languages are spoken in {n}?"],
    "region": ["Where is {n}?", "Which continent is {n} in?", "Where is {n} on the map?"],
    "borders": ["Which countries border {n}?", "What are the neighbors of {n}?"],
    "demonym": ["What do you call people from {n}?"],
    "area": ["How big is {n}?", "What is the area of {n}?"],
    "name": ["Tell me about {n}.", "What is {n} famous for?", "What food is {n} known for?",
             "What is the weather like in {n}?", "What is the largest city in {n}?", "Is {n} a good place to visit?"]}


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: part of speech (n, v, a, s, r), its lemmas, its definition and usage examples."""

    pos: str
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


def _parse_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """Split a gloss ``def; "ex 1"; "ex 2"`` into the definition and the quoted examples."""
    examples = tuple(e.strip() for e in re.findall(r'"([^"]+)"', gloss))
    definition = re.sub(r'"[^"]*"', "", gloss).split(";")[0].strip(" ;:,")
    return definition, examples


@functools.lru_cache(maxsize=4)
def wordnet_synsets(root: str = WORDNET_DIR) -> dict[tuple[str, int], Synset]:
    """Every synset of ``root/data.{noun,verb,adj,adv}``, keyed by (file pos, byte offset); ``{}`` if absent."""
    out: dict[tuple[str, int], Synset] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(root) / f"data.{pos}"
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue  # license header
                head, gloss = line.split(" | ", 1)
                f_ = head.split()
                n_words = int(f_[3], 16)
                lemmas = tuple(re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in f_[4:4 + 2 * n_words:2])
                out[(pos, int(f_[0]))] = Synset(f_[2], lemmas, *_parse_gloss(gloss.strip()))
    return out


@functools.lru_cache(maxsize=4)
def familiar_words(root: str = WORDNET_DIR) -> dict[str, list[tuple[str, Synset]]]:
    """Per file pos, lemmas seen in the sense-tagged corpus (``tagsense_cnt`` ≥ 1) made of 1 to 3 lowercase
    words, each with the synset of its most frequent sense (where it is written lowercase: no proper nouns)."""
    synsets = wordnet_synsets(root)
    out: dict[str, list[tuple[str, Synset]]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(root) / f"index.{pos}"
        words: list[tuple[str, Synset]] = []
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    f = line.split()
                    if line.startswith("  ") or len(f) < 6:
                        continue
                    p_cnt = int(f[3])
                    lemma = f[0].replace("_", " ")
                    if int(f[5 + p_cnt]) >= 1 and re.fullmatch(r"[a-z]+(?: [a-z]+){0,2}", lemma):
                        syn = synsets.get((pos, int(f[6 + p_cnt])))
                        if syn is not None and syn.definition and lemma in syn.lemmas:  # not a proper noun
                            words.append((lemma, syn))
        out[pos] = words
    return out


@functools.lru_cache(maxsize=16)
def _lemmas(root: str, pos: str, fallback: str) -> tuple[str, ...]:
    return tuple(w for w, _ in familiar_words(root).get(pos, [])) or (fallback,)


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def _sentence(s: str) -> str:
    s = s.strip()
    return s[:1].upper() + s[1:] + ("" if s[-1:] in ".?!" else ".")


def _questions(rng: np.random.Generator, root: str) -> str:
    nouns, adjs = _lemmas(root, "noun", "table"), _lemmas(root, "adj", "happy")
    t = int(rng.integers(8))
    if t == 0:
        return f"What is the {_pick(rng, _SUPERLATIVES).replace('_', ' ')} {_pick(rng, _PLACES)} in the world?"
    if t == 1:
        w = _pick(rng, _MACHINES)
        return _pick(rng, ["How does {a} work?", "How does the {w} work?", "Who invented the {w}?",
                           "When was the {w} invented?"]).format(a=_a(w), w=w)
    if t == 2:
        return _pick(rng, ["What do {} eat?", "How long do {} live?", "Where do {} live?", "Why do people like {}?",
                           "Are {} smart?"]).format(_pick(rng, _ANIMALS))
    if t == 3:
        return _pick(rng, ["Can you explain {} in simple terms?", "What do you know about {}?", "Tell me about {}.",
                           "Why does {} matter?"]).format(_pick(rng, _TOPICS))
    if t == 4:
        return _pick(rng, ["How do I {}?", "What is the best way to {}?", "Can you teach me how to {}?"]).format(
            _pick(rng, _TASKS))
    if t == 5:
        return _pick(rng, ["How do you spell {}?", "What is the plural of {}?", "Can you use the word {} in a "
                           "sentence?", "Where does the word {} come from?"]).format(_pick(rng, nouns))
    if t == 6:
        return _pick(rng, ["What is the opposite of {}?", "What is another word for {}?",
                           "Can you give me a synonym for {}?"]).format(_pick(rng, adjs))
    return _pick(rng, _FIXED_QUESTIONS)


@functools.lru_cache(maxsize=1)
def _countries() -> list[dict]:
    from countryinfo import CountryInfo

    return [v for _, v in sorted(CountryInfo.all().items()) if re.fullmatch(r"[^(),]+", v.get("name", ""))]


def _countries_q(rng: np.random.Generator, root: str) -> str:
    c = _pick(rng, _countries())
    field = _pick(rng, [k for k in _COUNTRY_QS if c.get(k) or k == "name"])
    if field == "capital":
        return _pick(rng, _COUNTRY_QS["capital"]).format(n=c["name"], c=c["capital"])
    if field == "region" and c.get("subregion") and rng.random() < 0.3:
        return f"Is {c['name']} in {c['subregion']}?"
    return _pick(rng, _COUNTRY_QS[field]).format(n=c["name"])


def _wordnet(rng: np.random.Generator, root: str) -> str:
    words = familiar_words(root)
    pos = _pick(rng, [p for p in ("noun", "noun", "noun", "verb", "adj", "adv") if words.get(p)])
    w, syn = _pick(rng, words[pos])
    if rng.random() < 0.4:  # a definition sentence
        d = syn.definition
        if pos == "noun":
            return _sentence(f"{_a(w)} is {d}")
        return _sentence(f"to {w} means to {d}" if pos == "verb" else f"the word {w} means {d}")
    if pos == "noun":
        return _pick(rng, ["What is {a}?", "What does the word {w} mean?", "Please define {w}.",
                           "Can you explain what {a} is?", "What is the meaning of {w}?"]).format(a=_a(w), w=w)
    if pos == "verb":
        return _pick(rng, ["What does it mean to {w}?", "What does the verb {w} mean?",
                           "How would you {w} something?"]).format(w=w)
    return _pick(rng, ["What does {w} mean?", "What does the word {w} mean?", "Define the word {w}."]).format(w=w)


def _num(rng: np.random.Generator, n: int) -> str:
    """A number as digits or words, at random."""
    return str(n) if rng.random() < 0.5 else num2words(n)


def _numbers(rng: np.random.Generator, root: str) -> str:
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    a, b = r(0, 100), r(1, 20)
    t = int(rng.integers(14))
    if t < 4:
        op = ["plus", "minus", "times", "divided by"][t]
        x = a * b if op == "divided by" else a
        return _pick(rng, ["What is {} {} {}?", "How much is {} {} {}?", "Can you tell me what {} {} {} is?"]
                     ).format(_num(rng, x), op, _num(rng, b))
    if t == 4:
        return f"What is {_num(rng, r(2, 30))} squared?" if rng.random() < 0.5 else \
            f"What is the square root of {_num(rng, r(2, 30) ** 2)}?"
    if t == 5:
        return _pick(rng, ["Is {} a prime number?", "Is {} even or odd?", "What comes after {}?",
                           "What number comes before {}?", "What is half of {}?"]).format(_num(rng, r(2, 999)))
    if t == 6:
        return f"What is {_pick(rng, [5, 10, 15, 20, 25, 50, 75])} percent of {_num(rng, r(2, 50) * 10)}?"
    if t == 7:
        return f"What is {r(1, 99)}.{r(1, 9)} plus {r(1, 99)}.{r(1, 99)}?"
    if t == 8:
        return f"Count from {_num(rng, a)} to {_num(rng, a + r(3, 10))}."
    if t == 9:
        return _pick(rng, ["What happened in {}?", "How many years ago was {}?", "What was life like in {}?"]
                     ).format(r(1500, 2020))
    if t == 10:
        k = r(1, 12)
        return _pick(rng, [f"Which month is the {num2words(k, to='ordinal_num')} month of the year?",
                           f"What is the {num2words(k, to='ordinal')} letter of the alphabet?"])
    small, big, _ = _pick(rng, _UNITS)
    if t in (11, 12):
        return f"How many {small} are in {_num(rng, r(2, 12))} {big}?"
    u1, u2 = _pick(rng, _CONVERT)
    return _pick(rng, ["Convert {} {} to {}.", "How many {2} is {0} {1}?"]).format(_num(rng, r(2, 200)), u1, u2)


def _chitchat(rng: np.random.Generator, root: str) -> str:
    t = int(rng.integers(6))
    if t == 0:
        return _pick(rng, ["What is your favorite {}?", "What's your favourite {}?", "Do you have a favorite {}?"]
                     ).format(_pick(rng, _FAVORITES))
    if t == 1:
        return _pick(rng, ["Do you like {}?", "I really love {}.", "Tell me a joke about {}."]).format(
            _pick(rng, _LIKES))
    if t == 2:
        return _pick(rng, ["I feel {} today.", "I'm feeling {}, what should I do?", "Why do I always feel {}?"]
                     ).format(_pick(rng, _FEELINGS))
    if t == 3:
        return f"Tell me a story about {_a(_pick(rng, _ANIMALS)[:-1])}."
    return _pick(rng, _CHITCHAT)


def _sentences(rng: np.random.Generator, root: str) -> str:
    examples = _examples(root)
    if examples and rng.random() < 0.85:
        return _sentence(_pick(rng, examples))
    c = _pick(rng, [c for c in _countries() if c.get("capital") and c.get("population")])
    return _pick(rng, ["The capital of {n} is {c}.", "About {p:,} people live in {n}.",
                       "{c} is a city in {n}."]).format(n=c["name"], c=c["capital"], p=c["population"])


@functools.lru_cache(maxsize=4)
def _examples(root: str) -> list[str]:
    return sorted({e for s in wordnet_synsets(root).values() for e in s.examples
                   if MIN_WORDS <= len(e.split()) <= MAX_WORDS and "--" not in e})


_GENERATORS: dict[str, Callable[[np.random.Generator, str], str]] = {
    "questions": _questions, "countries": _countries_q, "wordnet": _wordnet, "numbers": _numbers,
    "chitchat": _chitchat, "sentences": _sentences}


def build_corpus(n: int, seed: int = 0, kinds: Sequence[str] = KINDS, wordnet_dir: str = WORDNET_DIR,
                 max_tries_per_line: int = 50) -> list[str]:
    """Make ``n`` distinct lines, split as evenly as possible over ``kinds`` and shuffled.

    A kind that runs out of new lines (e.g. ``chitchat``) hands its remaining quota to the others, so fewer
    than ``n`` lines come back only when every kind is exhausted. WordNet-based kinds need ``wordnet_dir``.

    Returns:
        The lines, in a seeded random order.
    """
    unknown = set(kinds) - set(KINDS)
    kinds = [k for k in KINDS if k in set(kinds)]
    if not kinds or unknown:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}; got {sorted(unknown) or 'none'}")
    if not wordnet_synsets(wordnet_dir):
        log.warning("no WordNet under %s: wordnet, questions and sentences kinds lose their WordNet parts", wordnet_dir)
    rngs = {k: np.random.default_rng([seed, KINDS.index(k)]) for k in kinds}
    seen: set[str] = set()
    lines: list[str] = []
    active = list(kinds)
    while len(lines) < n and active:
        quota = -(-(n - len(lines)) // len(active))
        for k in list(active):
            got, tries = 0, 0
            while got < quota and len(lines) < n and tries < quota * max_tries_per_line:
                tries += 1
                s = " ".join(_GENERATORS[k](rngs[k], wordnet_dir).split())
                key = normalize_text(s)
                if MIN_WORDS <= len(s.split()) <= MAX_WORDS and key and key not in seen:
                    seen.add(key)
                    lines.append(s)
                    got += 1
            if got < quota:
                active.remove(k)  # exhausted
    order = np.random.default_rng([seed, len(KINDS)]).permutation(len(lines))
    return [lines[i] for i in order]


def write_corpus(out: str | os.PathLike, lines: Sequence[str], heldout_frac: float = 0.0) -> dict[str, str | int]:
    """Write ``lines`` to ``out``; with ``heldout_frac`` > 0 the last ``round(frac·len)`` lines go to
    ``OUT_STEM.heldout.SUFFIX`` instead (disjoint, as the lines are distinct).

    Returns:
        ``{"out", "lines", "heldout", "heldout_lines"}`` (``heldout`` is ``""`` when there is none).
    """
    if not 0.0 <= heldout_frac < 1.0:
        raise ValueError(f"heldout_frac must be in [0, 1), got {heldout_frac}")
    out = Path(out)
    n_held = int(round(heldout_frac * len(lines)))
    train, held = list(lines[:len(lines) - n_held]), list(lines[len(lines) - n_held:])
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [(out, train)]
    held_path = out.with_name(f"{out.stem}.heldout{out.suffix}") if n_held else None
    if held_path is not None:
        files.append((held_path, held))
    for path, part in files:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(s + "\n" for s in part), encoding="utf-8")
        os.replace(tmp, path)
    return {"out": os.fspath(out), "lines": len(train), "heldout": os.fspath(held_path or ""),
            "heldout_lines": len(held)}

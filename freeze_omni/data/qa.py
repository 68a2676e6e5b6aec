"""Q&A data for input stage 3 (DESIGN.md §1, §5; facts §1.6, §2.1): "self-distilled" answers and state labels.

What is made, and how:

1. **Questions** (:func:`plan_dialogues`). Single-round questions are the question/request lines of the corpus
   builder (:func:`freeze_omni.data.corpus.build_corpus` with the kinds ``questions``, ``countries``,
   ``wordnet``, ``numbers``, ``chitchat``; statements such as definitions and "I had a long day" are left
   out, :func:`is_request`). Multi-round dialogues (2–3 rounds) chain related questions about one entity
   ("What is the capital of Peru?" -> "How many people live there?" -> "And what currency does it use?") and
   generic follow-ups ("Why?", "Can you say that again more briefly?").
2. **Held-out split**: each dialogue's first question has an *entity key* (:func:`entity_key`: a country, a
   word, an animal, a machine, a topic, ... or else the normalized question), and a seeded hash of that key
   decides the split, so every question about a held-out entity is held out. Follow-up *templates* are split
   the same way (held-out dialogues use only held-out follow-up phrasings). Finally, any train dialogue that
   shares a question (after :func:`~freeze_omni.data.text.normalize_text`) with a held-out one is dropped, so
   held-out questions never appear in train. All of it is a deterministic function of the arguments.
3. **Answers** (:func:`generate_answers`) are written by the frozen LLM itself from the *text* question with
   the system prompt (greedy by default), round by round so that later rounds see the earlier (question,
   answer) pairs. Every finished dialogue is appended to ``answers.jsonl``; a rerun skips the ids already
   there (when their questions and generation settings match). A dialogue whose answer is empty or ran into
   ``max_new_tokens`` without finishing is recorded as dropped (and not retried).
4. **Speech** for the questions: :func:`freeze_omni.data.synth.synth_corpus` (resumable, parallel) with one
   voice per dialogue (each turn with its own small rate/pitch jitter) drawn from the train voices or, for
   the held-out split, from the held-out voices.
5. **State labels** (facts §1.6): :func:`chunk_labels` gives one label per 160 ms chunk of a user turn: 0
   for every chunk but the last, which is 1 (answer now) or, for state-2 clips, 2 (do not answer).

Trailing silence (TTS leaves 0.1–0.3 s): the end of the turn is the end of speech found by an energy
threshold (:func:`speech_end`, stored per turn as ``speech_end``), **not** the end of the file. The chunk
that contains the end of speech is the last chunk of the turn and gets the final label; the chunks after it
are **trimmed** from the turn (:func:`turn_audio` cuts the wave to ``len(labels)`` chunks, zero-padding a short
one). So the label-1 chunk holds the last 0–160 ms of speech plus what silence follows inside that chunk,
and an end detected within that chunk or the next one is within the "2 chunks of the true end" aim.
``end_pad_chunks=k`` keeps ``k`` more chunks after it, labelled with the final label too (a softer target
when the live model should also answer on the silence right after speech).

State-2 material (:func:`plan_state2`, :func:`make_state2`): stationary noise (white/pink/brown), babble made
of other utterances of the same split, cough-like bursts, knocks, backchannels ("uh-huh", "mm-hmm", ...) and
side talk not addressed to the assistant ("Honey, did you feed the dog?"), the spoken kinds synthesized with
the user voices; held-out clips use held-out texts (backchannels and side-talk templates are split) and
held-out voices.

Files under ``OUT`` (:func:`build_qa`): ``dialogues.jsonl`` (the plan), ``answers.jsonl`` (resumable LLM
output), ``wav/`` + ``speech_manifest.jsonl`` (question speech), ``state2/wav/`` + ``state2/manifest.jsonl``,
and the manifests for training: ``qa_train.jsonl``, ``qa_heldout.jsonl`` (one dialogue per line,
``{"id", "split", "kind", "speaker", "turns": [{"question", "answer", "audio", "duration", "speech_end"}]}``),
``state2_train.jsonl``, ``state2_heldout.jsonl`` (``{"id", "audio", "kind", "text", "split", "duration",
"speech_end", "speaker"}``). Audio paths are relative to the manifest's folder. Read them back with
:func:`read_qa_manifest` / :func:`read_state2_manifest`, which skip rows whose audio is unreadable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import soundfile as sf

from freeze_omni.data import corpus as C
from freeze_omni.data.manifest import append_rows, read_manifest, write_manifest
from freeze_omni.data.text import normalize_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CHUNK_SECONDS = 0.16  # one state decision per 160 ms chunk (facts §1.6)
QA_KINDS = ("questions", "countries", "wordnet", "numbers", "chitchat")
SPLITS = ("train", "heldout")

# --------------------------------------------------------------------------------------------------------------
# State labels


def chunk_labels(duration_seconds: float, chunk_seconds: float = CHUNK_SECONDS, end_pad_chunks: int = 0,
                 final_label: int = 1) -> list[int]:
    """State labels of a user turn whose speech ends at ``duration_seconds`` (use :func:`speech_end`).

    The turn has ``ceil(duration / chunk)`` chunks (at least 1): the last one contains the end of speech and
    gets ``final_label`` (1: answer now; 2: do not answer), all the others 0. ``end_pad_chunks`` more
    chunks follow it, labelled ``final_label`` too. The audio of the turn must be cut to
    ``len(labels) * chunk_seconds`` (:func:`turn_audio`): chunks past that are not part of the turn.

    Example::

        >>> chunk_labels(0.5)   # chunks [0, .16), [.16, .32), [.32, .48), [.48, .64): speech ends in the 4th
        [0, 0, 0, 1]
        >>> chunk_labels(0.32, end_pad_chunks=1, final_label=2)
        [0, 2, 2]
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
    if end_pad_chunks < 0:
        raise ValueError(f"end_pad_chunks must be >= 0, got {end_pad_chunks}")
    n = max(1, math.ceil(round(max(0.0, float(duration_seconds)) / chunk_seconds, 6)))
    return [0] * (n - 1) + [int(final_label)] * (1 + end_pad_chunks)


def _frame_rms(wave: np.ndarray, frame: int, hop: int) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float64)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    return np.sqrt(np.mean(x[idx] ** 2, axis=1))


def speech_end(wave: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0, frame_seconds: float = 0.02,
               hop_seconds: float = 0.01, abs_floor: float = 1e-4) -> float:
    """Where the sound of ``wave`` ends, in seconds: the end of the last frame whose RMS is above a threshold.

    The threshold is the highest of: ``threshold_db`` below the loudest 20 ms frame; twice the noise floor
    (the 5th percentile of frame RMS, capped at 20 dB below the loudest frame so that stationary noise clips
    count as sound); ``abs_floor``. On TTS output (espeak-ng: digital silence; flite: a floor about 44 dB
    down) this lands within ~20 ms of where the last phone fades out. Compute it on clean audio: noise
    added later (augmentation) does not move the end of the turn. Silent audio gives 0.0.
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        return 0.0
    frame, hop = max(1, int(round(frame_seconds * sr))), max(1, int(round(hop_seconds * sr)))
    rms = _frame_rms(x, frame, hop)
    peak = float(rms.max())
    if peak <= abs_floor:
        return 0.0
    floor = min(2.0 * float(np.percentile(rms, 5)), peak * 10 ** (-20 / 20))
    thr = max(peak * 10 ** (threshold_db / 20), floor, abs_floor)
    active = np.nonzero(rms > thr)[0]
    if len(active) == 0:
        return 0.0
    return float(min(len(x) / sr, (active[-1] * hop + frame) / sr))


def turn_audio(wave: np.ndarray, end_seconds: float, sr: int = SAMPLE_RATE, chunk_seconds: float = CHUNK_SECONDS,
               end_pad_chunks: int = 0, final_label: int = 1) -> tuple[np.ndarray, list[int]]:
    """A user turn ready for training: the wave cut (or zero-padded) to whole chunks, and its chunk labels.

    Args:
        wave: ``[T]`` float samples at ``sr``.
        end_seconds: the end of speech (a manifest's ``speech_end``, or :func:`speech_end`).

    Returns:
        ``(wave [len(labels) * chunk_seconds * sr], labels)``.
    """
    labels = chunk_labels(end_seconds, chunk_seconds, end_pad_chunks, final_label)
    n = int(round(len(labels) * chunk_seconds * sr))
    x = np.asarray(wave, dtype=np.float32)[:n]
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    return x, labels


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
    """``n`` dialogues (about ``multi_frac`` of them 2–3 rounds), split by entity (see the module docstring).

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


# --------------------------------------------------------------------------------------------------------------
# Answers from the frozen LLM


def _gen_fingerprint(llm_name: str, system: str, sampling: Any) -> str:
    fields = {k: getattr(sampling, k) for k in ("greedy", "temperature", "top_k", "top_p", "max_new_tokens")
              if hasattr(sampling, k)}
    blob = json.dumps({"llm": llm_name, "system": system, "sampling": fields}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


def _answer_batch(llm: Any, questions: list[str], histories: list[list[tuple[str, str]]], system: str,
                  sampling: Any, batch_size: int) -> list[tuple[str, bool]]:
    """``(answer, finished)`` per question; ``finished`` is False when the answer ran into ``max_new_tokens``.

    Uses ``FrozenLLM.answer_ids`` (which says whether the end-of-turn token was sampled) when the LLM has it.
    With ``answer_text`` alone, an answer counts as unfinished when its re-tokenized length reaches
    ``max_new_tokens - 1`` (one token of slack for a decode/encode round trip that merges two tokens).
    """
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    if any(histories):
        kwargs["history"] = histories
    if hasattr(llm, "answer_ids"):
        return [(llm.decode(ids).strip(), bool(fin))
                for ids, fin in llm.answer_ids(questions, system, sampling, **kwargs)]
    answers = llm.answer_text(questions, system, sampling, **kwargs)
    limit = max(1, int(sampling.max_new_tokens) - 1)
    return [(a, len(llm.tokenize(a)) < limit) for a in answers]


def read_answers(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The rows of an ``answers.jsonl`` by id (the last row of an id wins; a truncated last line is skipped)."""
    path = Path(path)
    return {r["id"]: r for r in read_manifest(path, resolve_audio=False) if "id" in r} if path.exists() else {}


def generate_answers(dialogues: Sequence[Dialogue], llm: Any | Callable[[], Any], out_path: str | os.PathLike,
                     system: str, sampling: Any, batch_size: int = 16, llm_name: str = "",
                     progress: bool = True) -> dict[str, Any]:
    """Answer every dialogue with the frozen LLM, round by round, appending each finished dialogue to
    ``out_path`` as ``{"id", "questions", "answers", "dropped", "gen"}``.

    Resumable: ids already in ``out_path`` with the same questions and generation settings (``llm_name``,
    ``system``, ``sampling``) are skipped. ``dropped`` is ``null``, ``"empty"`` or ``"truncated"`` (the answer
    hit ``sampling.max_new_tokens``); a dropped dialogue stops at that round and is not retried.

    Args:
        llm: a :class:`~freeze_omni.llm.backbone.FrozenLLM` (``answer_text``) or a function that returns one,
            called only when something is left to generate.
        batch_size: questions per forward pass; dialogues are processed ``4 · batch_size`` at a time.

    Returns:
        ``{"answers": path, "total", "existing", "generated", "dropped_empty", "dropped_truncated", "kept"}``.
    """
    out_path = Path(out_path)
    gen = _gen_fingerprint(llm_name, system, sampling)
    old = read_answers(out_path)
    todo = [d for d in dialogues
            if not (d.id in old and old[d.id].get("questions") == d.questions and old[d.id].get("gen") == gen)]
    if todo and callable(llm) and not hasattr(llm, "answer_text"):
        llm = llm()
    group = max(1, 4 * batch_size)
    todo_ids = {d.id for d in todo}
    rows = {d.id: old[d.id] for d in dialogues if d.id in old and d.id not in todo_ids}
    if todo:
        from tqdm import tqdm

        with tqdm(total=len(todo), desc="answers", unit="dlg", disable=not progress) as bar:
            for g in range(0, len(todo), group):
                part = todo[g:g + group]
                answers: dict[str, list[str]] = {d.id: [] for d in part}
                dropped: dict[str, str | None] = {d.id: None for d in part}
                for r in range(max(len(d.questions) for d in part)):
                    live = [d for d in part if dropped[d.id] is None and len(d.questions) > r]
                    if not live:
                        break
                    live.sort(key=lambda d: len(d.questions[r]))  # similar lengths batch together
                    hist = [list(zip(d.questions[:r], answers[d.id])) for d in live]
                    res = _answer_batch(llm, [d.questions[r] for d in live], hist, system, sampling, batch_size)
                    for d, (a, finished) in zip(live, res):
                        a = a.strip()
                        if not a:
                            dropped[d.id] = "empty"
                        elif not finished:
                            dropped[d.id] = "truncated"
                        else:
                            answers[d.id].append(a)
                new = [{"id": d.id, "questions": d.questions, "answers": answers[d.id], "dropped": dropped[d.id],
                        "gen": gen} for d in part]
                append_rows(out_path, new)
                rows.update({r["id"]: r for r in new})
                bar.update(len(part))
    kept = [r for r in rows.values() if r.get("dropped") is None]
    return {"answers": os.fspath(out_path), "total": len(dialogues), "existing": len(dialogues) - len(todo),
            "generated": len(todo), "kept": len(kept),
            "dropped_empty": sum(r.get("dropped") == "empty" for r in rows.values()),
            "dropped_truncated": sum(r.get("dropped") == "truncated" for r in rows.values())}


# --------------------------------------------------------------------------------------------------------------
# State-2 material: texts and sounds

#: Backchannels: display text -> what the TTS is given (espeak-ng spells consonant-only words letter by letter).
BACKCHANNELS = {
    "uh-huh": "uh-huh", "mm-hmm": "umhum", "hmm": "hmm", "yeah yeah": "yeah yeah", "right": "right",
    "okay": "okay", "ok ok": "okay okay", "I see": "I see", "oh": "oh", "ah": "ah", "wow": "wow", "sure": "sure",
    "got it": "got it", "uh": "uh", "um": "um", "huh": "huh", "yeah": "yeah", "yep": "yep",
    "right right": "right, right", "oh really": "oh, really", "no way": "no way", "mhm": "umhum",
    "uh-huh, yeah": "uh-huh, yeah", "alright": "alright", "cool": "cool", "oh okay": "oh, okay",
    "hmm, okay": "hmm, okay", "yes yes": "yes, yes", "sure sure": "sure, sure", "oh wow": "oh wow",
    "ah, I see": "ah, I see", "interesting": "interesting", "oh nice": "oh, nice", "yeah, totally": "yeah, totally",
    "mm": "um", "er": "er", "well": "well", "anyway": "anyway", "oh dear": "oh dear", "ha ha": "ha ha",
    "oops": "oops", "uh oh": "uh oh", "hmm hmm": "hmm, hmm", "yeah, right": "yeah, right", "okay, okay": "okay, okay",
    "go on": "go on", "I know": "I know", "exactly": "exactly", "true": "true", "fair enough": "fair enough",
    "mm, yeah": "um, yeah", "uh, well": "uh, well", "huh, okay": "huh, okay", "oh, right": "oh, right"}

_ADDRESS = ["Honey", "Mom", "Dad", "Sweetie", "Kids", "Guys", "Babe", "Buddy", "Emma", "Jake", "Sarah", "Tom",
            "Grandma", "Mike", "Lily", "Sam", "Dear", "Ben", "Anna", "Chris", "Grandpa", "Sis", "Jenny", "Max"]
_OBJECTS = ["keys", "remote", "charger", "scissors", "umbrella", "wallet", "blue bag", "laptop", "towel",
            "cereal", "milk", "salt", "tape", "ladder", "hammer", "book", "headphones", "jacket", "spoon", "lid"]
_COLORS = ["blue", "red", "green", "yellow", "black", "white", "gray", "pink", "orange", "purple", "brown"]
_ROOMS = ["kitchen", "garage", "car", "living room", "bathroom", "basement", "hallway", "bedroom", "office",
          "backyard", "closet", "drawer", "table", "counter", "shelf"]
_TIMES = ["six", "seven thirty", "noon", "five", "eight", "nine fifteen", "half past four", "ten", "three"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "tonight"]

#: Side talk: speech not addressed to the assistant. ``{addr}`` etc. are filled at random (:func:`_side_talk_fill`).
SIDE_TALK = [
    # to family and friends in the room
    "{addr}, did you feed the dog?", "{addr}, where did you put the car keys?", "{addr}, have you seen my phone?",
    "{addr}, are you ready to go?", "{addr}, can you turn the music down?", "{addr}, did you lock the back door?",
    "Who left the milk out again?", "{addr}, do you want pasta or rice tonight?",
    "{addr}, are you still on the phone?",
    "{addr}, did you call your grandmother back?", "Is the dryer done yet?", "{addr}, can you grab the mail?",
    "{addr}, did you take the trash out?", "{addr}, have you done your homework?",
    "{addr}, can you hand me that towel?",
    "Are we out of coffee again?", "Has anyone seen my glasses?", "{addr}, when are you getting home?",
    "{addr}, can you pick up some bread on the way?", "{addr}, dinner is ready!", "{addr}, turn off the TV, please.",
    "Put your shoes on, we're leaving.", "{addr}, don't forget your lunch.", "I'll be right there, {addr}.",
    "The baby is asleep, keep it down.", "{addr}, your mom called earlier.", "I'm going to the store, need anything?",
    "{addr}, it's your turn to do the dishes.", "{addr}, the package came today.",
    "{addr}, where did you put the {obj}?",
    "{addr}, can you pass me the {obj}?", "Did you move my {obj}?", "{addr}, the {obj} is in the {room}.",
    "{addr}, have you seen the {obj} anywhere?", "Don't touch the {obj}, it's wet.",
    "{addr}, bring me the {obj}, please.",
    "{addr}, come look at this!", "{addr}, hurry up, we're going to be late.", "{addr}, what time does the game start?",
    "{addr}, did you water the plants?", "{addr}, who's picking up the kids today?", "Is it raining out there, {addr}?",
    "{addr}, can you help me carry these bags?", "{addr}, we need to leave at {time}.", "{addr}, lunch is at {time}.",
    "{addr}, I'll see you {day}.", "{addr}, are we still on for {day}?", "Did you remember to buy milk, {addr}?",
    "{addr}, close the window, it's freezing.", "{addr}, the oven is still on.", "{addr}, stop it, both of you.",
    "{addr}, say thank you to your aunt.", "{addr}, where's the remote?", "{addr}, is that your jacket on the floor?",
    # on the phone
    "Hold on, I'm on the phone.", "Sorry, can I call you back in five minutes?", "Yeah, I'll be there around {time}.",
    "No, I said {day}, not next week.", "Hang on, let me find a pen.", "Can you hear me now?",
    "You're breaking up, I can't hear you.", "Okay, talk to you later, bye.", "Wait, say that again?",
    "I'm driving, can I call you later?", "Yes, speaking.", "Sure, put him on.",
    "No worries, just text me the address.",
    "I'm putting you on speaker.", "Sorry, wrong number.", "Hi, it's me, are you home?", "Did you get my message?",
    "Just a second, someone's at the door.", "Let me check my calendar and get back to you.",
    "No, that's fine, {day} works for me.", "Tell her I said hi.", "Okay, love you, bye.",
    "Hello? Hello? Are you there?", "I'll send it to you tonight.", "Can we move it to {day}?",
    "Sorry, I'm in a meeting, I'll call you back.", "Yeah, I know, I know.", "Oh no, really? When did that happen?",
    # directions to someone nearby
    "No, the {color} one, not that one.", "No, the {color} one, not the {color2} one.", "Put it on the {room}.",
    "A little to the left.", "Not that drawer, the other one.", "Careful, that's hot.", "Just leave it by the door.",
    "No, the big box goes upstairs.", "Hand me the one with the {color} lid.", "Pull, don't push.",
    "Okay, now lift it on three.", "Turn left at the next light.", "Park right here, behind the van.",
    "Wait for me, I'm coming.", "Go ahead, I'll catch up.", "Higher, higher, stop!", "Put the {obj} in the {room}.",
    "Move it a bit closer to the wall.", "Not there, over here.", "Hold the ladder for me.", "Slow down, slow down.",
    "Take the next exit.", "Watch out for the step.", "Leave the {obj} on the {room}.", "Try the {color} cable.",
    "Keep going straight.", "Is it plugged in?", "Press the other button.", "One more, and then we're done.",
    # self talk
    "Where did I put my glasses?", "Oh no, I forgot the milk.", "Okay, let me think.", "Hmm, where was I?",
    "Ugh, not again.", "Now what was I going to say?", "Let me see, two cups of flour.", "Oops, I dropped it.",
    "Oh, that's annoying.", "Come on, come on, load already.", "Right, keys, wallet, phone.",
    "I really need more coffee.", "Why is this so slow today?", "I should have taken the bus.", "Okay, focus.",
    "Wait, is it {day} already?", "Where did I leave the {obj}?", "I know I put the {obj} somewhere.",
    "Did I turn off the stove?", "Ah, there it is.", "Note to self, buy more milk.", "This printer hates me.",
    "Okay, one thing at a time.", "What was that noise?", "I can never find anything in this {room}.",
    "Shoot, I'm late.", "Let's see what's in the fridge.", "Hmm, maybe the {color} one.",
    # pets and children
    "Good boy, sit!", "No, Max, drop it!", "Who's a good dog?", "Stop chasing the cat.",
    "Come here, sweetie, let's get your coat on.", "Gentle with the baby.", "Kitty, get off the counter!",
    "Time for your bath.", "Don't eat that!", "Share with your sister.", "Use your inside voice, please.",
    "Brush your teeth and go to bed.", "Who wants a snack?", "Finish your vegetables first.",
    "No more cartoons today.", "Shoes off in the house, please.", "Go get your backpack.",
    # at the TV, in meetings, in shops
    "Oh come on, that was a foul!", "Did you see that?", "Sorry, go ahead, you were saying?",
    "Can everyone hear me?", "Let's take a five minute break.", "I'll send you the slides after the meeting.",
    "Excuse me, is this seat taken?", "Two coffees, please, to go.", "Thanks, keep the change.",
    "Can I get the check, please?", "Next slide, please.", "You're on mute.", "I think we lost {addr}.",
    "Can you share your screen?", "Let's pick this up {day}.", "Sorry, I have another call.",
    "No, I'm just looking, thanks.", "Do you have this in {color}?", "Could I have a bag, please?",
    "What a goal!", "Oh, this show again.", "Turn it up, I love this song.", "Shh, this is the best part.",
    "Table for two, please.", "Could we get some more water?", "Is this the line for the bus?",
    "Sorry, after you.", "Do you take cards?", "Excuse me, you dropped your glove.", "Paper or plastic? Paper's fine.",
    "Can you ring me up over here?", "How much for the {color} one?", "I'll just have the soup, thanks.",
    "Morning, Jim!", "Hey, long time no see!", "Nice to see you, {addr}.", "See you {day}, {addr}!",
    "Happy birthday, {addr}!", "Congratulations, you two!", "Thanks for coming, drive safe.",
    # work and school, to colleagues
    "{addr}, did you finish the report?", "Can you print that for me, {addr}?", "Who took my stapler?",
    "The meeting got moved to {time}.", "I'll be in the {room} if you need me.", "{addr}, is the coffee machine fixed?",
    "Let's grab lunch at {time}.", "Can you cover for me {day}?", "I'll email the client later.",
    "Did anyone order the pizza?", "Page twelve, everyone.", "Pencils down, please.", "Who's presenting first?",
    # cooking, chores, games
    "Stir it for another minute.", "Taste this, is it too salty?", "The water's boiling, {addr}.",
    "Pass me the {obj}, quick.", "Set the timer for ten minutes.", "Your move, {addr}.", "That's checkmate!",
    "Roll the dice, {addr}.", "No cheating this time.", "Whose turn is it to vacuum?", "Fold these and put them away.",
    "Don't forget to feed the fish.", "Help me flip the mattress.", "Hold the door, please!",
    "Okay kids, seatbelts on.", "Are we there yet?", "Who wants ice cream?", "Everybody say cheese!",
    "Smile, {addr}!", "Put that back where you found it.", "Quiet, the baby's sleeping.",
]


def _side_talk_fill(tpl: str, rng: np.random.Generator) -> str:
    color = C._pick(rng, _COLORS)
    return tpl.format(addr=C._pick(rng, _ADDRESS), obj=C._pick(rng, _OBJECTS), room=C._pick(rng, _ROOMS),
                      time=C._pick(rng, _TIMES), day=C._pick(rng, _DAYS), color=color,
                      color2=C._pick(rng, [c for c in _COLORS if c != color]))


STATE2_KINDS = {"side_talk": 0.4, "backchannel": 0.2, "noise": 0.12, "babble": 0.12, "cough": 0.1, "knock": 0.06}
_SPOKEN = ("side_talk", "backchannel")


@dataclass
class State2Item:
    """One planned state-2 clip; ``spoken`` is what the TTS says (spoken kinds only)."""

    id: str
    kind: str
    text: str
    split: str
    spoken: str = ""


def plan_state2(n: int, heldout_frac: float = 0.1, seed: int = 0, avoid: Iterable[str] = ()) -> list[State2Item]:
    """``n`` state-2 clips over :data:`STATE2_KINDS` (by their weights). Spoken kinds take their text from
    split template pools (held-out side-talk templates and backchannels never occur in train); sound kinds
    are held out at random. Texts whose normalized form is in ``avoid`` (e.g. the Q&A questions) are skipped.
    """
    avoid = {normalize_text(a) for a in avoid}
    kinds = list(STATE2_KINDS)
    counts = [int(n * STATE2_KINDS[k]) for k in kinds]
    for i in range(n - sum(counts)):
        counts[i % len(kinds)] += 1
    side = _partition(SIDE_TALK, heldout_frac, seed, "side_talk")
    back = _partition(list(BACKCHANNELS), heldout_frac, seed, "backchannel")
    rng = np.random.default_rng([seed, 201])
    items: list[State2Item] = []
    for kind, count in zip(kinds, counts):
        seen: set[str] = set()
        for j in range(count):
            split = "heldout" if rng.random() < heldout_frac else "train"
            text = spoken = ""
            if kind == "side_talk":
                fallback = ""
                for _ in range(50):  # a new text if possible, else a repeat; never one in ``avoid``
                    text = _side_talk_fill(C._pick(rng, side[split] or side["train"]), rng)
                    if normalize_text(text) in avoid:
                        text = ""
                    elif normalize_text(text) not in seen:
                        break
                    fallback = fallback or text
                text = text or fallback
                if not text:
                    continue
                seen.add(normalize_text(text))
                spoken = text
            elif kind == "backchannel":
                text = C._pick(rng, back[split] or back["train"])
                spoken = BACKCHANNELS[text]
            items.append(State2Item(f"s2_{kind}_{j:05d}", kind, text, split, spoken))
    return items


def _fade(x: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * sr))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _pad_and_level(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Scale to a random peak (-30..-3 dBFS) and add 50–200 ms of silence before, 100–300 ms after (like TTS)."""
    peak = float(np.abs(x).max()) or 1.0
    x = x / peak * 10 ** (rng.uniform(-30, -3) / 20)
    lead, trail = int(rng.uniform(0.05, 0.2) * sr), int(rng.uniform(0.1, 0.3) * sr)
    return np.concatenate([np.zeros(lead), x, np.zeros(trail)]).astype(np.float32)


def noise_clip(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Stationary white, pink or brown noise, 0.3–2.5 s with 20–100 ms fades, then level and silences."""
    from freeze_omni.data.augment import colored_noise

    n = int(rng.uniform(0.3, 2.5) * sr)
    x = colored_noise(n, C._pick(rng, ["white", "pink", "brown"]), rng)
    return _pad_and_level(_fade(x, sr, rng.uniform(0.02, 0.1)), rng, sr)


def cough_clip(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """1–3 cough-like bursts: band-passed noise with a sharp attack, an exponential decay and a voiced buzz."""
    from scipy.signal import butter, sosfilt

    parts = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.15, 0.4) * sr)
        t = np.arange(n) / sr
        lo = rng.uniform(150, 500)
        sos = butter(2, [lo, min(rng.uniform(1500, 5000), sr / 2 - 100)], btype="band", fs=sr, output="sos")
        noise = sosfilt(sos, rng.standard_normal(n))
        f0 = rng.uniform(90, 250)
        buzz = np.sign(np.sin(2 * np.pi * f0 * t)) * rng.uniform(0.0, 0.5) * np.std(noise)
        env = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.05, 0.15))
        parts.append((noise + buzz) * env)
        parts.append(np.zeros(int(rng.uniform(0.08, 0.25) * sr)))
    return _pad_and_level(np.concatenate(parts[:-1]), rng, sr)


def knock_clip(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """2–5 knocks or taps: clicks through a decaying resonance (a door, a table), 0.1–0.35 s apart."""
    parts = []
    f = rng.uniform(120, 900)
    for _ in range(int(rng.integers(2, 6))):
        n = int(0.12 * sr)
        t = np.arange(n) / sr
        knock = np.sin(2 * np.pi * f * t * rng.uniform(0.95, 1.05)) * np.exp(-t / rng.uniform(0.01, 0.04))
        knock += 0.3 * rng.standard_normal(n) * np.exp(-t / 0.005)
        parts.append(knock)
        parts.append(np.zeros(int(rng.uniform(0.1, 0.35) * sr)))
    return _pad_and_level(np.concatenate(parts[:-1]), rng, sr)


def babble_clip(rng: np.random.Generator, sources: Sequence[np.ndarray], sr: int = SAMPLE_RATE) -> np.ndarray:
    """3–6 other utterances overlapped at random offsets and gains (0.8–2.5 s): unintelligible background talk."""
    n = int(rng.uniform(0.8, 2.5) * sr)
    x = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):
        s = np.asarray(sources[int(rng.integers(len(sources)))], dtype=np.float64)
        if len(s) == 0:
            continue
        s = np.tile(s, -(-n // len(s)) + 1)
        start = int(rng.integers(len(s) - n + 1))
        x += s[start:start + n] * 10 ** (rng.uniform(-10, 0) / 20)
    return _pad_and_level(_fade(x, sr, 0.05), rng, sr)


# --------------------------------------------------------------------------------------------------------------
# Reading manifests back


def _audio_ok(path: Any) -> bool:
    if not isinstance(path, str):
        return False
    try:
        return sf.info(path).frames > 0
    except Exception:  # soundfile raises several types
        return False


def read_qa_manifest(path: str | os.PathLike, check_audio: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Read a Q&A manifest, skipping dialogues that cannot be used.

    A row is skipped when it has no turns, a turn lacks a ``question`` or ``answer`` string, or (with
    ``check_audio``) a turn's ``audio`` is missing, unreadable or empty. Rows without any ``audio`` (made with
    ``--skip-speech``) are kept. Audio paths come back absolute.

    Returns:
        ``(rows, skipped)``.
    """
    rows, skipped = [], 0
    for r in read_manifest(path):
        turns = r.get("turns")
        ok = isinstance(turns, list) and len(turns) > 0 and all(
            isinstance(t, dict) and isinstance(t.get("question"), str) and isinstance(t.get("answer"), str)
            and (not check_audio or "audio" not in t or _audio_ok(t["audio"])) for t in turns)
        if ok:
            rows.append(r)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unusable dialogue(s)", path, skipped)
    return rows, skipped


def read_state2_manifest(path: str | os.PathLike, check_audio: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Read a state-2 manifest; rows with missing/unreadable ``audio`` (when ``check_audio``) are skipped.

    Returns:
        ``(rows, skipped)``.
    """
    rows, skipped = [], 0
    for r in read_manifest(path):
        if "audio" in r and (not check_audio or _audio_ok(r["audio"])):
            rows.append(r)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unusable clip(s)", path, skipped)
    return rows, skipped


# --------------------------------------------------------------------------------------------------------------
# Speech and the whole pipeline


def _voice_pools(voices: Sequence[str], heldout_voices: Sequence[str]) -> dict[str, list[str]]:
    train = [v for v in voices if v not in set(heldout_voices)]
    if not train:
        raise ValueError("no voices left for the train split")
    return {"train": train, "heldout": list(heldout_voices) or train}


def _plan_speech(dialogues: Sequence[Dialogue], pools: Mapping[str, list[str]], seed: int,
                 engine_weights: Mapping[str, float] | None) -> list[Any]:
    """One :class:`SynthJob` per question turn; one voice per dialogue, rate/pitch jittered per turn."""
    from freeze_omni.data.synth import SynthJob, plan_jobs

    jobs = []
    for idx, d in enumerate(dialogues):
        base = plan_jobs([(idx, d.id)], pools[d.split], 1, seed, engine_weights)[0]
        rng = np.random.default_rng([seed, 301, idx])
        for k, q in enumerate(d.questions):
            rate = float(np.clip(base.rate * rng.uniform(0.93, 1.07), 0.6, 1.4))
            pitch = base.pitch + float(rng.uniform(-0.5, 0.5)) if not base.voice.startswith("piper:") else 0.0
            jobs.append(SynthJob(f"{d.id}_t{k}", q, base.voice, round(rate, 3), round(pitch, 2)))
    return jobs


def _speech_rows(manifest: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_manifest(manifest)} if manifest.exists() else {}


def _end_of(path: str) -> float:
    from freeze_omni.audio.io import load_audio

    return round(speech_end(load_audio(path, SAMPLE_RATE), SAMPLE_RATE), 3)


def make_state2(items: Sequence[State2Item], out_dir: str | os.PathLike, pools: Mapping[str, list[str]],
                babble_sources: Mapping[str, Sequence[str]] = {}, jobs: int = 2, seed: int = 0,
                engine_weights: Mapping[str, float] | None = None, timeout: float = 60.0,
                progress: bool = True) -> dict[str, Any]:
    """Make the state-2 clips into ``out_dir/wav`` and write ``out_dir/manifest.jsonl`` (resumable).

    Spoken kinds go through :func:`~freeze_omni.data.synth.synth_corpus` (``out_dir/tts_manifest.jsonl``)
    with the split's voices; sound kinds are generated here from a per-clip seed; babble mixes the clip's
    split's spoken state-2 clips plus ``babble_sources[split]`` (wav paths; e.g. the Q&A question audio).

    Returns:
        A summary with ``manifest``, ``total``, ``made`` per kind and ``failed``.
    """
    from freeze_omni.audio.io import load_audio, save_wav
    from freeze_omni.data.synth import SynthJob, plan_jobs, synth_corpus

    out_dir = Path(out_dir).resolve()
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    plan = []
    for idx, it in enumerate(items):
        if it.kind in _SPOKEN:
            j = plan_jobs([(idx, it.id)], pools[it.split], 1, seed + 7, engine_weights)[0]
            plan.append(SynthJob(it.id, it.spoken, j.voice, j.rate, j.pitch))
    tts = synth_corpus([], out_dir, [v for p in pools.values() for v in p], jobs=jobs, timeout=timeout,
                       progress=progress, plan=plan, manifest_name="tts_manifest.jsonl") if plan else \
        {"failed": 0, "errors": []}
    tts_rows = _speech_rows(out_dir / "tts_manifest.jsonl")
    sources: dict[str, list[str]] = {s: list(babble_sources.get(s, ())) for s in SPLITS}
    for it in items:
        if it.id in tts_rows:
            sources[it.split].append(tts_rows[it.id]["audio"])
    cache: dict[str, np.ndarray] = {}

    def src_waves(split: str, rng: np.random.Generator) -> list[np.ndarray]:
        paths = sources[split] or sources["train"]
        chosen = [paths[int(i)] for i in rng.choice(len(paths), size=min(8, len(paths)), replace=False)]
        for p in chosen:
            if p not in cache:
                try:
                    cache[p] = load_audio(p, SAMPLE_RATE)
                except Exception:
                    cache[p] = np.zeros(0, dtype=np.float32)
        return [cache[p] for p in chosen if len(cache[p])]

    rows, failed, made = [], int(tts.get("failed", 0)), {k: 0 for k in STATE2_KINDS}
    for idx, it in enumerate(items):
        wav = wav_dir / f"{it.id}.wav"
        speaker = ""
        if it.kind in _SPOKEN:
            r = tts_rows.get(it.id)
            if r is None:
                continue
            speaker = r.get("speaker", "")
        elif not _audio_ok(os.fspath(wav)):
            rng = np.random.default_rng([seed, 401, idx])
            if it.kind == "noise":
                x = noise_clip(rng)
            elif it.kind == "cough":
                x = cough_clip(rng)
            elif it.kind == "knock":
                x = knock_clip(rng)
            else:
                srcs = src_waves(it.split, rng) if any(sources.values()) else []
                if not srcs:
                    failed += 1
                    continue
                x = babble_clip(rng, srcs)
            save_wav(wav, x, SAMPLE_RATE)
        info = sf.info(os.fspath(wav))
        made[it.kind] += 1
        rows.append({"id": it.id, "audio": os.fspath(wav), "kind": it.kind, "text": it.text, "split": it.split,
                     "duration": round(info.frames / info.samplerate, 3), "speech_end": _end_of(os.fspath(wav)),
                     "speaker": speaker})
    write_manifest(out_dir / "manifest.jsonl", rows)
    return {"manifest": os.fspath(out_dir / "manifest.jsonl"), "total": len(items), "made": made,
            "failed": failed, "errors": tts.get("errors", [])[:5], "rows": rows}


def build_qa(out: str | os.PathLike, n: int = 3000, multi_frac: float = 0.3, heldout_frac: float = 0.1,
             llm: Any | Callable[[], Any] | None = None, llm_name: str = "", system: str = "",
             sampling: Any = None, batch_size: int = 16, state2: int = 400, voices: Sequence[str] = (),
             heldout_voices: Sequence[str] = (), jobs: int = 2, seed: int = 0, skip_speech: bool = False,
             engine_weights: Mapping[str, float] | None = None, wordnet_dir: str = C.WORDNET_DIR,
             timeout: float = 60.0, progress: bool = True) -> dict[str, Any]:
    """The whole stage-3 data set under ``out`` (see the module docstring); every step resumes.

    Args:
        llm: a FrozenLLM or a function returning one (loaded only when answers are missing).
        llm_name, system, sampling: what the answers are generated with (``sampling.max_new_tokens`` is the
            answer budget); the name and prompt are recorded in ``qa_meta.json``.
        voices: voice specs for the train split; ``heldout_voices`` (kept out of ``voices`` for training)
            speak the held-out split, or the train voices when empty.
        skip_speech: text only (no wav, no state-2 clips; manifest turns have no ``audio``).

    Returns:
        A JSON-able summary.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    dialogues = plan_dialogues(n, multi_frac, heldout_frac, seed, wordnet_dir)
    write_manifest(out / "dialogues.jsonl", [d.to_row() for d in dialogues])
    ans = generate_answers(dialogues, llm, out / "answers.jsonl", system, sampling, batch_size, llm_name, progress)
    answers = read_answers(out / "answers.jsonl")
    kept = [d for d in dialogues if d.id in answers and answers[d.id].get("dropped") is None
            and answers[d.id].get("questions") == d.questions and len(answers[d.id]["answers"]) == len(d.questions)]
    summary: dict[str, Any] = {"out": os.fspath(out), "planned": len(dialogues), "answers": {
        k: v for k, v in ans.items() if k != "answers"}}
    speech: dict[str, dict[str, Any]] = {}
    if not skip_speech:
        from freeze_omni.data.synth import synth_corpus

        pools = _voice_pools(voices, heldout_voices)
        plan = _plan_speech(kept, pools, seed, engine_weights)
        res = synth_corpus([], out, [v for p in pools.values() for v in p], jobs=jobs, timeout=timeout,
                           progress=progress, plan=plan, manifest_name="speech_manifest.jsonl")
        speech = _speech_rows(out / "speech_manifest.jsonl")
        summary["speech"] = {k: res[k] for k in ("total", "existing", "synthesized", "failed", "hours", "errors")}
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    no_audio = 0
    for d in kept:
        a = answers[d.id]["answers"]
        turns = []
        for k, (q, ans_k) in enumerate(zip(d.questions, a)):
            t: dict[str, Any] = {"question": q, "answer": ans_k}
            if not skip_speech:
                r = speech.get(f"{d.id}_t{k}")
                if r is None:
                    break
                t.update(audio=r["audio"], duration=r["duration"], speech_end=_end_of(r["audio"]))
            turns.append(t)
        if len(turns) < len(d.questions):
            no_audio += 1
            continue
        speaker = speech.get(f"{d.id}_t0", {}).get("speaker", "")
        by_split[d.split].append({"id": d.id, "split": d.split, "kind": d.kind, "speaker": speaker, "turns": turns})
    for s in SPLITS:
        write_manifest(out / f"qa_{s}.jsonl", by_split[s])
    summary.update(qa_train=len(by_split["train"]), qa_heldout=len(by_split["heldout"]),
                   multi_round=sum(len(r["turns"]) > 1 for rows in by_split.values() for r in rows),
                   missing_audio=no_audio)
    if not skip_speech and state2 > 0:
        items = plan_state2(state2, heldout_frac, seed, avoid=[q for d in dialogues for q in d.questions])
        src = {s: [t["audio"] for r in by_split[s] for t in r["turns"]] for s in SPLITS}
        res2 = make_state2(items, out / "state2", pools, src, jobs, seed, engine_weights, timeout, progress)
        for s in SPLITS:
            write_manifest(out / f"state2_{s}.jsonl", [r for r in res2["rows"] if r["split"] == s])
        summary["state2"] = {"train": sum(r["split"] == "train" for r in res2["rows"]),
                             "heldout": sum(r["split"] == "heldout" for r in res2["rows"]),
                             "by_kind": res2["made"], "failed": res2["failed"], "errors": res2["errors"]}
    meta = {"llm": llm_name, "system": system, "sampling": {k: getattr(sampling, k) for k in (
        "greedy", "temperature", "top_k", "top_p", "max_new_tokens") if hasattr(sampling, k)},
        "chunk_seconds": CHUNK_SECONDS, "seed": seed, "n": n, "multi_frac": multi_frac, "heldout_frac": heldout_frac,
        "voices": {"train": len(voices) - len(set(heldout_voices) & set(voices)), "heldout": list(heldout_voices)}}
    (out / "qa_meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    summary["files"] = sorted(p.name for p in out.glob("*.jsonl"))
    return summary

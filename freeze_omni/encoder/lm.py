"""A word n-gram language model for CTC beam search (`freeze-omni data lm` builds one from a text corpus).

Interpolated absolute discounting (Ney et al. 1994): every order mixes its discounted counts with the next lower
order, down to a uniform distribution over the vocabulary plus ``<unk>``, so any word (in or out of the
vocabulary) has a finite probability. Stored as gzip text, one n-gram count per line::

    #freeze-omni-ngram order=3 discount=0.7
    <s> what\tis\t412

(context words, a tab, the word, a tab, the count). Small enough for a bundle: the tiny-en corpus gives ~0.5 MB.
"""

from __future__ import annotations

import gzip
import math
import os
from collections import defaultdict
from functools import lru_cache
from typing import Iterable

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
HEADER = "#freeze-omni-ngram"


class NgramLM:
    """Word n-gram LM: ``logprob(history, word)`` in natural log."""

    def __init__(self, counts: dict[tuple[str, ...], dict[str, int]], order: int = 3, discount: float = 0.7) -> None:
        if order < 1:
            raise ValueError("order must be >= 1")
        if not 0.0 < discount < 1.0:
            raise ValueError("discount must be in (0, 1)")
        self.order, self.discount = order, discount
        self.counts = counts
        self._totals = {ctx: sum(ws.values()) for ctx, ws in counts.items()}
        self.vocab = frozenset(w for w in counts.get((), {}) if w != EOS)
        self.prefixes = frozenset(w[:i] for w in self.vocab for i in range(1, len(w) + 1))
        self._uniform = 1.0 / (len(self.vocab) + 2)  # vocabulary + </s> + <unk>
        self.logprob = lru_cache(maxsize=200_000)(self._logprob)

    # -- building --------------------------------------------------------------------------------------------------
    @classmethod
    def train(cls, sentences: Iterable[str], order: int = 3, discount: float = 0.7) -> "NgramLM":
        """Count n-grams of whitespace-split ``sentences`` (already normalised), padded with <s> and </s>."""
        counts: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for line in sentences:
            words = [BOS] * (order - 1) + line.split() + [EOS]
            if len(words) == order:  # empty line
                continue
            for i in range(order - 1, len(words)):
                for n in range(order):  # context lengths 0 .. order-1
                    counts[tuple(words[i - n:i])][words[i]] += 1
        return cls({c: dict(ws) for c, ws in counts.items()}, order, discount)

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _prob(self, ctx: tuple[str, ...], word: str) -> float:
        lower = self._prob(ctx[1:], word) if ctx else self._uniform
        ws = self.counts.get(ctx)
        if not ws:
            return lower
        total = self._totals[ctx]
        d = self.discount
        return max(ws.get(word, 0) - d, 0.0) / total + d * len(ws) / total * lower

    def _logprob(self, history: tuple[str, ...], word: str) -> float:
        ctx = tuple(history[-(self.order - 1):]) if self.order > 1 else ()
        if len(ctx) < self.order - 1:
            ctx = (BOS,) * (self.order - 1 - len(ctx)) + ctx
        w = word if word in self.vocab or word == EOS else UNK
        return math.log(self._prob(ctx, w))

    def sentence_logprob(self, sentence: str) -> float:
        hist: tuple[str, ...] = ()
        total = 0.0
        for w in sentence.split() + [EOS]:
            total += self.logprob(hist, w)
            hist = (hist + (w,))[-(self.order - 1):] if self.order > 1 else ()
        return total

    def perplexity(self, sentences: Iterable[str]) -> float:
        lp, n = 0.0, 0
        for s in sentences:
            lp += self.sentence_logprob(s)
            n += len(s.split()) + 1
        return math.exp(-lp / max(n, 1))

    # -- files -----------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp"
        lines = [f"{HEADER} order={self.order} discount={self.discount}\n"]
        lines += [f"{' '.join(ctx)}\t{w}\t{c}\n" for ctx in sorted(self.counts)
                  for w, c in sorted(self.counts[ctx].items())]
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write("".join(lines).encode("utf-8"))  # no name, no time: the same LM gives the same bytes
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NgramLM":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            head = f.readline().split()
            if not head or head[0] != HEADER:
                raise ValueError(f"{path}: not a freeze-omni n-gram file")
            opts = dict(kv.split("=", 1) for kv in head[1:])
            counts: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
            for line in f:
                ctx, w, c = line.rstrip("\n").split("\t")
                counts[tuple(ctx.split())][w] = int(c)
        return cls(dict(counts), int(opts["order"]), float(opts["discount"]))


def build_lm(texts: str | os.PathLike, out: str | os.PathLike, order: int = 3, discount: float = 0.7,
             heldout: str | os.PathLike | None = None, bundle: str | os.PathLike | None = None,
             beam: dict | None = None) -> dict:
    """Train an :class:`NgramLM` on a text file (one utterance per line, normalised here) and save it.

    With ``bundle``, ``out`` is a file name inside that bundle: the LM becomes its ``lm`` component and ``beam``
    (``BeamSettings`` fields) its ``ctc.beam`` settings, so ``transcribe`` decodes with it by default.
    """
    from freeze_omni.data.text import normalize_text

    with open(texts, encoding="utf-8") as f:
        lines = [t for t in (normalize_text(x) for x in f) if t]
    lm = NgramLM.train(lines, order, discount)
    path = os.path.join(bundle, out) if bundle else out
    lm.save(path)
    result: dict = {"out": str(path), "sentences": len(lines), "vocab": len(lm.vocab), "order": order,
                    "bytes": os.path.getsize(path)}
    if heldout:
        with open(heldout, encoding="utf-8") as f:
            held = [t for t in (normalize_text(x) for x in f) if t]
        words = [w for s in held for w in s.split()]
        result["heldout_perplexity"] = round(lm.perplexity(held), 2)
        result["heldout_oov_rate"] = round(sum(w not in lm.vocab for w in words) / max(len(words), 1), 4)
    if bundle:
        from freeze_omni.bundle import Bundle, write_bundle_config

        ctc = dict(Bundle(bundle).config.get("ctc", {}))
        ctc["beam"] = dict(beam or {})
        write_bundle_config(bundle, {"ctc": ctc, "components": {"lm": os.path.basename(out)}})
    return result

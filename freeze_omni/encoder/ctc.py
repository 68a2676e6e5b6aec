"""Character CTC: tokenizer, head, and two decoders that work chunk by chunk: greedy, and a prefix beam search
that can add a word n-gram LM (:class:`~freeze_omni.encoder.lm.NgramLM`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from freeze_omni.encoder.lm import NgramLM

import torch
from torch import nn

BLANK = 0
DEFAULT_CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Blank (id 0) + one id per character. Text is normalised first (lowercase, numbers as words...)."""

    def __init__(self, chars: str = DEFAULT_CHARS) -> None:
        self.chars = chars
        self._ids = {c: i + 1 for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        from freeze_omni.data.text import normalize_text

        return [self._ids[c] for c in normalize_text(text) if c in self._ids]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars)).strip()


class CTCHead(nn.Module):
    """Linear projection of encoder frames to CTC log-probabilities."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` -> ``[B, T, V]`` log-probabilities."""
        return self.proj(x).log_softmax(dim=-1)


@dataclass
class GreedyCTCState:
    """Streaming greedy CTC: the previous frame's label (for collapsing across chunks) and the ids so far."""

    prev: int = BLANK
    ids: list[int] = field(default_factory=list)

    def update(self, log_probs: torch.Tensor) -> list[int]:
        """Consume ``[T, V]`` log-probs of one chunk; returns the ids newly emitted."""
        new = []
        for label in log_probs.argmax(dim=-1).tolist():
            if label != BLANK and label != self.prev:
                new.append(label)
            self.prev = label
        self.ids.extend(new)
        return new

    def finalize(self) -> list[int]:
        """End of the utterance (nothing pending for greedy)."""
        return self.ids


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Batch greedy CTC: ``[B, T, V]`` -> list of id sequences."""
    out = []
    for lp, n in zip(log_probs, lengths.tolist()):
        st = GreedyCTCState()
        st.update(lp[:n])
        out.append(st.ids)
    return out


NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass
class BeamSettings:
    """Prefix beam search: ``beam`` prefixes kept per frame; with an LM each word adds ``alpha`` × its log
    probability + ``beta``, and a word outside the LM's vocabulary costs ``oov_penalty`` more; a character whose
    frame log-prob is below the frame's best − ``prune`` is not tried."""

    beam: int = 16
    alpha: float = 0.5
    beta: float = 1.0
    oov_penalty: float = 0.0
    prune: float = 10.0


@dataclass
class _LMState:
    score: float  # alpha-weighted LM log-probs + beta per word, including a pending out-of-vocabulary charge
    history: tuple[str, ...]
    partial: str
    oov: float  # charge already paid for the partial word leaving the lexicon (refunded when it completes)


class BeamCTCState:
    """Streaming CTC prefix beam search (Hannun et al. 2014), frame-synchronous, optionally with a word LM.

    Same interface as :class:`GreedyCTCState`: ``update`` per chunk, ``ids`` is the best prefix so far,
    ``finalize`` adds the end-of-sentence LM score and settles the result.
    """

    def __init__(self, chars: str, lm: Optional["NgramLM"] = None, settings: BeamSettings | None = None) -> None:
        self.chars, self.lm, self.cfg = chars, lm, settings or BeamSettings()
        self.space = chars.index(" ") + 1 if " " in chars else -1
        self.beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix -> (blank, non-blank)
        self.lm_states: dict[tuple[int, ...], _LMState] = {(): _LMState(0.0, (), "", 0.0)}
        self.ids: list[int] = []

    # -- LM bookkeeping ------------------------------------------------------------------------------------------
    def _push(self, history: tuple[str, ...], word: str) -> tuple[str, ...]:
        return (history + (word,))[-max(self.lm.order - 1, 1):]

    def _word_score(self, history: tuple[str, ...], word: str) -> float:
        return self.cfg.alpha * self.lm.logprob(history, word) + self.cfg.beta

    def _extend(self, prefix: tuple[int, ...], c: int) -> None:
        new = prefix + (c,)
        if new in self.lm_states:
            return
        st = self.lm_states[prefix]
        if self.lm is None:
            self.lm_states[new] = st
            return
        if c == self.space:
            if not st.partial:  # leading or doubled space: nothing to score
                self.lm_states[new] = st
                return
            score = st.score - st.oov + self._word_score(st.history, st.partial)
            self.lm_states[new] = _LMState(score, self._push(st.history, st.partial), "", 0.0)
            return
        partial = st.partial + self.chars[c - 1]
        oov = st.oov
        score = st.score
        if not oov and partial not in self.lm.prefixes:  # left the lexicon: charge an unknown word now
            oov = self._word_score(st.history, "<unk>") - self.cfg.beta - self.cfg.oov_penalty
            score += oov
        self.lm_states[new] = _LMState(score, st.history, partial, oov)

    def _total(self, prefix: tuple[int, ...], pb: float, pnb: float) -> float:
        return _logaddexp(pb, pnb) + self.lm_states[prefix].score

    # -- decoding --------------------------------------------------------------------------------------------------
    def update(self, log_probs: torch.Tensor) -> list[int]:
        """Consume ``[T, V]`` log-probs of one chunk. Returns ``[]``: the best prefix may still change (``ids``)."""
        for frame in log_probs.tolist():
            floor = max(frame) - self.cfg.prune
            cands = [c for c in range(1, len(frame)) if frame[c] >= floor]
            nxt: dict[tuple[int, ...], list[float]] = {}

            def add(p: tuple[int, ...], blank: float, nonblank: float) -> None:
                cur = nxt.get(p)
                if cur is None:
                    nxt[p] = [blank, nonblank]
                else:
                    cur[0], cur[1] = _logaddexp(cur[0], blank), _logaddexp(cur[1], nonblank)

            for prefix, (pb, pnb) in self.beams.items():
                total = _logaddexp(pb, pnb)
                add(prefix, total + frame[BLANK], NEG_INF)
                last = prefix[-1] if prefix else None
                for c in cands:
                    lp = frame[c]
                    if c == last:
                        add(prefix, NEG_INF, pnb + lp)  # repeated label without blank collapses
                        if pb > NEG_INF:
                            self._extend(prefix, c)
                            add(prefix + (c,), NEG_INF, pb + lp)
                    else:
                        self._extend(prefix, c)
                        add(prefix + (c,), NEG_INF, total + lp)
            ranked = sorted(nxt.items(), key=lambda kv: self._total(kv[0], *kv[1]), reverse=True)
            self.beams = {p: (v[0], v[1]) for p, v in ranked[: self.cfg.beam]}
        self._prune_lm_states()
        self.ids = list(next(iter(self.beams)))  # beams are kept best first
        return []

    def _prune_lm_states(self) -> None:
        self.lm_states = {p: self.lm_states[p] for p in self.beams}

    def finalize(self) -> list[int]:
        """Close the last word and add the end-of-sentence probability; returns the best ids."""
        def final(p: tuple[int, ...]) -> float:
            pb, pnb = self.beams[p]
            st = self.lm_states[p]
            score = _logaddexp(pb, pnb) + st.score
            if self.lm is not None:
                hist = st.history
                if st.partial:
                    score += self._word_score(hist, st.partial) - st.oov
                    hist = self._push(hist, st.partial)
                score += self.cfg.alpha * self.lm.logprob(hist, "</s>")
            return score

        self.ids = list(max(self.beams, key=final))
        return self.ids


def new_ctc_decoder(chars: str, lm: Optional["NgramLM"] = None, settings: BeamSettings | None = None,
                    greedy: bool = False) -> GreedyCTCState | BeamCTCState:
    """Greedy when asked (or when there is neither an LM nor beam settings), else a beam search."""
    if greedy or (lm is None and settings is None):
        return GreedyCTCState()
    return BeamCTCState(chars, lm, settings)

"""Character CTC: tokenizer, head, and greedy decoding that works chunk by chunk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

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


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Batch greedy CTC: ``[B, T, V]`` -> list of id sequences."""
    out = []
    for lp, n in zip(log_probs, lengths.tolist()):
        st = GreedyCTCState()
        st.update(lp[:n])
        out.append(st.ids)
    return out

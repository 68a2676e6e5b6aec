"""Next-token sampling for the frozen LLM's text answer (upstream Freeze-Omni's order).

Upstream (``reference/freeze_omni_facts.md`` §1.5) samples as: temperature -> softmax -> top-k renormalise ->
top-p (always keeping the most likely token) -> multinomial. ``greedy=True`` or ``temperature == 0`` is argmax,
so that the speech and text modalities can be compared answer for answer (DESIGN.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    """How to pick each answer token.

    Attributes:
        greedy: argmax decoding (deterministic); same as ``temperature=0``.
        temperature: logits are divided by it before the softmax; ``0`` means greedy.
        top_k: keep the ``top_k`` most likely tokens (``<= 0`` or ``>= V``: all).
        top_p: nucleus: keep the smallest prefix of the sorted, top-k renormalised distribution whose mass
            reaches ``top_p``; the most likely token is always kept (``>= 1``: all).
        max_new_tokens: answer length limit, in tokens (the end-of-turn token not counted).
    """

    greedy: bool = False
    temperature: float = 0.7
    top_k: int = 20
    top_p: float = 0.8
    max_new_tokens: int = 128

    @property
    def is_greedy(self) -> bool:
        """True when sampling reduces to argmax."""
        return self.greedy or self.temperature <= 0.0


def sample_next(
    logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick the next token of every row.

    Args:
        logits: ``[B, V]`` next-token logits (any float dtype; computed in fp32).
        cfg: the sampling settings.
        generator: random generator for reproducible sampling (must live on ``logits.device``); ignored when
            greedy.

    Returns:
        ``[B]`` long token ids.

    Example (top-k 1 is argmax whatever the temperature)::

        >>> logits = torch.tensor([[0.1, 2.0, -1.0]])
        >>> sample_next(logits, SamplingConfig(top_k=1)).tolist()
        [1]
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    if cfg.is_greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)  # [B, V]
    V = probs.shape[-1]
    k = V if cfg.top_k <= 0 else min(cfg.top_k, V)
    probs, idx = torch.topk(probs, k, dim=-1)  # [B, k], sorted descending
    probs = probs / probs.sum(dim=-1, keepdim=True)  # top-k renormalise
    if cfg.top_p < 1.0:
        # Drop a token when the mass of the tokens strictly before it already exceeds top_p;
        # the first (most likely) token has zero mass before it, so it always survives.
        before = probs.cumsum(dim=-1) - probs  # [B, k]
        probs = probs.masked_fill(before > cfg.top_p, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    choice = torch.multinomial(probs, 1, generator=generator)  # [B, 1] index into the top-k list
    return idx.gather(-1, choice).squeeze(-1)

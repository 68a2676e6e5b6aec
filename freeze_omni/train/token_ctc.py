"""Token CTC: read the adapter's outputs through the frozen LLM's own token embeddings.

Stage 2 alone asks the frozen LLM to *infer* the words from whatever the adapter writes, through 30 frozen layers;
that gradient is weak and the LLM's transcript CE stalls (tiny-en: ≈ 2.2 nats per token). This auxiliary loss
asks the adapter directly for text-like inputs: at every adapter position (12.5 per second) a distribution over
the LLM's vocabulary plus a blank is formed from distances to the LLM's input embedding table,

    logit_k(a) = -scale · ‖a - e_k‖²      (e_blank: one trainable vector)

and CTC aligns it with the LLM's tokenization of what was said. An adapter output that wins a token is the
embedding nearest to it among the batch's vocabulary, so the frozen LLM receives vectors close to the tokens it
was trained on, in order, with blanks between them. The softmax runs over the tokens of the batch's transcripts
plus ``negatives`` random other tokens (a sampled softmax: the full 49 k table costs more than the rest of a
step). Nothing of it is used at inference: the adapter alone carries what it learned.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from freeze_omni.encoder.ctc import greedy_decode


def distance_logits(audio: torch.Tensor, vocab: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``-scale · ‖a - e_k‖²`` for adapter outputs ``audio [..., T, H]`` against ``vocab [V, H]`` -> ``[..., T, V]``."""
    d2 = audio.pow(2).sum(-1, keepdim=True) - 2 * audio @ vocab.T + vocab.pow(2).sum(-1)
    return -scale * d2


class TokenCTC(nn.Module):
    def __init__(self, table: torch.Tensor, negatives: int = 2048, init_scale: Optional[float] = None) -> None:
        """``table``: the frozen LLM's input embedding weight ``[V, H]`` (referenced, never trained or saved)."""
        super().__init__()
        self._table = [table]  # a list: not a registered parameter or buffer (113 MB for SmolLM2)
        std = float(table.float().std())
        self.blank = nn.Parameter(torch.randn(table.shape[1]) * std)
        # Squared distances between embeddings are ≈ 2·H·std²; start with logits of a few units across them.
        scale = init_scale if init_scale is not None else 4.0 / (2 * table.shape[1] * std * std)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.negatives = negatives

    @property
    def table(self) -> torch.Tensor:
        return self._table[0]

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]],
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC loss (mean over utterances, per target token) and greedy token accuracy proxy.

        Args:
            audio: adapter outputs ``[B, T, H]``; lengths ``[B]``.
            targets: the LLM token ids of each utterance's transcript (an empty list: utterance left out).
        """
        keep = [i for i, t in enumerate(targets) if t]
        if not keep:
            z = audio.new_zeros(())
            return z, z
        ids = torch.tensor(sorted({i for t in targets for i in t}), dtype=torch.long)
        if self.negatives:
            neg = torch.randint(0, self.table.shape[0], (self.negatives,), generator=generator)
            ids = torch.unique(torch.cat([ids, neg]))
        vocab = torch.cat([self.blank[None].to(self.table.dtype), self.table[ids.to(self.table.device)]]).float()
        a = audio[keep].float()  # [B', T, H]
        logp = F.log_softmax(distance_logits(a, vocab, self.log_scale.exp()), dim=-1)  # [B', T, V'+1]
        where = {int(v): j + 1 for j, v in enumerate(ids.tolist())}
        tgt = [[where[i] for i in targets[k]] for k in keep]
        lens = lengths[keep].to(torch.long)
        loss = F.ctc_loss(logp.transpose(0, 1), torch.tensor([i for t in tgt for i in t], dtype=torch.long), lens,
                          torch.tensor([len(t) for t in tgt]), blank=0, reduction="mean", zero_infinity=True)
        with torch.no_grad():
            acc = _greedy_overlap(greedy_decode(logp, lens), tgt)
        return loss, acc


def _greedy_overlap(greedy: list[list[int]], tgt: list[list[int]]) -> torch.Tensor:
    """Share of target tokens found, in order-free bag terms, in the greedy CTC output (a cheap progress signal)."""
    hit = total = 0
    for out, t in zip(greedy, tgt):
        bag: dict[int, int] = {}
        for v in out:
            bag[v] = bag.get(v, 0) + 1
        for v in t:
            if bag.get(v, 0) > 0:
                bag[v] -= 1
                hit += 1
        total += len(t)
    return torch.tensor(hit / max(1, total))

"""Transformer pieces shared by the encoder families: sinusoids, attention (plain or upstream rel-pos), layers.

The attention takes the keys/values of earlier chunks from a cache, so the same layer serves training (one pass
over the utterance under a chunk mask) and streaming (one chunk at a time).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """ESPnet/wenet sinusoid table ``[len(positions), dim]``: even dims ``sin(p w_i)``, odd dims ``cos(p w_i)``,
    ``w_i = 10000^(-2i/dim)``."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)
                    * -(math.log(10000.0) / dim))
    ang = positions.to(torch.float32)[:, None] * div[None, :]
    pe = torch.zeros(positions.numel(), dim, device=positions.device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang)
    return pe


class ChunkAttention(nn.Module):
    """Multi-head self-attention over ``[cached keys | current chunk]``.

    With ``rel_pos=True`` it is the upstream Freeze-Omni variant ("rel-enc" without rel-shift): scores are
    ``((q + u) . k_j + (q + v) . p_j) / sqrt(d_k)`` where ``p_j = linear_pos(sinusoid(position of key j))`` and
    ``u``, ``v`` are learned per-head biases, i.e. an absolute key-position bias.
    """

    def __init__(self, d_model: int, n_heads: int, rel_pos: bool = False, k_bias: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        assert d_model % n_heads == 0
        self.h, self.d_k = n_heads, d_model // n_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model, bias=k_bias)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.rel_pos = rel_pos
        if rel_pos:
            self.linear_pos = nn.Linear(d_model, d_model, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_k))
            self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_k))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.d_k).transpose(1, 2)  # [B, H, T, d_k]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], cache_k: Optional[torch.Tensor] = None,
                cache_v: Optional[torch.Tensor] = None, key_pos: Optional[torch.Tensor] = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            x: ``[B, T, D]`` current frames.
            mask: ``[B or 1, T, Tc + T]`` bool (True = attend) or ``None`` (attend to everything).
            cache_k, cache_v: ``[B, H, Tc, d_k]`` keys/values of earlier frames, or ``None``.
            key_pos: ``[Tc + T, D]`` (or ``[B, Tc + T, D]``) sinusoid of each key's position (rel-pos variant
                only).

        Returns:
            ``(out [B, T, D], k [B, H, Tc + T, d_k], v [B, H, Tc + T, d_k])``.
        """
        q = self._split(self.linear_q(x))
        k = self._split(self.linear_k(x))
        v = self._split(self.linear_v(x))
        if cache_k is not None and cache_k.shape[2] > 0:
            k = torch.cat([cache_k, k], dim=2)
            v = torch.cat([cache_v, v], dim=2)
        attn_mask = None if mask is None else mask[:, None, :, :]  # [B, 1, T, Tk]
        if self.rel_pos:
            assert key_pos is not None, "rel-pos attention needs key positions"
            p = self.linear_pos(key_pos)  # [Tk, D], or [B, Tk, D] with per-row positions (batched sessions)
            p = p.view(*p.shape[:-1], self.h, self.d_k).transpose(-3, -2)  # [H, Tk, d_k] or [B, H, Tk, d_k]
            # (q + v) . p_j enters as an additive bias; (q + u) . k_j is the content term.
            bias = torch.matmul(q + self.pos_bias_v[None, :, None, :], p.transpose(-1, -2)) / math.sqrt(self.d_k)
            if attn_mask is not None:
                bias = bias.masked_fill(~attn_mask, float("-inf"))
            q = q + self.pos_bias_u[None, :, None, :]
            attn_mask = bias
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out), k, v


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.act(self.w_1(x))))


class EncoderLayer(nn.Module):
    """Pre-LN block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, activation: str = "relu", rel_pos: bool = False,
                 k_bias: bool = True, dropout: float = 0.1, attention_dropout: float = 0.0,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = ChunkAttention(d_model, n_heads, rel_pos=rel_pos, k_bias=k_bias,
                                        dropout=attention_dropout)
        self.feed_forward = FeedForward(d_model, d_ff, activation, dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], cache_k: Optional[torch.Tensor] = None,
                cache_v: Optional[torch.Tensor] = None, key_pos: Optional[torch.Tensor] = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.self_attn(self.norm1(x), mask, cache_k, cache_v, key_pos)
        x = x + self.dropout(a)
        x = x + self.dropout(self.feed_forward(self.norm2(x)))
        return x, k, v

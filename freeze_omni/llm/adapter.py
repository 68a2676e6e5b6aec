"""The adapter from speech-encoder frames to LLM input embeddings (upstream ``subsampling`` adapter).

Causal Conv1d (kernel ``k``, stride ``s``) -> LayerNorm (eps 1e-3) -> GELU -> Linear to the LLM width. The
stride brings the encoder rate to 12.5 embeddings per second (2 after the upstream 25 Hz encoder, 4 after a
50 Hz Whisper encoder), i.e. 2 embeddings per 160 ms chunk.

Streaming: the last ``left_pad`` input frames are carried between chunks (zeros at the start), so chunk by
chunk equals the whole sequence left-padded with ``left_pad`` zeros. ``left_pad = k - s`` (default) lets output
``j`` see its whole group of ``s`` frames ``[s j, s j + s)``; upstream used ``left_pad = k - 1``, so output
``j`` ends at frame ``s j`` and the last frame of each group only reaches the LLM one embedding later
(``upstream_left_pad=True`` reproduces that).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class Adapter(nn.Module):
    def __init__(self, enc_dim: int, llm_dim: int, stride: int = 2, kernel_size: int = 5,
                 hidden_dim: Optional[int] = None, upstream_left_pad: bool = False) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} < stride {stride}")
        hidden_dim = hidden_dim or 2 * enc_dim
        self.stride, self.kernel_size = stride, kernel_size
        self.left_pad = kernel_size - 1 if upstream_left_pad else kernel_size - stride
        self.conv1d2 = nn.Conv1d(enc_dim, hidden_dim, kernel_size, stride=stride)  # upstream names
        self.bn2 = nn.LayerNorm(hidden_dim, eps=1e-3)
        self.project = nn.Linear(hidden_dim, llm_dim)
        self.enc_dim = enc_dim

    def _core(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, left_pad + T, D]`` -> ``[B, T / stride, H_llm]``."""
        h = self.conv1d2(x.transpose(1, 2)).transpose(1, 2)
        return self.project(F.gelu(self.bn2(h)))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Whole sequences: ``x [B, T, D]`` (T cut to a multiple of the stride) -> ``([B, T/s, H], lengths/s)``."""
        t = x.shape[1] - x.shape[1] % self.stride
        x = F.pad(x[:, :t], (0, 0, self.left_pad, 0))
        out = self._core(x)
        return out, (None if lengths is None else torch.clamp(lengths // self.stride, max=out.shape[1]))

    def init_cache(self, batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch, self.left_pad, self.enc_dim, device=device)

    def forward_chunk(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk ``[B, n, D]`` (``n`` a multiple of the stride) -> ``([B, n/s, H], new cache [B, left_pad, D])``."""
        if x.shape[1] % self.stride:
            raise ValueError(f"adapter chunk of {x.shape[1]} frames is not a multiple of stride {self.stride}")
        xc = torch.cat([cache, x], dim=1)
        return self._core(xc), xc[:, xc.shape[1] - self.left_pad:]

"""Attention masks for chunked streaming encoders (``True`` = may attend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


def chunk_mask(size: int, chunk_size: int, left_chunks: Optional[int] = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Frame ``i`` sees every frame of its own chunk and of up to ``left_chunks`` chunks before it.

    ``left_chunks=None`` means all previous chunks. Example, ``size=6, chunk_size=2, left_chunks=1``::

        [[1, 1, 0, 0, 0, 0],
         [1, 1, 0, 0, 0, 0],
         [1, 1, 1, 1, 0, 0],
         [1, 1, 1, 1, 0, 0],
         [0, 0, 1, 1, 1, 1],
         [0, 0, 1, 1, 1, 1]]

    Returns:
        ``[size, size]`` bool.
    """
    chunk = torch.arange(size, device=device) // chunk_size
    q, k = chunk[:, None], chunk[None, :]
    mask = k <= q
    if left_chunks is not None:
        mask &= k >= q - left_chunks
    return mask


def pad_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """``[B, T]`` bool, ``True`` on valid (non-padding) frames. Example: lengths ``[2, 3]`` ->
    ``[[1, 1, 0], [1, 1, 1]]``."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class ChunkPolicy:
    """Which attention context a training batch gets.

    mode:
        ``full``: full attention (no chunking).
        ``static``: always ``chunk_size`` with ``left_chunks`` (the streaming setting).
        ``dynamic``: per batch, with probability ``static_prob`` the static setting, with probability
            ``full_prob`` full attention, else a chunk size drawn uniformly from ``[1, max_chunk]`` and, if
            ``dynamic_left``, a left context drawn from ``[1, left_chunks]`` chunks (dynamic chunk training,
            U2 style).
    """

    mode: str = "static"
    chunk_size: int = 8
    left_chunks: Optional[int] = 16
    max_chunk: int = 25
    full_prob: float = 0.5
    static_prob: float = 0.0
    dynamic_left: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("full", "static", "dynamic"):
            raise ValueError(f"unknown chunk policy mode {self.mode!r}")

    def sample(self, gen: Optional[torch.Generator] = None) -> tuple[Optional[int], Optional[int]]:
        """``(chunk_size, left_chunks)`` for one batch; ``(None, None)`` is full attention."""
        if self.mode == "full":
            return None, None
        if self.mode == "static":
            return self.chunk_size, self.left_chunks
        u = torch.rand((), generator=gen).item()
        if u < self.static_prob:
            return self.chunk_size, self.left_chunks
        if u < self.static_prob + self.full_prob:
            return None, None
        chunk = int(torch.randint(1, self.max_chunk + 1, (), generator=gen))
        left = self.left_chunks
        if self.dynamic_left and left is not None:
            left = int(torch.randint(1, left + 1, (), generator=gen))
        return chunk, left

"""Spectral reconstruction losses of the codec: multi-resolution STFT and log-mel L1."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from freeze_omni.audio.features import mel_filters


def _magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
    return spec.abs()  # [B, n_fft/2+1, frames]


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of ``L1(log|S|, log|Ŝ|) + L1(|S|, |Ŝ|)`` (DDSP's spectral loss).

    Args:
        fft_sizes: STFT sizes (hop = size / 4).
        eps: added to magnitudes before the log.
    """

    def __init__(self, fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128, 64), eps: float = 1e-5) -> None:
        super().__init__()
        self.fft_sizes, self.eps = tuple(fft_sizes), eps

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x_hat``, ``x``: ``[B, T]`` -> scalar."""
        total = x.new_zeros(())
        for n in self.fft_sizes:
            m_hat, m = _magnitude(x_hat, n, n // 4), _magnitude(x, n, n // 4)
            total = total + F.l1_loss(torch.log(m_hat + self.eps), torch.log(m + self.eps)) + F.l1_loss(m_hat, m)
        return total / len(self.fft_sizes)


class LogMelLoss(nn.Module):
    """L1 between natural-log mel magnitudes (HiFi-GAN's mel loss).

    Args:
        sample_rate: samples per second.
        n_fft, hop: STFT geometry.
        n_mels: mel bands (Slaney filters over 0..Nyquist).
    """

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("fb", torch.from_numpy(mel_filters(n_mels, n_fft, sample_rate)).float(),
                             persistent=False)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, n_mels, frames]``."""
        return torch.log(torch.matmul(self.fb.to(x.dtype), _magnitude(x, self.n_fft, self.hop)) + 1e-5)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(self.log_mel(x_hat), self.log_mel(x))

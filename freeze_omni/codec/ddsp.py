"""Differentiable harmonic-plus-noise synthesis (DDSP, Engel et al. 2020), with explicit oscillator phase.

Control frames: frame ``i`` stands for samples ``[i * hop, (i + 1) * hop)`` (see :mod:`freeze_omni.codec.f0`).
Controls are brought to the sample rate by linear interpolation between frame centres, so every output
sample depends only on its two nearest frames: the synthesis is local, and a window decoded on its own
matches the whole utterance away from its edges, which streaming decode relies on.

The oscillator phase is an explicit float64 track, the exclusive cumulative sum of ``2π f0 / sr``, that can be
pinned to a given value at a given sample (:func:`harmonic_phase`). Streaming decode pins each window's phase
to where the previous window left it, so consecutive windows continue one oscillator without a click.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

TWO_PI = 2.0 * math.pi


def exp_sigmoid(x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0,
                threshold: float = 1e-7) -> torch.Tensor:
    """DDSP's positive output nonlinearity: ``max_value * sigmoid(x) ** log(exponent) + threshold``."""
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def upsample(x: torch.Tensor, hop: int) -> torch.Tensor:
    """Frames to samples by linear interpolation between frame centres.

    Args:
        x: ``[B, C, F]`` per-frame values.
        hop: samples per frame.

    Returns:
        ``[B, C, F * hop]``; sample ``n`` reads frame position ``(n + 0.5) / hop - 0.5`` (ends held).
    """
    return F.interpolate(x, scale_factor=hop, mode="linear", align_corners=False)


def harmonic_phase(f0: torch.Tensor, sample_rate: int, phase0: Optional[torch.Tensor] = None,
                   index: int = 0) -> torch.Tensor:
    """The oscillator phase before each sample, in float64 radians.

    Args:
        f0: ``[B, T]`` per-sample frequency in Hz.
        sample_rate: samples per second.
        phase0: ``[B]`` the phase wanted before sample ``index``; None: 0 before sample 0.
        index: where ``phase0`` applies, ``0 <= index <= T``.

    Returns:
        ``[B, T + 1]`` with ``p[:, n + 1] = p[:, n] + 2π f0[:, n] / sr`` (so ``p[:, T]`` is where the next sample
        continues), shifted so that ``p[:, index] == phase0``.
    """
    inc = f0.double() * (TWO_PI / sample_rate)
    p = F.pad(torch.cumsum(inc, dim=1), (1, 0))
    if phase0 is not None:
        p = p - p[:, index:index + 1] + phase0.double().reshape(-1, 1)
    return p


def harmonic_synth(phase: torch.Tensor, amplitudes: torch.Tensor, hop: int) -> torch.Tensor:
    """Sum of harmonics ``Σ_k a_k(t) sin(k φ(t))``, amplitudes interpolated like :func:`upsample`.

    The sines carry no gradient (the phase comes from a tracked or detached F0); the amplitudes do. The
    interpolation is folded into one batched matmul per frame (``[hop, K] @ [K, 3]`` against the previous, own
    and next frame), which is much cheaper than materialising per-sample amplitudes.

    Args:
        phase: ``[B, T]`` float64 radians, ``T = F * hop`` (wrapped before the multiplication by ``k``).
        amplitudes: ``[B, K, F]`` per-frame amplitude of harmonics ``1..K`` (zero above Nyquist).
        hop: samples per frame.

    Returns:
        ``[B, T]`` in the dtype of ``amplitudes``.
    """
    B, K, n_frames = amplitudes.shape
    dtype = amplitudes.dtype
    with torch.no_grad():
        k = torch.arange(1, K + 1, device=amplitudes.device, dtype=dtype)
        sines = torch.remainder(phase, TWO_PI).to(dtype).unsqueeze(-1) * k  # [B, T, K]
        sines.sin_()
        sines = sines.view(B * n_frames, hop, K)
        pos = (torch.arange(hop, device=amplitudes.device, dtype=dtype) + 0.5) / hop - 0.5  # [hop] in (-0.5, 0.5)
        weights = torch.stack([(-pos).clamp(min=0), 1 - pos.abs(), pos.clamp(min=0)], dim=-1)  # [hop, 3]
    a = F.pad(amplitudes, (1, 1), mode="replicate")  # [B, K, F + 2], ends held
    a3 = torch.stack([a[..., :-2], a[..., 1:-1], a[..., 2:]], dim=-1)  # [B, K, F, 3]: previous, own, next
    a3 = a3.permute(0, 2, 1, 3).reshape(B * n_frames, K, 3)
    y = torch.bmm(sines, a3)  # [B*F, hop, 3]
    return (y * weights).sum(-1).reshape(B, n_frames * hop)


def harmonic_amplitudes(f0: torch.Tensor, amplitude: torch.Tensor, distribution: torch.Tensor,
                        sample_rate: int) -> torch.Tensor:
    """Per-frame harmonic amplitudes: overall ``amplitude`` spread by a normalised ``distribution``.

    Harmonics at or above Nyquist get zero before the normalisation (no aliasing).

    Args:
        f0: ``[B, F]`` Hz.
        amplitude: ``[B, F]`` total harmonic amplitude (>= 0).
        distribution: ``[B, K, F]`` positive weights of harmonics ``1..K``.

    Returns:
        ``[B, K, F]``.
    """
    K = distribution.shape[1]
    k = torch.arange(1, K + 1, device=f0.device, dtype=f0.dtype).view(1, K, 1)
    audible = (k * f0.unsqueeze(1) < sample_rate / 2).to(distribution.dtype)
    dist = distribution * audible
    dist = dist / dist.sum(dim=1, keepdim=True).clamp(min=1e-7)
    return amplitude.unsqueeze(1) * dist


def filtered_noise(noise: torch.Tensor, bands: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Shape ``noise`` by a time-varying magnitude response, in the STFT domain.

    Args:
        noise: ``[B, T]`` white noise, ``T = F * hop``.
        bands: ``[B, F, n_bands]`` linear magnitudes per control frame, spread evenly over 0..Nyquist.
        hop: samples per control frame (the STFT hop).
        n_fft: STFT size (a multiple of ``hop``, e.g. ``4 * hop``).

    Returns:
        ``[B, T]``; STFT frame ``j`` (centred on sample ``j * hop``) uses the mean of control frames ``j - 1``
        and ``j``, so the result near sample ``n`` depends only on frames within ``n_fft / hop`` of it.
    """
    B, T = noise.shape
    window = torch.hann_window(n_fft, device=noise.device, dtype=noise.dtype)
    spec = torch.stft(noise, n_fft, hop, window=window, center=True, return_complex=True)  # [B, n_fft/2+1, F+1]
    b = F.pad(bands.transpose(1, 2), (1, 1), mode="replicate")  # [B, n_bands, F+2]
    b = 0.5 * (b[..., :-1] + b[..., 1:])  # [B, n_bands, F+1]: frame j -> mean of control frames j-1, j
    n_bins = n_fft // 2 + 1
    h = F.interpolate(b.transpose(1, 2), size=n_bins, mode="linear", align_corners=True)  # [B, F+1, n_bins]
    spec = spec * h.transpose(1, 2)[..., : spec.shape[-1]].to(spec.real.dtype)
    return torch.istft(spec, n_fft, hop, window=window, center=True, length=T)

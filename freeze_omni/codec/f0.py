"""A YIN fundamental-frequency tracker in numpy: the F0 / voicing targets of the codec's excitation.

Frame convention (shared with the codec's control frames): frame ``i`` stands for the samples
``[i * hop, (i + 1) * hop)`` and is analysed around its centre ``i * hop + hop / 2``, so a wave of
``T`` samples gives ``T // hop`` frames.

YIN (de Cheveigné & Kawahara, 2002): per frame, the difference function
``d(τ) = Σ_j (x_j - x_{j+τ})²`` over an integration window of ``W`` samples, computed with one FFT
(``d(τ) = E(0) + E(τ) - 2 r(τ)``), its cumulative-mean normalisation ``d'(τ) = d(τ) τ / Σ_{k≤τ} d(k)``, the
first dip below ``threshold`` followed to its local minimum (else the global minimum), and a parabolic
refinement of the lag. A frame is voiced when its dip is below ``voicing_threshold`` and its RMS is within
``silence_db`` of the loudest frame. Unvoiced frames get the F0 interpolated from their voiced neighbours
(held at the ends), so the F0 track is continuous, as a harmonic oscillator wants it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _running_median(x: np.ndarray, width: int) -> np.ndarray:
    """Centred running median of ``x [N]`` over ``width`` (odd) values, edges padded by replication."""
    half = width // 2
    return np.median(sliding_window_view(np.pad(x, half, mode="edge"), 2 * half + 1), axis=1)


def yin(wave: np.ndarray, sample_rate: int, hop: int, fmin: float = 50.0, fmax: float = 500.0,
        window: int | None = None, threshold: float = 0.15, voicing_threshold: float = 0.5,
        silence_db: float = 45.0, smooth: int = 3,
        octave_window: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """F0 and voicing per frame of ``hop`` samples.

    Args:
        wave: ``[T]`` float mono samples.
        sample_rate: samples per second.
        hop: samples per frame (the codec's control hop).
        fmin, fmax: the F0 search range in Hz.
        window: integration window ``W`` in samples (default: two periods of ``fmin``, at least 2 hops).
        threshold: YIN's absolute threshold on ``d'``.
        voicing_threshold: frames whose best ``d'`` is above this are unvoiced.
        silence_db: frames quieter than the loudest by more than this are unvoiced.
        smooth: median-filter length (frames, odd) applied to the voiced F0; 1: off.
        octave_window: voiced frames (odd) of the slow median that octave jumps (ratio > 1.6 or < 0.625) are
            folded back to.

    Returns:
        ``f0 [F]`` float32 Hz (interpolated through unvoiced frames; ``fmin`` if nothing is voiced) and
        ``voiced [F]`` float32 in {0, 1}, with ``F = T // hop``.
    """
    x = np.asarray(wave, dtype=np.float64)
    tau_min = max(2, int(sample_rate / fmax))
    tau_max = int(np.ceil(sample_rate / fmin))
    W = int(window or max(2 * tau_max, 2 * hop))
    n_frames = len(x) // hop
    if n_frames == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    # 1. Frames: integration window [c - W/2, c + W/2) plus tau_max lookahead, c = i*hop + hop/2.
    L = W + tau_max
    pad = L
    xp = np.pad(x, (pad, pad), mode="reflect" if len(x) > pad else "constant")
    starts = pad + np.arange(n_frames) * hop + hop // 2 - W // 2
    idx = starts[:, None] + np.arange(L)[None, :]
    fr = xp[idx]  # [F, L]
    # 2. Difference function via FFT: r(τ) = Σ_{j<W} x_j x_{j+τ}.
    n_fft = 1 << int(np.ceil(np.log2(L + W)))
    spec_full = np.fft.rfft(fr, n_fft)
    spec_head = np.fft.rfft(fr[:, :W], n_fft)
    r = np.fft.irfft(spec_full * np.conj(spec_head), n_fft)[:, : tau_max + 1]  # [F, tau_max+1]
    sq = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(fr**2, axis=1)], axis=1)  # [F, L+1]
    taus = np.arange(tau_max + 1)
    e0 = sq[:, W:W + 1]  # Σ_{j<W} x_j²
    etau = sq[:, taus + W] - sq[:, taus]  # Σ_{j<W} x_{j+τ}²
    d = np.maximum(e0 + etau - 2.0 * r, 0.0)
    # 3. Cumulative mean normalised difference.
    cum = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    # 4. First dip below threshold (followed down to its local minimum), else the global minimum.
    search = dn[:, tau_min:]
    below = search < threshold
    has = below.any(axis=1)
    first = np.where(has, below.argmax(axis=1), search.argmin(axis=1))
    best = first.copy()
    for i in np.nonzero(has)[0]:  # walk down to the local minimum (a few steps per frame)
        j = best[i]
        while j + 1 < search.shape[1] and search[i, j + 1] < search[i, j]:
            j += 1
        best[i] = j
    tau = best + tau_min
    # 5. Parabolic refinement of the lag.
    rows = np.arange(n_frames)
    t0 = np.clip(tau, 1, tau_max - 1)
    a, b, c = dn[rows, t0 - 1], dn[rows, t0], dn[rows, t0 + 1]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    tau_f = t0 + np.clip(shift, -1.0, 1.0)
    f0 = sample_rate / tau_f
    dip = dn[rows, tau]
    # 6. Voicing: a clear dip and enough energy.
    rms = np.sqrt(e0[:, 0] / W)
    loud = 20 * np.log10(np.maximum(rms, 1e-9)) > 20 * np.log10(max(rms.max(), 1e-9)) - silence_db
    voiced = (dip < voicing_threshold) & loud & (rms > 1e-4) & (f0 >= fmin) & (f0 <= fmax)
    # 7. Fix octave jumps against a slow median of the voiced track, smooth, interpolate through unvoiced frames.
    if voiced.sum() >= 3:
        v = np.nonzero(voiced)[0]
        ratio = f0[v] / _running_median(f0[v], octave_window)
        up, down = np.round(np.maximum(ratio, 1.0)), np.round(1.0 / np.minimum(ratio, 1.0))
        f0[v] = np.where(ratio > 1.6, f0[v] / up, np.where(ratio < 0.625, f0[v] * down, f0[v]))
        if smooth > 1:
            f0[v] = _running_median(f0[v], smooth)
    if voiced.any():
        v = np.nonzero(voiced)[0]
        f0 = np.interp(np.arange(n_frames), v, f0[v])
    else:
        f0 = np.full(n_frames, fmin)
    return f0.astype(np.float32), voiced.astype(np.float32)

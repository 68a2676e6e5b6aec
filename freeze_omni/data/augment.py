"""Training-time audio augmentation (numpy), every random choice drawn from a passed ``np.random.Generator``.

Waveform functions take and return mono float32 ``[T]`` at 16 kHz unless ``sample_rate`` says otherwise:
:func:`speed_perturb` (tempo and pitch together), :func:`pitch_shift` (duration kept: WSOLA time stretch then
resampling), :func:`vtlp` (vocal tract length perturbation: the STFT magnitude's frequency axis is warped and
resynthesized with phase-vocoder phases; :func:`warp_spectrum` does the same warp on any linear-frequency
magnitude spectrogram ``[..., F]``, e.g. before a mel filterbank), :func:`add_noise`, :func:`add_babble`,
:func:`apply_gain`, :func:`reverb`.
:func:`spec_augment` masks features ``[T, F]`` (numpy or torch). :class:`Augmenter` chains them at random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np
from scipy.signal import fftconvolve, resample_poly

SAMPLE_RATE = 16000
_PEAK = 0.999


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play ``wave`` ``factor`` times faster (pitch rises with tempo, as Kaldi's speed perturbation).

    Returns:
        ``[≈ T / factor]`` float32.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if factor == 1.0:
        return _f32(wave)
    r = Fraction(factor).limit_denominator(200)
    return _f32(resample_poly(np.asarray(wave, dtype=np.float64), r.denominator, r.numerator))


def time_stretch(wave: np.ndarray, stretch: float, win: int = 512, tolerance: int = 128) -> np.ndarray:
    """WSOLA time stretch: the output is ``stretch`` times as long, with the pitch unchanged.

    Frames of ``win`` samples are overlap-added with a Hann window at a fixed output hop of ``win // 2``; each
    input frame is taken near its nominal position (± ``tolerance``) where it best continues the previous one.

    Returns:
        ``[round(T · stretch)]`` float32.
    """
    x = np.asarray(wave, dtype=np.float64)
    n_out = int(round(len(x) * stretch))
    if stretch == 1.0 or len(x) == 0:
        return _f32(x)
    hop_out = win // 2
    hop_in = hop_out / stretch
    window = np.hanning(win + 1)[:win]  # periodic Hann: sums to 1 at 50 % overlap
    pad = tolerance + win
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad + win + 4 * int(np.ceil(hop_in)))])
    n_frames = n_out // hop_out + 3
    out = np.zeros(n_frames * hop_out + win)  # out[i] is output sample i - hop_out (frame 0 starts before 0)
    prev = 0  # where the previous frame was taken (in xp)
    for k in range(n_frames):
        nominal = pad + int(round((k - 1) * hop_in))
        if k == 0:
            start = nominal
        else:
            natural = xp[prev + hop_out: prev + hop_out + win]
            lo = nominal - tolerance
            corr = np.correlate(xp[lo: nominal + tolerance + win], natural, mode="valid")
            start = lo + int(np.argmax(corr)) if np.any(natural) else nominal
        out[k * hop_out: k * hop_out + win] += window * xp[start: start + win]
        prev = start
    return _f32(out[hop_out: hop_out + n_out])


def pitch_shift(wave: np.ndarray, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones``, keeping the duration: WSOLA stretch by ``2^(s/12)``, then speed up by
    the same factor (which also moves the formants, like a faster tape).

    Returns:
        ``[T]`` float32 (exactly the input length).
    """
    if semitones == 0:
        return _f32(wave)
    ratio = 2.0 ** (semitones / 12.0)
    y = speed_perturb(time_stretch(wave, ratio), ratio)
    n = len(wave)
    return _f32(y[:n] if len(y) >= n else np.pad(y, (0, n - len(y))))


def _warp_source_freqs(n_bins: int, alpha: float, sample_rate: int, f_hi: float) -> np.ndarray:
    """For each output bin, the input frequency (Hz) it takes its magnitude from, under the piecewise-linear
    VTLP warp of Jaitly & Hinton (2013): ``f' = α f`` up to ``f_hi · min(α, 1) / α``, then linear to Nyquist."""
    nyq = sample_rate / 2
    f = np.linspace(0.0, nyq, 4 * n_bins)
    knee = f_hi * min(alpha, 1.0) / alpha
    warped = np.where(f <= knee, alpha * f,
                      nyq - (nyq - f_hi * min(alpha, 1.0)) / (nyq - knee) * (nyq - f))
    return np.interp(np.linspace(0.0, nyq, n_bins), warped, f)


def warp_spectrum(mag: np.ndarray, alpha: float, sample_rate: int = SAMPLE_RATE, f_hi: float = 4800.0) -> np.ndarray:
    """VTLP on a linear-frequency magnitude (or power) spectrogram ``[..., F]`` whose ``F`` bins span 0 to
    Nyquist. ``alpha`` > 1 moves formants up (a shorter vocal tract), < 1 down.

    Returns:
        The warped spectrogram, same shape.
    """
    src = _warp_source_freqs(mag.shape[-1], alpha, sample_rate, f_hi)
    pos = src / (sample_rate / 2) * (mag.shape[-1] - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, mag.shape[-1] - 1)
    i1 = np.minimum(i0 + 1, mag.shape[-1] - 1)
    w = (pos - i0).astype(mag.dtype)
    return mag[..., i0] * (1 - w) + mag[..., i1] * w


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``[frames, n_fft // 2 + 1]`` complex STFT, Hann window, ``n_fft // 2`` zeros on both sides."""
    xp = np.pad(x, (n_fft // 2, n_fft // 2 + hop))
    n = 1 + (len(xp) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n]
    return np.fft.rfft(frames * np.hanning(n_fft + 1)[:n_fft], axis=-1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`."""
    window = np.hanning(n_fft + 1)[:n_fft]
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * window
    total = hop * (len(frames) - 1) + n_fft
    out, norm = np.zeros(total), np.zeros(total)
    for k, fr in enumerate(frames):
        out[k * hop: k * hop + n_fft] += fr
        norm[k * hop: k * hop + n_fft] += window ** 2
    out /= np.maximum(norm, 1e-8)
    return out[n_fft // 2: n_fft // 2 + length]


def vtlp(wave: np.ndarray, alpha: float, sample_rate: int = SAMPLE_RATE, n_fft: int = 512,
         hop: int = 128) -> np.ndarray:
    """Vocal tract length perturbation of a waveform: the STFT magnitude is warped with :func:`warp_spectrum`
    and resynthesized by overlap-add with phase-vocoder phases (each output bin's phase advances at its
    source bin's instantaneous frequency times the local warp ratio, so frames stay coherent; reusing the
    original phases would mostly undo the warp). Like VTLP on filterbanks, harmonics move with the formants.

    Returns:
        ``[T]`` float32.
    """
    if alpha == 1.0 or len(wave) == 0:
        return _f32(wave)
    spec = _stft(np.asarray(wave, dtype=np.float64), n_fft, hop)
    n_bins = spec.shape[-1]
    mag = warp_spectrum(np.abs(spec), alpha, sample_rate)
    phase = np.angle(spec)
    omega = 2 * np.pi * np.arange(n_bins) / n_fft  # bin centre, radians per sample
    dphi = np.diff(phase, axis=0) - omega * hop
    inst = omega + (dphi + np.pi) % (2 * np.pi) / hop - np.pi / hop  # instantaneous frequency [frames-1, F]
    pos = _warp_source_freqs(n_bins, alpha, sample_rate, 4800.0) / (sample_rate / 2) * (n_bins - 1)
    src = np.clip(np.round(pos).astype(int), 0, n_bins - 1)
    ratio = np.divide(np.arange(n_bins), pos, out=np.ones(n_bins), where=pos > 0)
    out_phase = np.concatenate([phase[:1, src], phase[:1, src] + np.cumsum(inst[:, src] * ratio * hop, axis=0)])
    return _f32(_istft(mag * np.exp(1j * out_phase), n_fft, hop, len(wave)))


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` noise with unit RMS: ``white`` (flat), ``pink`` (1/f power) or ``brown`` (1/f² power)."""
    white = rng.standard_normal(n)
    if kind != "white":
        exponent = {"pink": 0.5, "brown": 1.0}.get(kind)
        if exponent is None:
            raise ValueError(f"unknown noise kind {kind!r}; expected white, pink or brown")
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        spec = spec / f ** exponent
        spec[0] = 0.0
        white = np.fft.irfft(spec, n=n)
    return white / max(float(np.sqrt(np.mean(white ** 2))), 1e-12)


def _mix_at_snr(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float64)
    p_sig, p_noise = np.mean(x ** 2), np.mean(noise ** 2)
    if p_sig == 0 or p_noise == 0:
        return _f32(x)
    return _f32(x + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10))))


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, kind: str = "white") -> np.ndarray:
    """Add ``kind`` noise (see :func:`colored_noise`) at ``snr_db`` (signal power over noise power, whole
    utterance). Silence is returned unchanged. The result may exceed [-1, 1]; :func:`apply_gain` or
    :class:`Augmenter` bring it back.

    Returns:
        ``[T]`` float32.
    """
    return _mix_at_snr(wave, colored_noise(len(wave), kind, rng), snr_db)


def add_babble(wave: np.ndarray, others: Sequence[np.ndarray], snr_db: float,
               rng: np.random.Generator) -> np.ndarray:
    """Add the sum of ``others`` (other utterances, each looped or cropped at a random offset to ``T``) at
    ``snr_db``.

    Returns:
        ``[T]`` float32.
    """
    n = len(wave)
    babble = np.zeros(n)
    for o in others:
        o = np.asarray(o, dtype=np.float64)
        if len(o) == 0:
            continue
        o = np.tile(o, -(-n // len(o)) + 1)
        start = int(rng.integers(len(o) - n + 1))
        babble += o[start: start + n]
    return _mix_at_snr(wave, babble, snr_db)


def apply_gain(wave: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels; the gain is lowered if needed so the peak stays below 0.999 (no clipping).

    Returns:
        ``[T]`` float32.
    """
    x = np.asarray(wave, dtype=np.float64) * 10 ** (db / 20)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return _f32(x * (_PEAK / peak) if peak > _PEAK else x)


def reverb(wave: np.ndarray, rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE,
           direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """Convolve with a synthetic room impulse response: a unit direct path, then after 2 ms Gaussian noise
    decaying by 60 dB over ``rt60`` seconds, its energy ``direct_to_reverb_db`` below the direct path's.
    The output keeps the input's RMS and length.

    Returns:
        ``[T]`` float32.
    """
    if rt60 <= 0:
        return _f32(wave)
    x = np.asarray(wave, dtype=np.float64)
    n = max(int(rt60 * sample_rate), 1)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10 ** (-3.0 * t / rt60)  # amplitude falls 60 dB at t = rt60
    tail *= 10 ** (-direct_to_reverb_db / 20) / max(float(np.sqrt(np.sum(tail ** 2))), 1e-12)
    rir = np.concatenate([[1.0], np.zeros(int(0.002 * sample_rate)), tail])
    y = fftconvolve(x, rir)[: len(x)]
    rms_x, rms_y = np.sqrt(np.mean(x ** 2)), np.sqrt(np.mean(y ** 2))
    return _f32(y * (rms_x / rms_y) if rms_y > 0 else y)


def spec_augment(feats, n_freq_masks: int = 2, F_width: int = 10, n_time_masks: int = 2, T_width: int = 40,
                 rng: np.random.Generator | None = None, fill: float = 0.0):
    """SpecAugment masking on features ``[T, F]`` (numpy array or torch tensor); returns a masked copy.

    Each of ``n_freq_masks`` masks sets ``fill`` on ``w ~ U{0..F_width}`` consecutive feature bins (all frames);
    each of ``n_time_masks`` on ``w ~ U{0..T_width}`` consecutive frames (all bins). Widths are capped at the
    size of the axis. No time warping.
    """
    rng = rng if rng is not None else np.random.default_rng()
    out = feats.clone() if hasattr(feats, "clone") else np.array(feats, copy=True)
    n_t, n_f = out.shape[0], out.shape[1]
    for count, width, size, axis in ((n_freq_masks, F_width, n_f, 1), (n_time_masks, T_width, n_t, 0)):
        for _ in range(count):
            w = int(rng.integers(0, min(width, size) + 1))
            start = int(rng.integers(0, size - w + 1))
            if axis == 1:
                out[:, start: start + w] = fill
            else:
                out[start: start + w] = fill
    return out


@dataclass
class Augmenter:
    """Random waveform augmentation: each step is applied with its probability, its parameter drawn uniformly
    from its range; order: speed, pitch, VTLP, reverb, babble, noise, gain, then a peak guard (≤ 0.999).

    ``babble_pool`` holds other utterances to draw 3 to 6 babble talkers from (babble is skipped if empty).
    """

    sample_rate: int = SAMPLE_RATE
    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)
    p_pitch: float = 0.2
    pitch_range: tuple[float, float] = (-2.0, 2.0)
    p_vtlp: float = 0.3
    vtlp_range: tuple[float, float] = (0.9, 1.1)
    p_reverb: float = 0.2
    rt60_range: tuple[float, float] = (0.2, 0.7)
    p_babble: float = 0.0
    babble_snr_range: tuple[float, float] = (10.0, 25.0)
    babble_pool: Sequence[np.ndarray] = field(default_factory=list)
    p_noise: float = 0.5
    snr_range: tuple[float, float] = (5.0, 30.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown")
    p_gain: float = 0.5
    gain_db_range: tuple[float, float] = (-12.0, 6.0)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment ``[T]`` (the length changes only through speed perturbation); returns float32."""
        x = _f32(wave)
        u = lambda r: float(rng.uniform(*r))  # noqa: E731
        if rng.random() < self.p_speed:
            x = speed_perturb(x, u(self.speed_range))
        if rng.random() < self.p_pitch:
            x = pitch_shift(x, u(self.pitch_range))
        if rng.random() < self.p_vtlp:
            x = vtlp(x, u(self.vtlp_range), self.sample_rate)
        if rng.random() < self.p_reverb:
            x = reverb(x, u(self.rt60_range), rng, self.sample_rate)
        if self.babble_pool and rng.random() < self.p_babble:
            idx = rng.choice(len(self.babble_pool), size=min(int(rng.integers(3, 7)), len(self.babble_pool)),
                             replace=False)
            x = add_babble(x, [self.babble_pool[i] for i in idx], u(self.babble_snr_range), rng)
        if rng.random() < self.p_noise:
            x = add_noise(x, u(self.snr_range), rng, str(rng.choice(list(self.noise_kinds))))
        return apply_gain(x, u(self.gain_db_range) if rng.random() < self.p_gain else 0.0)

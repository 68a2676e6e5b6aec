"""Feature front ends, whole-file and streaming, that give identical frames.

Two front ends, both 80 bins at 100 frames/s over 16 kHz audio:

* ``fbank``: Kaldi-compatible log-mel filterbank (25 ms povey window, 10 ms shift, pre-emphasis 0.97, DC removal,
  dither 0) computed by ``kaldi-native-fbank`` on int16-scaled samples, as upstream Freeze-Omni does. Global CMVN
  is applied by the encoder (``freeze_omni.audio.cmvn``).
* ``whisper``: Whisper's log-mel (periodic Hann 400, power spectrum, 80 Slaney mel bins, log10, dynamic range 8,
  ``(x + 4) / 4``).

Framing (both front ends): 240 zero samples are put before the stream and frames of 400 samples advance by 160
with no padding at the end ("snip edges"), so frame ``t`` covers samples ``[160 t - 240, 160 t + 160)`` and
``N`` samples give exactly ``N // 160`` frames. A 160 ms packet (2560 samples) therefore completes exactly 16
frames, with no look-ahead: the streaming front end never waits for future audio.

Whisper normalisation cannot stream as Whisper defines it (it clamps at the *utterance* maximum minus 8). The
streaming equivalent used everywhere here clamps each frame at ``max(M_t, min_ref) - 8``, where ``M_t`` is the
running maximum of the log-mel over frames ``<= t`` and ``min_ref`` keeps silence at the start of a stream from
lowering the floor. For ordinary speech the floor reaches Whisper's within the first loud frame; it differs only
in bins more than 80 dB below the loudest frame seen so far. ``whisper_log_mel(..., exact=True)`` reproduces
Whisper's own front end (centred frames, reflection padding, utterance maximum) for parity checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import kaldi_native_fbank as knf
import numpy as np

from freeze_omni import SAMPLE_RATE

HOP = 160  # samples per frame (10 ms)
WIN = 400  # samples per window (25 ms)
PRE_PAD = WIN - HOP  # zero samples put before a stream: frames end on packet boundaries
N_MELS = 80
FEATURE_KINDS = ("fbank", "whisper")


# ----------------------------------------------------------------------------------------------------------------
# Kaldi fbank


def _fbank_options(num_mel_bins: int = N_MELS) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.frame_length_ms = 1000.0 * WIN / SAMPLE_RATE
    opts.frame_opts.frame_shift_ms = 1000.0 * HOP / SAMPLE_RATE
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = 20.0
    return opts


class _StreamingFbank:
    """Kaldi fbank over a live stream (state: the online extractor and how many frames were taken)."""

    def __init__(self) -> None:
        self._fbank = knf.OnlineFbank(_fbank_options())
        self._fbank.accept_waveform(SAMPLE_RATE, np.zeros(PRE_PAD, dtype=np.float32))
        self._taken = 0

    def accept(self, samples: np.ndarray) -> np.ndarray:
        if samples.size:
            self._fbank.accept_waveform(SAMPLE_RATE, (samples.astype(np.float32) * 32768.0))
        ready = self._fbank.num_frames_ready
        out = [np.array(self._fbank.get_frame(i), dtype=np.float32) for i in range(self._taken, ready)]
        if ready > self._taken:
            self._fbank.pop(ready - self._taken)  # free memory on long streams
        self._taken = ready
        return np.asarray(out, dtype=np.float32).reshape(-1, N_MELS)


# ----------------------------------------------------------------------------------------------------------------
# Whisper log-mel


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = WIN, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (librosa.filters.mel defaults)."""
    fftfreqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(WIN)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)).astype(np.float64)  # periodic, as torch.hann_window


def _log_mel_frames(frames: np.ndarray) -> np.ndarray:
    """``[T, 400]`` windows -> ``[T, 80]`` log10 mel power (before normalisation)."""
    spec = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # [T, 201]
    mel = spec @ mel_filters().T.astype(np.float64)
    return np.log10(np.maximum(mel, 1e-10))


MIN_REF = 0.5  # lowest log10 reference level for the streaming floor (speech peaks are about 1.2)


class _StreamingWhisperMel:
    """Whisper log-mel over a live stream with the causal running-maximum floor (see module docstring)."""

    def __init__(self) -> None:
        self._buf = np.zeros(PRE_PAD, dtype=np.float64)
        self._ref = MIN_REF

    def accept(self, samples: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, samples.astype(np.float64)])
        n = (self._buf.size - PRE_PAD) // HOP
        if n <= 0:
            return np.zeros((0, N_MELS), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(self._buf[: PRE_PAD + n * HOP], WIN)[::HOP]
        self._buf = self._buf[n * HOP:]
        logmel = _log_mel_frames(frames)
        ref = np.maximum.accumulate(np.maximum(logmel.max(axis=1), self._ref))
        self._ref = float(ref[-1])
        return ((np.maximum(logmel, ref[:, None] - 8.0) + 4.0) / 4.0).astype(np.float32)


def whisper_log_mel(wave: np.ndarray, exact: bool = False) -> np.ndarray:
    """Whisper log-mel of a whole utterance, ``[T, 80]``.

    Args:
        wave: ``[N]`` float samples at 16 kHz in [-1, 1].
        exact: reproduce Whisper's own front end (centred frames with reflection padding, last frame dropped,
            clamp at the utterance maximum) instead of the streaming definition used by our models.
    """
    if not exact:
        return _StreamingWhisperMel().accept(np.asarray(wave))
    x = np.pad(np.asarray(wave, dtype=np.float64), WIN // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP][:-1]
    logmel = _log_mel_frames(frames)
    logmel = np.maximum(logmel, logmel.max() - 8.0)
    return ((logmel + 4.0) / 4.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Public API


@dataclass
class FrontendConfig:
    """Which front end a model uses. ``kind``: ``fbank`` (upstream family) or ``whisper``."""

    kind: str = "whisper"

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown front end {self.kind!r}; expected one of {FEATURE_KINDS}")


class StreamingFrontend:
    """Turns a live 16 kHz stream into feature frames, identical to whole-file extraction.

    ``accept(samples)`` returns every frame completed by the new samples (``[n, 80]``, possibly ``n = 0``);
    feeding 2560-sample packets gives exactly 16 frames each.
    """

    def __init__(self, kind: str = "whisper") -> None:
        self.kind = FrontendConfig(kind).kind
        self._impl = _StreamingFbank() if self.kind == "fbank" else _StreamingWhisperMel()
        self.frames_out = 0

    def accept(self, samples: np.ndarray) -> np.ndarray:
        out = self._impl.accept(np.asarray(samples, dtype=np.float32))
        self.frames_out += out.shape[0]
        return out


def extract(wave: np.ndarray, kind: str = "whisper") -> np.ndarray:
    """Whole-utterance features ``[len(wave) // 160, 80]`` (the streaming front end fed in one go)."""
    return StreamingFrontend(kind).accept(wave)


def fbank(wave: np.ndarray) -> np.ndarray:
    """Kaldi fbank ``[T, 80]`` of a whole utterance with this module's framing."""
    return extract(wave, "fbank")

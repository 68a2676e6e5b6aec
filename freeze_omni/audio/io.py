"""Reading and writing audio: any soundfile format, down-mixed to mono and resampled."""

from __future__ import annotations

import io
import os
from fractions import Fraction
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from freeze_omni import SAMPLE_RATE

PathOrFile = Union[str, os.PathLike, BinaryIO, bytes]


class AudioError(ValueError):
    """Raised for audio that cannot be read (missing, corrupt, empty, non-finite)."""


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling of a mono float signal ``[T]`` from ``sr_in`` to ``sr_out``."""
    if sr_in == sr_out:
        return wave
    ratio = Fraction(sr_out, sr_in).limit_denominator(1000)
    out = resample_poly(wave.astype(np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def load_audio(src: PathOrFile, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read audio as float32 mono in [-1, 1] at ``sample_rate``.

    Args:
        src: a path, an open binary file, or the encoded bytes of a file (wav, flac, ogg...).
        sample_rate: the rate to resample to.

    Returns:
        ``[T]`` float32 samples.

    Raises:
        AudioError: the file is missing, unreadable, empty or holds non-finite samples.
    """
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    try:
        data, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, OSError)
        raise AudioError(f"cannot read audio {src!r}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"empty audio {src!r}")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioError(f"non-finite samples in {src!r}")
    return resample(wave, sr, sample_rate)


def save_wav(path: Union[str, os.PathLike], wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float samples in [-1, 1] as 16-bit PCM wav (clipped), atomically."""
    tmp = f"{os.fspath(path)}.tmp"
    sf.write(tmp, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), sample_rate,
             subtype="PCM_16", format="WAV")
    os.replace(tmp, path)

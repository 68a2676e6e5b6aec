"""State labels for user turns (facts §1.6): one label per 160 ms chunk, the end of speech by an energy
threshold, and a turn's audio cut to whole chunks. See :mod:`freeze_omni.data.qa`."""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000
CHUNK_SECONDS = 0.16  # one state decision per 160 ms chunk (facts §1.6)

# --------------------------------------------------------------------------------------------------------------
# State labels


def chunk_labels(duration_seconds: float, chunk_seconds: float = CHUNK_SECONDS, end_pad_chunks: int = 0,
                 final_label: int = 1) -> list[int]:
    """State labels of a user turn whose speech ends at ``duration_seconds`` (use :func:`speech_end`).

    The turn has ``ceil(duration / chunk)`` chunks (at least 1): the last one contains the end of speech and
    gets ``final_label`` (1: answer now; 2: do not answer), all the others 0. ``end_pad_chunks`` more
    chunks follow it, labelled ``final_label`` too. The audio of the turn must be cut to
    ``len(labels) * chunk_seconds`` (:func:`turn_audio`): chunks past that are not part of the turn.

    Example::

        >>> chunk_labels(0.5)   # chunks [0, .16), [.16, .32), [.32, .48), [.48, .64): speech ends in the 4th
        [0, 0, 0, 1]
        >>> chunk_labels(0.32, end_pad_chunks=1, final_label=2)
        [0, 2, 2]
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
    if end_pad_chunks < 0:
        raise ValueError(f"end_pad_chunks must be >= 0, got {end_pad_chunks}")
    n = max(1, math.ceil(round(max(0.0, float(duration_seconds)) / chunk_seconds, 6)))
    return [0] * (n - 1) + [int(final_label)] * (1 + end_pad_chunks)


def _frame_rms(wave: np.ndarray, frame: int, hop: int) -> np.ndarray:
    x = np.asarray(wave, dtype=np.float64)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    return np.sqrt(np.mean(x[idx] ** 2, axis=1))


def speech_end(wave: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0, frame_seconds: float = 0.02,
               hop_seconds: float = 0.01, abs_floor: float = 1e-4) -> float:
    """Where the sound of ``wave`` ends, in seconds: the end of the last frame whose RMS is above a threshold.

    The threshold is the highest of: ``threshold_db`` below the loudest 20 ms frame; twice the noise floor
    (the 5th percentile of frame RMS, capped at 20 dB below the loudest frame so that stationary noise clips
    count as sound); ``abs_floor``. On TTS output (espeak-ng: digital silence; flite: a floor about 44 dB
    down) this lands within ~20 ms of where the last phone fades out. Compute it on clean audio: noise
    added later (augmentation) does not move the end of the turn. Silent audio gives 0.0.
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(x) == 0:
        return 0.0
    frame, hop = max(1, int(round(frame_seconds * sr))), max(1, int(round(hop_seconds * sr)))
    rms = _frame_rms(x, frame, hop)
    peak = float(rms.max())
    if peak <= abs_floor:
        return 0.0
    floor = min(2.0 * float(np.percentile(rms, 5)), peak * 10 ** (-20 / 20))
    thr = max(peak * 10 ** (threshold_db / 20), floor, abs_floor)
    active = np.nonzero(rms > thr)[0]
    if len(active) == 0:
        return 0.0
    return float(min(len(x) / sr, (active[-1] * hop + frame) / sr))


def turn_audio(wave: np.ndarray, end_seconds: float, sr: int = SAMPLE_RATE, chunk_seconds: float = CHUNK_SECONDS,
               end_pad_chunks: int = 0, final_label: int = 1) -> tuple[np.ndarray, list[int]]:
    """A user turn ready for training: the wave cut (or zero-padded) to whole chunks, and its chunk labels.

    Args:
        wave: ``[T]`` float samples at ``sr``.
        end_seconds: the end of speech (a manifest's ``speech_end``, or :func:`speech_end`).

    Returns:
        ``(wave [len(labels) * chunk_seconds * sr], labels)``.
    """
    labels = chunk_labels(end_seconds, chunk_seconds, end_pad_chunks, final_label)
    n = int(round(len(labels) * chunk_seconds * sr))
    x = np.asarray(wave, dtype=np.float32)[:n]
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    return x, labels


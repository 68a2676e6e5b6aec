"""Voice activity detection for the live dialogue: silero-vad run through onnxruntime, or a plain energy gate.

The VAD only gates what reaches the model (and starts a barge-in candidate while the assistant speaks); the end
of a user turn is the state head's decision (``reference/freeze_omni_facts.md`` §3.3). Silero's ONNX file is read
from inside the ``silero-vad`` wheel without importing the package (which would import torch)::

    importlib.util.find_spec("silero_vad").submodule_search_locations[0] + "/data/silero_vad.onnx"

The model scores 512-sample windows at 16 kHz (with 64 samples of context from the previous window and a
recurrent state ``[2, 1, 128]``). :class:`VADStream` turns the scores into speech start / end events with
silero's own iterator rule: start when a window scores ``>= threshold``; end once the score has stayed below
``threshold - 0.15`` for ``min_silence_ms``. The model is shared by every session (onnxruntime sessions are
thread-safe); each session has its own :class:`VADStream` (the recurrent state, the context, the counters).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 512  # samples per VAD window (32 ms at 16 kHz)


def silero_model_path(name: str = "silero_vad.onnx") -> Path:
    """Path of silero's ONNX model inside the installed ``silero-vad`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("silero-vad is not installed (pip install --no-deps silero-vad)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the silero-vad package")
    return path


class VADModel(Protocol):
    """Scores consecutive 512-sample windows of one stream; ``state`` is the stream's model state."""

    def new_state(self) -> Any: ...

    def score(self, windows: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """``windows [n, 512]`` float32 in order -> ``(speech probabilities [n], new state)``."""
        ...


class SileroVAD:
    """Silero VAD v5 (ONNX) on onnxruntime, one intra-op thread (a window costs ~0.1 ms).

    Args:
        path: the ONNX file (default :func:`silero_model_path`).
    """

    CONTEXT = 64

    def __init__(self, path: Optional[str | Path] = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path or silero_model_path()), opts,
                                            providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def new_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, 1, 128), np.float32), np.zeros(self.CONTEXT, np.float32)

    def score(self, windows: np.ndarray, state: tuple[np.ndarray, np.ndarray]
              ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        rnn, ctx = state
        probs = np.empty(len(windows), np.float32)
        for i, w in enumerate(windows):
            x = np.concatenate([ctx, w])[None]  # [1, 64 + 512]
            out, rnn = self.session.run(None, {"input": x, "state": rnn, "sr": self._sr})
            probs[i] = float(out.reshape(-1)[0])
            ctx = w[-self.CONTEXT:]
        return probs, (rnn, ctx)


class EnergyVAD:
    """A level gate: probability 1 when a window's RMS is above ``threshold_db`` dBFS, else 0. Needs no model
    file; for tests and for setups where silero is not installed."""

    def __init__(self, threshold_db: float = -35.0) -> None:
        self.threshold_db = threshold_db

    def new_state(self) -> None:
        return None

    def score(self, windows: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=-1) + 1e-12)
        return (20 * np.log10(rms) > self.threshold_db).astype(np.float32), None


def load_vad(kind: Literal["silero", "energy"] = "silero") -> VADModel:
    """The shared VAD model by name."""
    if kind == "silero":
        return SileroVAD()
    if kind == "energy":
        return EnergyVAD()
    raise ValueError(f"unknown VAD {kind!r}; expected 'silero' or 'energy'")


@dataclass
class VADConfig:
    """Speech start / end rule (silero's ``VADIterator``).

    Attributes:
        threshold: a window at or above it is speech (silero default 0.5; upstream's server 0.8).
        min_silence_ms: silence that ends speech (upstream 2000).
        speech_pad_ms: reported starts are moved earlier, ends later, by this much.
        enabled: False: no gate; the engine treats every packet as speech while idle (client-side turn taking).
    """

    threshold: float = 0.5
    min_silence_ms: int = 1500
    speech_pad_ms: int = 30
    enabled: bool = True


@dataclass
class VADEvent:
    """Speech ``start`` or ``end`` at an absolute sample index of the stream."""

    kind: Literal["start", "end"]
    sample: int


class VADStream:
    """One stream's VAD: model state, leftover samples and the start/end rule. Feed any number of samples."""

    def __init__(self, model: VADModel, cfg: Optional[VADConfig] = None) -> None:
        self.model, self.cfg = model, cfg or VADConfig()
        self.state = model.new_state()
        self.leftover = np.zeros(0, np.float32)
        self.samples = 0  # samples scored so far
        self.triggered = False
        self.temp_end = 0
        self.last_prob = 0.0

    def process(self, samples: np.ndarray) -> list[VADEvent]:
        """Score the complete windows in ``leftover + samples``; returns the speech start/end events found."""
        x = np.concatenate([self.leftover, np.asarray(samples, np.float32)])
        n = len(x) // WINDOW
        self.leftover = x[n * WINDOW:]
        if n == 0:
            return []
        probs, self.state = self.model.score(x[:n * WINDOW].reshape(n, WINDOW), self.state)
        events = []
        pad = self.cfg.speech_pad_ms * SAMPLE_RATE // 1000
        min_silence = self.cfg.min_silence_ms * SAMPLE_RATE // 1000
        low = self.cfg.threshold - 0.15
        for p in probs:
            self.samples += WINDOW
            self.last_prob = float(p)
            if p >= self.cfg.threshold:
                self.temp_end = 0
                if not self.triggered:
                    self.triggered = True
                    events.append(VADEvent("start", max(0, self.samples - pad - WINDOW)))
            elif p < low and self.triggered:
                if not self.temp_end:
                    self.temp_end = self.samples
                if self.samples - self.temp_end >= min_silence:
                    events.append(VADEvent("end", self.temp_end + pad - WINDOW))
                    self.triggered, self.temp_end = False, 0
        return events

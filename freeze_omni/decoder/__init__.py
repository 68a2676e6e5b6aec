"""The speech decoder: model (`model`), step-wise generation (`generator`), text segmentation (`segmenter`) and
the `speak` command (`cli`).

Names below resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DecoderConfig": "model",
    "SpeechDecoder": "model",
    "decoder_upstream": "model",
    "decoder_tiny_en": "model",
    "build_decoder_config": "model",
    "SpeechGenerator": "generator",
    "GenerationConfig": "generator",
    "DecoderState": "generator",
    "answer_hidden": "generator",
    "TextSegmenter": "segmenter",
    "Segment": "segmenter",
    "segment_answer": "segmenter",
    "normalize_tts": "segmenter",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"freeze_omni.decoder.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'freeze_omni.decoder' has no attribute {name!r}")

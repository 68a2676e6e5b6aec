"""The speech decoder: model (`model`), step-wise generation (`generator`), text segmentation (`segmenter`) and
the `speak` command (`cli`).

Names below resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

from freeze_omni._lazy import lazy_exports

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
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Streaming speech encoders (upstream and Whisper families), CTC head, Whisper weights from pip packages.

Names below resolve lazily, so importing this package (e.g. for the command line's parser) does not import torch.
"""

from __future__ import annotations

from freeze_omni._lazy import lazy_exports

_EXPORTS = {
    "EncoderCache": "encoder",
    "EncoderConfig": "encoder",
    "SpeechEncoder": "encoder",
    "upstream_config": "encoder",
    "whisper_config": "encoder",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

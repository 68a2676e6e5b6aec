"""The output-side speech codec: one codebook at 40 tokens/s, harmonic-plus-noise decoder, streaming decode.

Import the pieces from their modules (``freeze_omni.codec.model``, ``.streaming``, ``.config``, ``.f0``); the
names below resolve lazily, so importing this package does not import torch.
"""

from __future__ import annotations

from freeze_omni._lazy import lazy_exports

_EXPORTS = {
    "Codec": "model",
    "resynthesize": "model",
    "CodecConfig": "config",
    "codec_default": "config",
    "codec_tiny": "config",
    "codec_24k": "config",
    "build_codec_config": "config",
    "StreamingCodecDecoder": "streaming",
    "StreamingConfig": "streaming",
    "yin": "f0",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

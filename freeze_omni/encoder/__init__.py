"""Streaming speech encoders (upstream and Whisper families), CTC head, Whisper weights from pip packages."""

from freeze_omni.encoder.encoder import (EncoderCache, EncoderConfig, SpeechEncoder, upstream_config,
                                         whisper_config)

__all__ = ["EncoderCache", "EncoderConfig", "SpeechEncoder", "upstream_config", "whisper_config"]

"""Runtime settings of the speech pipeline, read from top-level sections of a bundle's ``bundle.yaml``.

One place for the knobs that sit between trained components and that upstream Freeze-Omni fixes in its scripts
and ``server.json``: text sampling of the answer, the speech decoder's AR sampling, the codec's streaming windows
and splicing, the answer segmenter and the TTS text normalisation. Our own bundles usually leave them out and get
our defaults; a converted upstream bundle (``freeze-omni convert``) carries upstream's values, so both run through
the same code with different settings::

    sampling:   {temperature: 0.8, top_k: 20, top_p: 0.8, max_new_tokens: 500}   # llm SamplingConfig
    generation: {top_k: 2, max_tokens: 1000, min_tokens: 1000, ...}             # decoder GenerationConfig
    streaming:  {first_chunk: 20, chunk: 40, context: 10, first_threshold: 0.1, threshold: 0.015, ...}
    segmenter:  {min_tokens: 4, comma_after: 20, first_allows_comma: true, first_max_tokens: 0}  # SegmenterConfig
    tts_lang:   upstream                                                        # normalize_tts(text, lang)

Each section is checked against its dataclass (unknown keys raise ``ValueError``); the config objects are built
lazily, so reading settings imports no model code. (``generation`` and ``streaming`` are the sections
:meth:`freeze_omni.dialogue.speech.SpeechOutput.from_bundle` reads.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TTS_LANGS = ("en", "zh", "upstream")


def _check(section: str, values: dict[str, Any], cls: type) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"bundle section {section!r}: unknown key(s) {unknown}; known: {sorted(known)}")
    return dict(values)


@dataclass
class PipelineSettings:
    """The pipeline sections of a bundle (each a plain dict of overrides for one config dataclass)."""

    sampling: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    streaming: dict[str, Any] = field(default_factory=dict)
    segmenter: dict[str, Any] = field(default_factory=dict)
    tts_lang: str = "en"

    def __post_init__(self) -> None:
        if self.tts_lang not in TTS_LANGS:
            raise ValueError(f"tts_lang must be one of {TTS_LANGS}, got {self.tts_lang!r}")

    # ------------------------------------------------------------------ config objects
    def sampling_config(self, **overrides: Any):
        """The LLM answer's :class:`freeze_omni.llm.sampling.SamplingConfig`."""
        from freeze_omni.llm.sampling import SamplingConfig

        return SamplingConfig(**{**_check("sampling", self.sampling, SamplingConfig), **overrides})

    def generation_config(self, **overrides: Any):
        """The speech decoder's :class:`freeze_omni.decoder.generator.GenerationConfig`."""
        from freeze_omni.decoder.generator import GenerationConfig

        return GenerationConfig(**{**_check("generation", self.generation, GenerationConfig), **overrides})

    def streaming_config(self, **overrides: Any):
        """The codec's :class:`freeze_omni.codec.streaming.StreamingConfig`."""
        from freeze_omni.codec.streaming import StreamingConfig

        return StreamingConfig(**{**_check("streaming", self.streaming, StreamingConfig), **overrides})

    def segmenter_config(self, **overrides: Any):
        """The answer's :class:`freeze_omni.decoder.segmenter.SegmenterConfig`."""
        from freeze_omni.decoder.segmenter import SegmenterConfig

        return SegmenterConfig(**{**_check("segmenter", self.segmenter, SegmenterConfig), **overrides})

    def normalize(self, text: str) -> str:
        """A segment's text as the speech decoder gets it (:func:`freeze_omni.decoder.segmenter.normalize_tts`)."""
        from freeze_omni.decoder.segmenter import normalize_tts

        return normalize_tts(text, self.tts_lang)

    # ------------------------------------------------------------------ (de)serialisation
    def to_sections(self) -> dict[str, Any]:
        """The top-level ``bundle.yaml`` sections (all of them, empty ones included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PipelineSettings":
        """From a whole ``bundle.yaml`` mapping (other sections are ignored; absent sections: defaults)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: (config.get(n) or ({} if n != "tts_lang" else "en")) for n in names})

    @classmethod
    def from_bundle(cls, bundle: Any) -> "PipelineSettings":
        """From an opened :class:`freeze_omni.bundle.Bundle` or a bundle folder."""
        from freeze_omni.bundle import Bundle

        bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        return cls.from_config(bundle.config)

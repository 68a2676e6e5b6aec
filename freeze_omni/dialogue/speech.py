"""The output side shared by every session: speech decoder + codec + settings, and text sources for them.

:class:`SpeechOutput` holds the read-only pieces (the trained decoder, the codec, the frozen LLM that embeds
segment text, sampling and window settings); each answer gets its own
:class:`~freeze_omni.dialogue.answer.AnswerStream` with its per-answer state. The tokens an answer speaks come
from a *token source*: the LLM sampling an answer (:class:`freeze_omni.llm.generation.TokenGenerator`) or a
text that is already written (:class:`ForcedTokens`, for ``speak`` and ``eval tts``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from freeze_omni.bundle import Bundle, BundleError
from freeze_omni.codec.streaming import StreamingConfig
from freeze_omni.codec.ticodec import load_codec
from freeze_omni.decoder.generator import GenerationConfig, SpeechGenerator, answer_hidden
from freeze_omni.decoder.model import SpeechDecoder
from freeze_omni.decoder.segmenter import SegmenterConfig, normalize_tts
from freeze_omni.settings import PipelineSettings

SPEECH_PARTS = (("decoder", "decoder"), ("codec", "codec"))  # (component, training stage that makes it)


def has_speech(bundle: Bundle) -> bool:
    """True when the bundle can speak (it has a speech decoder and a codec)."""
    return all(bundle.has(part) for part, _ in SPEECH_PARTS)


def require_speech(bundle: Bundle) -> None:
    """Raise :class:`BundleError` naming the first missing output-side component."""
    for part, stage in SPEECH_PARTS:
        if not bundle.has(part):
            raise BundleError(f"{bundle.path}: the bundle has no {part}, so it cannot speak "
                              f"(run `freeze-omni train {stage}`)")


@dataclass
class SpeechOutput:
    """Speech decoder + codec + settings (shared, read-only; per-answer state lives in the answer stream).

    Attributes:
        decoder: the speech decoder (eval mode).
        codec: the codec (eval mode): ours, or upstream's TiCodec in a converted bundle.
        llm: the frozen LLM (embeds each segment's text; its width must be the decoder's ``llm_hidden``).
        generation: AR sampling of codec tokens (top-k) and per-segment length limits.
        streaming: codec window geometry and splicing.
        segmenter: where answers are cut into segments.
        tts_lang: the text normalisation of each segment (:func:`~freeze_omni.decoder.segmenter.normalize_tts`).
        use_prefix: give the LLM hidden states to the prefix decoder (False: the ablation "w/o prefix", which with
            a stage-3 decoder is exactly the stage-2 decoder, stage 3 having frozen everything else).
    """

    decoder: SpeechDecoder
    codec: Any
    llm: Any
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    tts_lang: str = "en"
    use_prefix: bool = True

    def __post_init__(self) -> None:
        width = getattr(self.llm, "hidden_size", self.decoder.cfg.llm_hidden)
        if self.decoder.cfg.llm_hidden != width:
            raise ValueError(f"the decoder expects LLM width {self.decoder.cfg.llm_hidden}; the LLM has {width}")
        if self.decoder.cfg.codebook_size != self.codec.codebook_size:
            raise ValueError(f"decoder codebook {self.decoder.cfg.codebook_size} != codec codebook "
                             f"{self.codec.codebook_size}")

    @classmethod
    def from_bundle(cls, bundle: Union[str, Bundle], llm: Any, top_k: Optional[int] = None) -> "SpeechOutput":
        """Load the decoder and codec of a bundle, with the bundle's pipeline settings
        (:class:`~freeze_omni.settings.PipelineSettings`: ``generation`` — default top-k 2 as upstream, ``top_k``
        overriding it —, ``streaming``, ``segmenter``, ``tts_lang``)."""
        bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        require_speech(bundle)
        settings = PipelineSettings.from_bundle(bundle)
        gen = settings.generation_config(**({} if top_k is None else {"top_k": top_k}))
        return cls(SpeechDecoder.from_bundle(bundle), load_codec(bundle), llm, gen, settings.streaming_config(),
                   settings.segmenter_config(), settings.tts_lang)

    def with_options(self, **changes: Any) -> "SpeechOutput":
        """A copy sharing the models with other settings (``top_k=…`` changes the generation config;
        ``use_prefix=…``, ``streaming=…``)."""
        if "top_k" in changes:
            changes["generation"] = dataclasses.replace(self.generation, top_k=changes.pop("top_k"))
        return dataclasses.replace(self, **changes)

    def normalize(self, text: str) -> str:
        """A segment's text as the speech decoder gets it."""
        return normalize_tts(text, self.tts_lang)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def needs_hidden(self) -> bool:
        """Whether segments need the LLM hidden states (the decoder has a prefix decoder and it is used)."""
        return self.use_prefix and self.decoder.cfg.use_prefix

    def new_generator(self, seed: int = 0) -> SpeechGenerator:
        """A :class:`SpeechGenerator` with its own sampling generator (one per answer)."""
        return SpeechGenerator(self.decoder, self.llm, self.generation, seed=seed)

    def written_answer(self, text: str, system: str = "", question: str = "") -> "ForcedTokens":
        """The token source of an answer that is already written: its ids and, when the prefix decoder is used,
        the hidden states the LLM has when it writes them as the answer to ``question``
        (:func:`~freeze_omni.decoder.generator.answer_hidden`)."""
        text = text.strip()
        hidden = answer_hidden(self.llm, system, question, text) if self.needs_hidden and text else None
        return ForcedTokens(self.llm.tokenize(text), hidden)


class ForcedTokens:
    """A token source over ids that are already known (same interface as
    :class:`~freeze_omni.llm.generation.TokenGenerator`: ``next``, ``close``, ``done``, ``ids``, ``hiddens``).

    Args:
        ids: the answer's token ids.
        hidden: ``[N, H]`` the hidden state that produced each, or None.
    """

    def __init__(self, ids: list[int], hidden: Optional[torch.Tensor] = None) -> None:
        if hidden is not None and hidden.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {hidden.shape[0]} hidden states")
        self._all, self._hidden = list(ids), hidden
        self.ids: list[int] = []
        self.hiddens: list[torch.Tensor] = []
        self.finished = False
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def next(self) -> Optional[int]:
        if self._done or len(self.ids) == len(self._all):
            self.finished = self.finished or not self._done
            self._done = True
            return None
        i = len(self.ids)
        self.ids.append(self._all[i])
        if self._hidden is not None:
            self.hiddens.append(self._hidden[i])
        return self._all[i]

    def close(self) -> None:
        self._done = True

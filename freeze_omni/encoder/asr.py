"""Streaming speech recognition with the encoder and its CTC head (stage 1), chunk by chunk as the server does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from freeze_omni.audio.features import StreamingFrontend, extract
from freeze_omni.bundle import Bundle
from freeze_omni.encoder.ctc import (BeamCTCState, BeamSettings, CharTokenizer, CTCHead, GreedyCTCState,
                                     new_ctc_decoder)
from freeze_omni.encoder.encoder import EncoderCache, SpeechEncoder
from freeze_omni.encoder.lm import NgramLM


@dataclass
class RecognizerStream:
    """One live stream's state: front end, pending feature frames, encoder cache, CTC decoder."""

    frontend: StreamingFrontend
    cache: EncoderCache
    ctc: GreedyCTCState | BeamCTCState = field(default_factory=GreedyCTCState)
    pending: np.ndarray = field(default_factory=lambda: np.zeros((0, 80), dtype=np.float32))


class SpeechRecognizer:
    """Encoder + CTC head + tokenizer, decoding greedily or by prefix beam search with an optional word LM."""

    def __init__(self, encoder: SpeechEncoder, head: CTCHead, tokenizer: CharTokenizer,
                 lm: Optional[NgramLM] = None, beam: Optional[BeamSettings] = None) -> None:
        self.encoder, self.head, self.tokenizer = encoder.eval(), head.eval(), tokenizer
        self.lm, self.beam = lm, beam

    @classmethod
    def from_bundle(cls, path: str, decoder: str = "auto") -> "SpeechRecognizer":
        """``decoder``: ``greedy``, ``beam`` (with the bundle's LM when it has one) or ``auto`` (beam + LM when
        the bundle has an ``lm`` component, else greedy)."""
        if decoder not in ("auto", "greedy", "beam"):
            raise ValueError(f"unknown CTC decoder {decoder!r} (greedy, beam, auto)")
        b = Bundle(path)
        ctc_cfg = b.config.get("ctc", {})
        tok = CharTokenizer(ctc_cfg.get("chars", CharTokenizer().chars))
        enc = b.load_encoder()
        head = CTCHead(enc.output_dim, tok.vocab_size)
        head.load_state_dict(b.tensors("ctc"))
        lm, beam = None, None
        if decoder == "beam" or (decoder == "auto" and b.has("lm")):
            lm = NgramLM.load(b.file("lm")) if b.has("lm") else None
            beam = BeamSettings(**ctc_cfg.get("beam", {}))
        return cls(enc, head, tok, lm, beam)

    def new_decoder(self) -> GreedyCTCState | BeamCTCState:
        return new_ctc_decoder(self.tokenizer.chars, self.lm, self.beam)

    @property
    def frontend_kind(self) -> str:
        return self.encoder.cfg.frontend

    # -- streaming -------------------------------------------------------------------------------------------------
    def new_stream(self) -> RecognizerStream:
        return RecognizerStream(StreamingFrontend(self.frontend_kind), self.encoder.init_cache(), self.new_decoder())

    @torch.inference_mode()
    def accept(self, stream: RecognizerStream, samples: np.ndarray, final: bool = False) -> str:
        """Feed 16 kHz samples; returns the text newly recognised. ``final=True`` flushes a partial chunk."""
        feats = np.concatenate([stream.pending, stream.frontend.accept(samples)])
        step, sub = self.encoder.cfg.chunk_frames, self.encoder.cfg.subsampling_rate
        n_full = feats.shape[0] // step * step
        take = feats.shape[0] - feats.shape[0] % sub if final else n_full
        new_ids: list[int] = []
        for s in range(0, take, step):
            chunk = torch.from_numpy(feats[s:min(s + step, take)])[None]
            out, stream.cache = self.encoder.forward_chunk(chunk, stream.cache)
            new_ids += stream.ctc.update(self.head(out)[0])
        stream.pending = feats[take:] if not final else feats[:0]
        if final:
            stream.ctc.finalize()
        return self.tokenizer.decode(new_ids) if new_ids else ""

    def text(self, stream: RecognizerStream) -> str:
        return self.tokenizer.decode(stream.ctc.ids)

    # -- whole files -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def transcribe(self, wave: np.ndarray, mode: str = "streaming", packet: int = 2560) -> str:
        """Transcribe a whole utterance.

        Args:
            mode: ``streaming`` feeds ``packet``-sample packets through :meth:`accept` exactly as a live stream;
                ``full`` runs the same encoder with full attention over the utterance (what streaming costs).
        """
        if mode == "streaming":
            st = self.new_stream()
            for s in range(0, len(wave), packet):
                self.accept(st, wave[s:s + packet])
            self.accept(st, np.zeros(0, dtype=np.float32), final=True)
            return self.text(st)
        if mode != "full":
            raise ValueError(f"unknown mode {mode!r}")
        feats = torch.from_numpy(extract(wave, self.frontend_kind))[None]
        out, lens = self.encoder(feats, torch.tensor([feats.shape[1]]), chunk_size=None)
        st = self.new_decoder()
        st.update(self.head(out)[0, : int(lens[0])])
        return self.tokenizer.decode(st.finalize())

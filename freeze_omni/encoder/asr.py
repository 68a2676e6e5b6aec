"""Streaming speech recognition with the encoder and its CTC head (stage 1), chunk by chunk as the server does.

With a second pass (:class:`SecondPass`, ``--decoder whisper``), the CTC head still gives the live partial
transcript, and when the utterance ends Whisper's pretrained text decoder reads the encoder states streamed so
far and writes the final one (nothing is re-encoded).
"""

from __future__ import annotations

import time
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
from freeze_omni.encoder.whisper_decoder import BEAM, WINDOW_FRAMES


@dataclass
class RecognizerStream:
    """One live stream's state: front end, pending feature frames, encoder cache, CTC decoder."""

    frontend: StreamingFrontend
    cache: EncoderCache
    ctc: GreedyCTCState | BeamCTCState = field(default_factory=GreedyCTCState)
    pending: np.ndarray = field(default_factory=lambda: np.zeros((0, 80), dtype=np.float32))
    states: list = field(default_factory=list)  # encoder outputs, kept for a second pass
    final_text: Optional[str] = None  # the second pass's transcript, once the stream is finished


class SecondPass:
    """Whisper's frozen text decoder over an utterance's encoder states ``[1, T, D]`` (beam search, no timestamps).

    Utterances longer than Whisper's 30 s window get no second pass (``None``: the CTC transcript stands)."""

    def __init__(self, decoder, tokenizer, beam: int = BEAM) -> None:
        self.decoder, self.tokenizer, self.beam = decoder, tokenizer, beam

    @classmethod
    def load(cls, name: str = "tiny.en", beam: int = BEAM) -> "SecondPass":
        from freeze_omni.encoder.whisper_decoder import load_whisper_decoder

        return cls(*load_whisper_decoder(name), beam=beam)

    def __call__(self, states: torch.Tensor) -> Optional[str]:
        if states.shape[1] == 0 or states.shape[1] > WINDOW_FRAMES:
            return None
        t = self.tokenizer
        return t.decode(self.decoder.beam_search(states, t.prompt, t.eot, self.beam, suppress=t.special))


class SpeechRecognizer:
    """Encoder + CTC head + tokenizer, decoding greedily or by prefix beam search with an optional word LM."""

    def __init__(self, encoder: SpeechEncoder, head: CTCHead, tokenizer: CharTokenizer,
                 lm: Optional[NgramLM] = None, beam: Optional[BeamSettings] = None,
                 second_pass: Optional[SecondPass] = None) -> None:
        self.encoder, self.head, self.tokenizer = encoder.eval(), head.eval(), tokenizer
        self.lm, self.beam, self.second_pass = lm, beam, second_pass
        self.final_seconds: Optional[float] = None  # how long the last stream's final call took (end of audio ->
        # final transcript: the last partial chunk, CTC finalisation and the second pass)

    @classmethod
    def from_bundle(cls, path: str, decoder: str = "auto") -> "SpeechRecognizer":
        """``decoder``: ``greedy``, ``beam`` (with the bundle's LM when it has one), ``whisper`` (greedy CTC
        partials, then Whisper's text decoder over the streamed states: ``asr.second_pass`` of the bundle, default
        ``whisper:tiny.en``) or ``auto`` (the bundle's second pass when it names one, else beam + LM when the
        bundle has an ``lm`` component, else greedy)."""
        if decoder not in ("auto", "greedy", "beam", "whisper"):
            raise ValueError(f"unknown decoder {decoder!r} (greedy, beam, whisper, auto)")
        b = Bundle(path)
        ctc_cfg = b.config.get("ctc", {})
        tok = CharTokenizer(ctc_cfg.get("chars", CharTokenizer().chars))
        enc = b.load_encoder()
        head = CTCHead(enc.output_dim, tok.vocab_size)
        head.load_state_dict(b.tensors("ctc"))
        lm, beam, second = None, None, None
        asr = b.config.get("asr", {})
        named = asr.get("second_pass")
        if decoder == "whisper" or (decoder == "auto" and named):
            kind, _, name = (named or "whisper:tiny.en").partition(":")
            if kind != "whisper":
                raise ValueError(f"{path}: unknown second pass {named!r} (whisper:tiny.en)")
            second = SecondPass.load(name, int(asr.get("beam", BEAM)))
        elif decoder == "beam" or (decoder == "auto" and b.has("lm")):
            lm = NgramLM.load(b.file("lm")) if b.has("lm") else None
            beam = BeamSettings(**ctc_cfg.get("beam", {}))
        return cls(enc, head, tok, lm, beam, second)

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
        t0 = time.perf_counter()
        feats = np.concatenate([stream.pending, stream.frontend.accept(samples)])
        step, sub = self.encoder.cfg.chunk_frames, self.encoder.cfg.subsampling_rate
        n_full = feats.shape[0] // step * step
        take = feats.shape[0] - feats.shape[0] % sub if final else n_full
        new_ids: list[int] = []
        for s in range(0, take, step):
            chunk = torch.from_numpy(feats[s:min(s + step, take)])[None]
            out, stream.cache = self.encoder.forward_chunk(chunk, stream.cache)
            new_ids += stream.ctc.update(self.head(out)[0])
            if self.second_pass is not None:
                stream.states.append(out)
        stream.pending = feats[take:] if not final else feats[:0]
        if final:
            stream.ctc.finalize()
            if self.second_pass is not None and stream.states:
                stream.final_text = self.second_pass(torch.cat(stream.states, dim=1))
            self.final_seconds = time.perf_counter() - t0
        return self.tokenizer.decode(new_ids) if new_ids else ""

    def text(self, stream: RecognizerStream) -> str:
        """The transcript so far: the second pass's once the stream is finished, else the CTC one."""
        return stream.final_text if stream.final_text is not None else self.tokenizer.decode(stream.ctc.ids)

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
        states = out[:, : int(lens[0])]
        text = self.second_pass(states) if self.second_pass is not None else None
        if text is not None:
            return text
        st = self.new_decoder()
        st.update(self.head(states)[0])
        return self.tokenizer.decode(st.finalize())

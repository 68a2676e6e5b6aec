"""The frozen LLM as a recogniser: input stage 2's task at inference.

Stage 2 (``freeze-omni train align``) teaches the bridge to make the frozen LLM write what was said, after the
``TRANSCRIBE`` task embeddings. Reading that transcript back is the most direct measure of whether the LLM
*reads the words* from the adapter — which the spoken Q&A needs before it can answer like the text
(``freeze-omni eval asr --decoder llm``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from freeze_omni.audio.features import extract
from freeze_omni.llm.bridge import Task
from freeze_omni.llm.model import SpeechLLM, whole_chunks
from freeze_omni.llm.sampling import SamplingConfig


class LLMTranscriber:
    """``transcribe(wave)``: the greedy transcript the frozen LLM writes from the bridge's audio embeddings."""

    beam = lm = None  # no CTC decoding here (the interface of encoder.asr.SpeechRecognizer)

    def __init__(self, model: SpeechLLM, system: str, max_new_tokens: int = 64) -> None:
        self.model, self.system = model.eval(), system
        self.sampling = SamplingConfig(greedy=True, max_new_tokens=max_new_tokens)

    @classmethod
    def from_bundle(cls, path: str | Path, **kwargs) -> "LLMTranscriber":
        from freeze_omni.llm.loader import load_speech_llm

        model, system = load_speech_llm(path)
        return cls(model, system, **kwargs)

    def _audio(self, wave: np.ndarray) -> torch.Tensor:
        """The adapter's outputs ``[1, A, H]`` for a whole utterance (streaming chunk mask, whole 160 ms chunks)."""
        m = self.model
        f = whole_chunks(extract(wave, m.encoder.cfg.frontend), m.encoder.cfg.chunk_frames)
        audio, n = m.audio_embeds(torch.from_numpy(np.ascontiguousarray(f))[None], torch.tensor([f.shape[0]]))
        return audio[:, : int(n[0])]

    @torch.inference_mode()
    def transcribe(self, wave: np.ndarray, mode: str = "streaming") -> str:
        if mode != "streaming":
            raise ValueError("the LLM transcribes from the streaming bridge only (--mode streaming)")
        m, llm = self.model, self.model.llm
        prefix = llm.system_ids(self.system) + llm.framing_ids(llm.framing.user_prefix)
        seq = torch.cat([m.embed_ids(prefix), m.bridge.task(Task.TRANSCRIBE, m.cfg.transcribe_tokens)[0],
                         self._audio(wave)[0]])
        _, _, state = llm.forward_embeds(seq[None], llm.new_state(), logits_for="none")
        first = m.embed_ids(llm.framing_ids(llm.framing.assistant_prefix))[None]
        ids, _, _ = llm.generate(state, first, self.sampling)
        return llm.tokenizer.decode(ids, skip_special_tokens=True).strip()


class AdapterTranscriber(LLMTranscriber):
    """``transcribe(wave)``: what the adapter itself writes, read through the token CTC of stage 2
    (:mod:`freeze_omni.train.token_ctc`): the nearest of the LLM's input embeddings (or the blank) at every adapter
    position, greedy, repeats and blanks removed. It needs a bundle trained with ``token_ctc_weight`` (its
    ``token_ctc`` component); the LLM itself does not run (``freeze-omni eval asr --decoder adapter``)."""

    @classmethod
    def from_bundle(cls, path: str | Path, **kwargs) -> "AdapterTranscriber":
        from freeze_omni.bundle import Bundle

        b = Bundle(path)
        if not b.has("token_ctc"):
            raise ValueError(f"{path}: no token_ctc component (train align/qa with token_ctc_weight > 0)")
        rec = super().from_bundle(path, **kwargs)
        t = b.tensors("token_ctc")
        rec.vocab = torch.cat([t["blank"][None], rec.model.llm.input_embedding_table().float()])
        rec.scale = float(t["log_scale"].exp())
        return rec

    @torch.inference_mode()
    def transcribe(self, wave: np.ndarray, mode: str = "streaming") -> str:
        if mode != "streaming":
            raise ValueError("the adapter is read on the streaming encoder only (--mode streaming)")
        from freeze_omni.encoder.ctc import greedy_decode
        from freeze_omni.train.token_ctc import distance_logits

        a = self._audio(wave).float()
        ids = greedy_decode(distance_logits(a, self.vocab, self.scale), torch.tensor([a.shape[1]]))[0]
        return self.model.llm.tokenizer.decode([i - 1 for i in ids], skip_special_tokens=True).strip()  # 0: blank

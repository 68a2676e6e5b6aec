"""The listening path of the engine, for many sessions at once.

Per session: 160 ms packets -> VAD (speech start / end) and a pre-roll ring while nobody speaks -> for an open
user turn, the turn's own streaming front end -> features of one chunk. Per worker round: the chunks of all the
sessions in the round go through the encoder and the adapter in one batch (:mod:`freeze_omni.dialogue.batching`),
then each session feeds its chunk's two embeddings to its LLM context and reads the state head. The result equals
:meth:`freeze_omni.llm.model.Listener.feed_chunk` chunk by chunk (tested); pre-roll chunks are encoded as they
come but reach the LLM together with the first live chunk, and their verdicts are not used (upstream forces them
to "keep listening", ``reference/freeze_omni_facts.md`` §3.3).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from freeze_omni.audio.features import StreamingFrontend
from freeze_omni.dialogue import events as ev
from freeze_omni.dialogue.batching import adapt_chunks, encode_chunks
from freeze_omni.dialogue.context import Piece
from freeze_omni.dialogue.session import Packet, Session, Turn
from freeze_omni.llm.bridge import UserState

HOP = 160  # input samples per feature frame (10 ms at 16 kHz)


class ChunkListener:
    """Listening for every session of an engine (read-only model pieces, per-session state in the session).

    Args:
        model: the :class:`~freeze_omni.llm.model.SpeechLLM`.
        metrics: where chunk latency and compute time go.
    """

    def __init__(self, model: Any, metrics: Any) -> None:
        self.model, self.metrics = model, metrics
        self.chunk_frames = model.encoder.cfg.chunk_frames
        self.packet = self.chunk_frames * HOP  # samples per 160 ms chunk
        self.user_prefix = model.llm.framing_ids(model.llm.framing.user_prefix)

    def open_turn(self, s: Session, barge_in: bool) -> None:
        """A fresh turn (front end, encoder and adapter caches) fed from the pre-roll ring; the ring's last
        packet is the one where the speech started, the others are pre-roll."""
        m, dev = self.model, self.model.llm.device
        t = Turn(StreamingFrontend(m.encoder.cfg.frontend), m.encoder.init_cache(1, dev), m.adapter.init_cache(1, dev),
                 barge_in=barge_in)
        ring = list(s.ring)
        s.ring.clear()
        for p in ring[:-1]:
            p.preroll = True
        t.feed.extend(ring)
        s.turn = t

    def vad(self, s: Session, pkt: Packet) -> tuple[bool, bool]:
        """Run the session's VAD over a packet: ``(speech started, speech ended)`` in it (events emitted)."""
        start = end = False
        for e in s.vad.process(pkt.samples):
            ms = e.sample * 1000 // 16000
            s.emit(ev.SpeechStarted(ms) if e.kind == "start" else ev.SpeechStopped(ms))
            start, end = start or e.kind == "start", end or e.kind == "end"
        return start, end

    def features(self, t: Turn, pkt: Packet) -> Optional[np.ndarray]:
        """The turn's next chunk of features ``[chunk_frames, 80]`` once ``pkt`` is in (None if incomplete)."""
        t.pending = np.concatenate([t.pending, t.frontend.accept(pkt.samples)])
        if len(t.pending) < self.chunk_frames:
            return None
        feats, t.pending = t.pending[:self.chunk_frames], t.pending[self.chunk_frames:]
        return feats

    def encode(self, sessions: list[Session], feats: list[np.ndarray]) -> torch.Tensor:
        """Encoder + adapter for one chunk of each session, batched; updates their caches. ``[B, 2, H]``."""
        m = self.model
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack(feats)).to(m.llm.device)  # [B, chunk_frames, 80]
        if len(sessions) > 1:
            enc, enc_caches = encode_chunks(m.encoder, x, [s.turn.enc for s in sessions])
            emb, ad_caches = adapt_chunks(m.adapter, enc, [s.turn.adapter for s in sessions])
        else:
            enc, c = m.encoder.forward_chunk(x, sessions[0].turn.enc)
            emb, a = m.adapter.forward_chunk(enc, sessions[0].turn.adapter)
            enc_caches, ad_caches = [c], [a]
        for s, c, a in zip(sessions, enc_caches, ad_caches):
            s.turn.enc, s.turn.adapter = c, a
        self.metrics.counter("batches_total")
        self.metrics.counter("batched_chunks_total", len(sessions))
        self.metrics.counter("listen_compute_seconds_total", time.perf_counter() - t0)
        return emb

    def inputs(self, s: Session, pkt: Packet, emb: torch.Tensor) -> Optional[torch.Tensor]:
        """The LLM inputs ``[T, H]`` of one encoded chunk ``[2, H]`` (booked into the open user turn; the caller
        feeds them, then asks :meth:`verdict`), or None for a pre-roll chunk, whose inputs wait for the first live
        one. A turn's first chunk brings the lead (:meth:`lead`), unless the engine fed it while nobody spoke."""
        t = s.turn
        pieces = [Piece.of_embeds(emb)]
        if t.chunks == 0:  # (an open turn already holds the lead, or part of it, fed while nobody spoke)
            pieces = (s.ctx.rest_of_lead() if s.ctx.open else self.lead()) + pieces
        t.chunks += 1
        self.metrics.counter("listen_audio_seconds_total", self.packet / 16000)
        if pkt.preroll:
            t.deferred += pieces
            return None
        pieces, t.deferred = t.deferred + pieces, []
        return s.ctx.open_inputs(pieces)

    def lead(self) -> list[Piece]:
        """What opens every user turn in the LLM context: the user prefix and the bridge's prompt embeddings."""
        return [Piece.of_ids(self.user_prefix), Piece(prompt=True, length=self.model.cfg.prompt_num)]

    def verdict(self, pkt: Packet, hidden: torch.Tensor) -> UserState:
        """The state head's verdict on the last hidden state ``[H]`` of a fed chunk (chunk latency recorded)."""
        verdict = self.model.bridge.predictor_head.decide(hidden)
        self.metrics.counter("listen_chunks_total")
        self.metrics.observe("chunk_latency_seconds", time.perf_counter() - pkt.t)
        return verdict

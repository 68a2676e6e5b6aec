"""`DialogueEngine`: the shared model, the sessions, and one round of work per ready session.

The engine owns the read-only pieces (encoder, adapter, bridge, frozen LLM, speech decoder, codec, VAD model) and
a :class:`~freeze_omni.dialogue.scheduler.Scheduler`. A worker round (:meth:`DialogueEngine.process`) takes a
batch of sessions and, for each, (1) applies its queued commands and runs the VAD over new packets, (2) encodes
its next 160 ms chunk — the encoder and adapter run once for the whole batch — then feeds the chunk to that
session's LLM context and reads the state head, and (3) advances its answer by one unit. Every decision goes
through the pure :func:`~freeze_omni.dialogue.state.transition`; :meth:`_act` carries out the actions.

Barge-in: speech during an answer pauses the answer's text generation with the LLM cache covering exactly the
tokens generated (:meth:`PausableGenerator.settle`), then the speech is fed on top. RESPOND cuts the answer: the
cache keeps the assistant prefix and the tokens whose audio has gone out, the user's speech is re-fed after them,
and a new answer starts. IGNORE (or silence, or the turn limit) crops the speech away and the answer resumes
where it was. Old turns are evicted at turn boundaries (:meth:`Context.maybe_evict`), so a session of any length
runs in bounded memory.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from freeze_omni.audio.features import StreamingFrontend
from freeze_omni.dialogue import events as ev
from freeze_omni.dialogue.answer import Audio, AnswerStream, Done, TextDelta
from freeze_omni.dialogue.batching import adapt_chunks, encode_chunks
from freeze_omni.dialogue.context import Context, Piece
from freeze_omni.dialogue.metrics import Metrics
from freeze_omni.dialogue.scheduler import Scheduler
from freeze_omni.dialogue.session import Packet, Session, Turn
from freeze_omni.dialogue.state import Action, Phase, Signal, answering, transition, turn_open
from freeze_omni.dialogue.vad import VADConfig, VADModel, VADStream
from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.generation import TokenGenerator

log = logging.getLogger(__name__)
HOP = 160  # input samples per feature frame (10 ms at 16 kHz)


@dataclass
class EngineConfig:
    """Serving knobs.

    Attributes:
        workers: worker threads sharing the model.
        batching: encode the chunks of different sessions in one batch (False: one session per round).
        max_batch: sessions per round when batching.
        max_context: LLM cache positions that trigger eviction of old turns at the next turn boundary.
        keep_context: positions kept by an eviction (default half of ``max_context``).
        preroll_chunks: 160 ms chunks from before the speech onset fed first (the first syllable is not lost).
        max_turn_seconds: a user turn with no verdict by then is rolled back.
        answer_lead_seconds: pace answers to stay at most this far ahead of real-time playback (None: as fast as
            possible).
        keep_unspoken: on a cut answer, keep every generated token in the context, not only the spoken ones.
        seed: base seed of each session's sampling.
        vad: the speech start/end rule.
    """

    workers: int = 1
    batching: bool = True
    max_batch: int = 8
    max_context: int = 2048
    keep_context: Optional[int] = None
    preroll_chunks: int = 4
    max_turn_seconds: float = 30.0
    answer_lead_seconds: Optional[float] = 2.0
    keep_unspoken: bool = False
    seed: int = 0
    vad: VADConfig = field(default_factory=VADConfig)


class PausableGenerator(TokenGenerator):
    """A :class:`TokenGenerator` that can stop between tokens with the cache covering exactly :attr:`ids`."""

    @torch.no_grad()
    def settle(self) -> None:
        """Feed the last returned token now (what the next :meth:`next` would do first), so that the LLM state
        covers exactly the returned ids; sampling resumes from the same logits."""
        if self._unfed is not None and not self._done:
            hidden, logits = self.llm.step(self.state, [self._unfed])
            self._hidden, self._logits, self._unfed = hidden[0], logits, None


class DialogueEngine:
    """Sessions over one shared model (see the module docstring).

    Args:
        model: the :class:`~freeze_omni.llm.model.SpeechLLM` (eval mode).
        speech: the :class:`~freeze_omni.dialogue.speech.SpeechOutput`, or None for text-only answers.
        system_prompt: the default system prompt.
        sampling: the answer's :class:`~freeze_omni.llm.sampling.SamplingConfig`.
        cfg: serving knobs.
        vad_model: shared VAD model (default: silero; falls back to an energy gate only if asked).
    """

    def __init__(self, model: Any, speech: Any, system_prompt: str, sampling: Any,
                 cfg: EngineConfig = EngineConfig(), vad_model: Optional[VADModel] = None) -> None:
        from freeze_omni.dialogue.vad import SileroVAD

        self.model, self.speech, self.system_prompt, self.sampling, self.cfg = model.eval(), speech, system_prompt, \
            sampling, cfg
        self.llm = model.llm
        self.vad_model = vad_model if vad_model is not None else SileroVAD()
        self.packet = model.encoder.cfg.chunk_frames * HOP
        self.max_turn_chunks = max(1, int(cfg.max_turn_seconds * 16000 / self.packet))
        self.metrics = Metrics()
        self.scheduler = Scheduler(self.process, self._release, cfg.workers, cfg.max_batch if cfg.batching else 1)
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._user_prefix = self.llm.framing_ids(self.llm.framing.user_prefix)
        self._assistant_prefix = self.llm.framing_ids(self.llm.framing.assistant_prefix)
        self.metrics.gauge("sessions_active", lambda: len(self.sessions), "open sessions")
        self.metrics.gauge("workers", lambda: self.scheduler.n_workers, "worker threads")
        self.metrics.gauge("workers_busy", lambda: self.scheduler.busy_workers, "workers in a round")
        self.metrics.gauge("sessions_ready", lambda: self.scheduler.queued, "sessions waiting for a worker")

    @classmethod
    def from_bundle(cls, path: str, cfg: EngineConfig = EngineConfig(), vad: str = "silero") -> "DialogueEngine":
        """Load a bundle: listening side, and the speaking side when the bundle has one."""
        from freeze_omni.bundle import Bundle
        from freeze_omni.dialogue.speech import SpeechOutput, has_speech
        from freeze_omni.dialogue.vad import load_vad
        from freeze_omni.llm.loader import load_speech_llm
        from freeze_omni.settings import PipelineSettings

        model, system = load_speech_llm(path)
        bundle = Bundle(path)
        speech = SpeechOutput.from_bundle(bundle, model.llm) if has_speech(bundle) else None
        sampling = PipelineSettings.from_bundle(bundle).sampling_config()
        return cls(model, speech, system, sampling, cfg, load_vad(vad))

    # ------------------------------------------------------------------ lifecycle
    @property
    def sample_rate(self) -> Optional[int]:
        """Sample rate of the answer audio (None: text-only)."""
        return self.speech.sample_rate if self.speech is not None else None

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        for s in list(self.sessions.values()):
            self.close_session(s)
        self.scheduler.stop()

    def warmup(self, rounds: int = 12) -> None:
        """Run one throwaway turn (a chunk through every stage, a few answer steps) before serving."""
        s = self._new_session(None, None, False)
        rng = np.random.default_rng(0)
        s.push_audio((0.05 * rng.standard_normal(self.packet * 2)).astype(np.float32))
        s.flush()
        for _ in range(rounds):
            self.process([s])
        self.scheduler.discard(s)

    # ------------------------------------------------------------------ sessions (transport side)
    def open_session(self, on_event: Any = None, system_prompt: Optional[str] = None,
                     vad: Optional[bool] = None, seed: Optional[int] = None) -> Session:
        """A new session; its events go to ``on_event(event)`` (called from worker threads). ``seed``: its
        sampling seed (default: the engine's seed plus a session counter)."""
        s = self._new_session(on_event, system_prompt, self.cfg.vad.enabled if vad is None else vad, seed)
        with self._lock:
            self.sessions[s.id] = s
        self.metrics.counter("sessions_total")
        self.scheduler.notify(s)  # builds the LLM context on a worker
        return s

    def _new_session(self, on_event: Any, system_prompt: Optional[str], vad: bool,
                     seed: Optional[int] = None) -> Session:
        with self._lock:
            self._count += 1
            n = self._count
        return Session(self, system_prompt or self.system_prompt, VADStream(self.vad_model, self.cfg.vad), vad,
                       on_event, self.cfg.seed + n if seed is None else seed)

    def close_session(self, session: Session) -> None:
        with self._lock:
            self.sessions.pop(session.id, None)
        self.scheduler.discard(session)

    def _release(self, s: Session) -> None:
        s.ctx = s.answer = s.gen = s.turn = None
        s.packets.clear()
        s.ring.clear()
        s.on_event = None

    # ------------------------------------------------------------------ a worker round
    def process(self, batch: list[Session]) -> dict[Session, tuple[bool, Optional[float]]]:
        rows: list[tuple[Session, Packet, np.ndarray]] = []
        with torch.inference_mode():
            for s in batch:
                self._guard(s, self._intake, s)
                item = self._guard(s, self._next_chunk, s)
                if item is not None:
                    rows.append((s, *item))
            if rows:
                self._listen(rows)
            out = {}
            for s in batch:
                wake = self._guard(s, self._answer_step, s)
                out[s] = (s.has_work() or self._answer_ready(s), wake)
        return out

    def _guard(self, s: Session, fn: Any, *args: Any) -> Any:
        """Run one session's work; an exception resets that session's conversation, never the others'."""
        try:
            return fn(*args)
        except Exception as e:
            log.exception("session %s failed", s.id)
            self.metrics.counter("errors_total", code="internal_error")
            s.emit(ev.SessionError("internal_error", f"{type(e).__name__}: {e}"))
            self._reset(s, s.system_prompt)
            return None

    # ------------------------------------------------------------------ input
    def _intake(self, s: Session) -> None:
        if s.ctx is None:
            self._reset(s, s.system_prompt)
        for cmd in s.take_commands():
            if cmd.kind == "audio":
                s.samples_in += len(cmd.data)
                s.add_audio(cmd.data, cmd.t, self.packet)
            elif cmd.kind == "flush":
                s.add_flush(cmd.t, self.packet)
            elif cmd.kind == "cancel":
                self._signal(s, Signal.CANCEL)
            elif cmd.kind == "update":
                if cmd.data["vad"] is not None:
                    s.vad_enabled = bool(cmd.data["vad"])
                prompt = cmd.data["system_prompt"]
                if prompt is not None and prompt != s.system_prompt:
                    self._reset(s, prompt)
                s.emit(ev.SessionUpdated(s.system_prompt, s.vad_enabled))

    def _next_chunk(self, s: Session) -> Optional[tuple[Packet, np.ndarray]]:
        """Run the VAD over new packets until the open turn has a chunk to encode; return it (or None)."""
        cf = self.model.encoder.cfg.chunk_frames
        while True:
            t = s.turn
            if t is not None and t.feed:
                pkt = t.feed.popleft()
                if pkt.samples is None:  # end of input
                    self._end_turn(s, Signal.END_OF_INPUT)
                    continue
                t.pending = np.concatenate([t.pending, t.frontend.accept(pkt.samples)])
                if len(t.pending) >= cf:
                    feats, t.pending = t.pending[:cf], t.pending[cf:]
                    return pkt, feats
                continue
            if not s.packets:
                return None
            self._vad_packet(s, s.packets.popleft())

    def _vad_packet(self, s: Session, pkt: Packet) -> None:
        if pkt.samples is None:
            if turn_open(s.phase):
                s.turn.feed.append(pkt)
            return
        start = end = False
        if s.vad_enabled:
            for e in s.vad.process(pkt.samples):
                ms = e.sample * 1000 // 16000
                s.emit(ev.SpeechStarted(ms) if e.kind == "start" else ev.SpeechStopped(ms))
                start, end = start or e.kind == "start", end or e.kind == "end"
        elif s.phase == Phase.IDLE:
            start = True
        if turn_open(s.phase):
            pkt.speech_end = end
            s.turn.feed.append(pkt)
            return
        s.ring.append(pkt)
        if start:
            self._signal(s, Signal.SPEECH_START)

    # ------------------------------------------------------------------ listening
    def _listen(self, rows: list[tuple[Session, Packet, np.ndarray]]) -> None:
        m = self.model
        t0 = time.perf_counter()
        feats = torch.from_numpy(np.stack([f for _, _, f in rows])).to(self.llm.device)  # [B, cf, 80]
        if len(rows) > 1:
            enc, enc_caches = encode_chunks(m.encoder, feats, [s.turn.enc for s, _, _ in rows])
            emb, ad_caches = adapt_chunks(m.adapter, enc, [s.turn.adapter for s, _, _ in rows])
        else:
            enc, c = m.encoder.forward_chunk(feats, rows[0][0].turn.enc)
            emb, a = m.adapter.forward_chunk(enc, rows[0][0].turn.adapter)
            enc_caches, ad_caches = [c], [a]
        share = (time.perf_counter() - t0) / len(rows)
        self.metrics.counter("batches_total")
        self.metrics.counter("batched_chunks_total", len(rows))
        for b, (s, pkt, _) in enumerate(rows):
            s.turn.enc, s.turn.adapter = enc_caches[b], ad_caches[b]
            t1 = time.perf_counter()
            self._guard(s, self._feed_chunk, s, pkt, emb[b])
            self.metrics.counter("listen_compute_seconds_total", share + time.perf_counter() - t1)
            self.metrics.counter("listen_audio_seconds_total", self.packet / 16000)

    def _feed_chunk(self, s: Session, pkt: Packet, emb: torch.Tensor) -> None:
        """One encoded chunk ``[2, H]`` into the session's LLM context; act on the state head's verdict."""
        t = s.turn
        pieces = [Piece.of_embeds(emb)]
        if t.chunks == 0:  # the turn's lead: user prefix and prompt embeddings
            pieces = [Piece.of_ids(self._user_prefix), Piece(prompt=True, length=self.model.cfg.prompt_num)] + pieces
        t.chunks += 1
        if pkt.preroll:  # verdicts on audio from before the onset are not used: feed it with the first live chunk
            t.deferred += pieces
            return
        hidden = s.ctx.feed(t.deferred + pieces)
        t.deferred = []
        self.metrics.counter("listen_chunks_total")
        self.metrics.observe("chunk_latency_seconds", time.perf_counter() - pkt.t)
        verdict = self.model.bridge.predictor_head.decide(hidden)
        if verdict == UserState.RESPOND:
            self._end_turn(s, Signal.RESPOND)
        elif verdict == UserState.IGNORE:
            self._end_turn(s, Signal.IGNORE)
        elif pkt.speech_end:
            self._end_turn(s, Signal.SPEECH_END)
        elif t.chunks >= self.max_turn_chunks:
            self._end_turn(s, Signal.TURN_LIMIT)

    def _end_turn(self, s: Session, signal: Signal) -> None:
        decision = {Signal.SPEECH_END: "no_decision"}.get(signal, signal.value)
        t = s.turn
        s.emit(ev.TurnEnded(decision, t.chunks if t else 0, bool(t and t.barge_in)))
        self.metrics.counter("turns_total", decision=decision)
        self._signal(s, signal)

    # ------------------------------------------------------------------ answering
    def _answer_ready(self, s: Session) -> bool:
        return s.answer is not None and not (s.paused and not s.gen.done) and self._lead_wait(s) is None

    def _lead_wait(self, s: Session) -> Optional[float]:
        """Seconds to wait before the next answer step so audio stays ``answer_lead_seconds`` ahead of playback."""
        lead = self.cfg.answer_lead_seconds
        if lead is None or s.first_audio_t is None or not self.sample_rate:
            return None
        ahead = s.audio_out / self.sample_rate - (time.monotonic() - s.first_audio_t)
        return ahead - lead if ahead > lead else None

    def _answer_step(self, s: Session) -> Optional[float]:
        """One unit of the answer; returns the ``time.monotonic()`` to come back at when paced."""
        if s.answer is None or (s.paused and not s.gen.done):
            return None
        wait = self._lead_wait(s)
        if wait is not None:
            return time.monotonic() + wait
        t0 = time.perf_counter()
        events = s.answer.step()
        self.metrics.counter("answer_compute_seconds_total", time.perf_counter() - t0)
        for e in events:
            if isinstance(e, TextDelta):
                s.emit(ev.ResponseText(s.response_id, e.text))
            elif isinstance(e, Audio):
                if s.first_audio_t is None:
                    s.first_audio_t = time.monotonic()
                    self.metrics.observe("first_audio_seconds", time.perf_counter() - s.decision_t)
                s.audio_out += len(e.pcm)
                self.metrics.counter("answer_audio_seconds_total", len(e.pcm) / e.sample_rate)
                s.emit(ev.ResponseAudio(s.response_id, e.pcm, e.sample_rate))
            elif isinstance(e, Done):
                self._signal(s, Signal.ANSWER_DONE)
        self._show_state(s)
        return None

    # ------------------------------------------------------------------ the state machine
    def _signal(self, s: Session, signal: Signal) -> None:
        phase, actions = transition(s.phase, signal)
        s.phase = phase
        for a in actions:
            self._act(s, a)
        self._show_state(s)

    def _act(self, s: Session, a: Action) -> None:
        if a == Action.OPEN_TURN:
            m = self.model
            dev = self.llm.device
            t = Turn(StreamingFrontend(m.encoder.cfg.frontend), m.encoder.init_cache(1, dev),
                     m.adapter.init_cache(1, dev), barge_in=s.phase == Phase.OVERLAP)
            ring = list(s.ring)
            s.ring.clear()
            for p in ring[:-1]:
                p.preroll = True
            t.feed.extend(ring)
            s.turn = t
        elif a == Action.ROLLBACK_TURN:
            s.ctx.rollback_turn()
            s.turn = None
        elif a == Action.COMMIT_TURN:
            if s.turn is not None and s.turn.deferred:
                s.ctx.feed(s.turn.deferred)
            s.ctx.commit_turn()
            s.turn = None
        elif a == Action.START_ANSWER:
            self._start_answer(s)
        elif a == Action.PAUSE_ANSWER:
            s.gen.settle()
            s.paused = True
        elif a == Action.RESUME_ANSWER:
            s.paused = False
        elif a in (Action.INTERRUPT_ANSWER, Action.CANCEL_ANSWER):
            self._stop_answer(s, "interrupted" if a == Action.INTERRUPT_ANSWER else "cancelled")
        elif a == Action.FINISH_ANSWER:
            s.ctx.end_answer(self._assistant_prefix, s.gen.ids)
            self._done(s, "completed", s.answer.answer_text())
            if s.phase == Phase.IDLE:
                s.ctx.maybe_evict()

    def _start_answer(self, s: Session) -> None:
        s.ctx.maybe_evict()
        s.ctx.begin_answer()
        s.decision_t = time.perf_counter()
        prefix = s.ctx.embed(Piece.of_ids(self._assistant_prefix))[None]
        s.gen = PausableGenerator(self.llm, s.ctx.state, prefix, self.sampling, s.generator)
        s.response_id += 1
        s.answer = AnswerStream(s.gen, self.llm.decode, self.speech, seed=s.seed * 1000 + s.response_id,
                                t0=s.decision_t)
        s.paused, s.audio_out, s.first_audio_t = False, 0, None
        s.emit(ev.ResponseStarted(s.response_id))

    def _stop_answer(self, s: Session, status: str) -> None:
        """Cut the answer now; the context keeps what was spoken (and re-feeds an open barge-in turn after it)."""
        s.answer.cancel()
        ids = s.gen.ids
        keep = len(ids) if self.cfg.keep_unspoken else len(s.answer.spoken_ids)
        s.ctx.end_answer(self._assistant_prefix, ids, keep)
        s.emit(ev.StateChanged("interrupted"))
        s.shown_state = "interrupted"
        self._done(s, status, self.llm.decode(ids[:keep]).strip())

    def _done(self, s: Session, status: str, text: str) -> None:
        s.emit(ev.ResponseDone(s.response_id, text, status, s.answer.latency_ms()))
        self.metrics.counter("responses_total", status=status)
        s.answer = s.gen = None
        s.paused, s.first_audio_t = False, None

    def _show_state(self, s: Session) -> None:
        if answering(s.phase):
            state = "speaking" if s.first_audio_t is not None else "thinking"
        else:
            state = "listening"
        if state != s.shown_state:
            s.shown_state = state
            s.emit(ev.StateChanged(state))

    def _reset(self, s: Session, system_prompt: str) -> None:
        """A new conversation for ``s`` (first use, new system prompt, or after an error)."""
        if s.answer is not None:
            s.answer.cancel()
            self._done(s, "cancelled", "")
        s.system_prompt = system_prompt
        s.turn, s.phase, s.paused = None, Phase.IDLE, False
        s.ctx = Context(self.llm, self.llm.system_ids(system_prompt), lambda: self.model.bridge.prompt()[0],
                        self.cfg.max_context, self.cfg.keep_context)
        self._show_state(s)

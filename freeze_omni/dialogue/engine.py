"""`DialogueEngine`: the shared model, the sessions, and one round of work per ready session.

The engine owns the read-only pieces (encoder, adapter, bridge, frozen LLM, speech decoder, codec, VAD model) and
a :class:`~freeze_omni.dialogue.scheduler.Scheduler`. A worker round (:meth:`DialogueEngine.process`) takes a
batch of sessions and, for each, (1) applies its queued commands and runs the VAD over new packets, (2) encodes
its next 160 ms chunk — the encoder and adapter run once for the whole batch — (3) runs one LLM pass for the whole
batch (:meth:`~freeze_omni.llm.backbone.FrozenLLM.forward_ragged`: each listening session's chunk, each
answering session's last token, and, in a round that hears nobody, a part of one idle session's next user-turn
lead; every session on its own cache) and reads the state head of the listening ones, (4) steps the speech decoder
once per codec token for all the speaking sessions together
(:func:`~freeze_omni.decoder.generator.step_many`), and (5) advances each answer (its speech unit, and the sampling
of the token fed in (3)). A round that hears someone leaves optional work (leads, speech units of answers well
ahead of playback) to a later round, and extra speech units stop once a round is long (:data:`ROUND_BUDGET_S`), so
the next chunk does not wait for them. Every decision goes through the pure
:func:`~freeze_omni.dialogue.state.transition`; :meth:`_act` carries out the actions.

Barge-in: speech during an answer pauses the answer's text generation with the LLM cache covering exactly the
tokens generated (:meth:`~freeze_omni.dialogue.speaking.PausableGenerator.settle`), then the speech is fed on
top. RESPOND cuts the answer: the cache keeps the assistant prefix and the tokens whose audio has gone out, the
user's speech is re-fed after them, and a new answer starts. IGNORE (or silence, or the turn limit) crops the
speech away and the answer resumes where it was. Old turns are evicted at turn boundaries
(:meth:`Context.maybe_evict`), so a session of any length runs in bounded memory.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from freeze_omni.dialogue import events as ev
from freeze_omni.dialogue.context import Context
from freeze_omni.dialogue.listening import ChunkListener
from freeze_omni.dialogue.metrics import Metrics
from freeze_omni.dialogue.scheduler import Scheduler
from freeze_omni.dialogue.session import Packet, Session
from freeze_omni.dialogue.speaking import Speaker
from freeze_omni.dialogue.state import Action, Phase, Signal, answering, transition, turn_open
from freeze_omni.dialogue.vad import SileroVAD, VADConfig, VADModel, VADStream
from freeze_omni.llm.bridge import UserState

log = logging.getLogger(__name__)

LEAD = object()  # marks an idle session's lead row in a round's LLM pass
STARVING_AHEAD_S, STARVING_UNITS = 0.5, 3
URGENT_AHEAD_S = 1.2  # in a round that hears someone, answers less than this far ahead still get a speech unit
LEAD_STEP = 8  # lead positions per session and round (a whole lead, ~30 positions, is a ~100 ms pass)
ROUND_BUDGET_S = 0.05  # past this much of a round, extra speech units wait for the next one, unless the answer's
CRITICAL_AHEAD_S = 0.3  # audio is less than this far ahead of playback


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
        answer_lead_seconds: pace answer audio to stay at most this far ahead of real-time playback (the text is
            not paced; None: as fast as possible).
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


class PromptTooLong(ValueError):
    """A system prompt that does not fit in the session's context."""


class DialogueEngine:
    """Sessions over one shared model (see the module docstring).

    Args:
        model: the :class:`~freeze_omni.llm.model.SpeechLLM` (eval mode).
        speech: the :class:`~freeze_omni.dialogue.speech.SpeechOutput`, or None for text-only answers.
        system_prompt: the default system prompt.
        sampling: the answer's :class:`~freeze_omni.llm.sampling.SamplingConfig`.
        cfg: serving knobs.
        vad_model: the VAD model all sessions share (default: :class:`~freeze_omni.dialogue.vad.SileroVAD`).
    """

    def __init__(self, model: Any, speech: Any, system_prompt: str, sampling: Any,
                 cfg: Optional[EngineConfig] = None, vad_model: Optional[VADModel] = None) -> None:
        cfg = cfg or EngineConfig()
        self.model, self.llm, self.speech, self.cfg = model.eval(), model.llm, speech, cfg
        self.system_prompt, self.sampling = system_prompt, sampling
        self.vad_model = vad_model if vad_model is not None else SileroVAD()
        self.metrics = Metrics()
        self.listener = ChunkListener(self.model, self.metrics)
        self.packet = self.listener.packet
        self.max_turn_chunks = max(1, int(cfg.max_turn_seconds * 16000 / self.packet))
        self.scheduler = Scheduler(self.process, self._release, cfg.workers, cfg.max_batch if cfg.batching else 1,
                                   rider=self._feeds)
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._count = 0
        self.speaker = Speaker(self)
        self.metrics.gauge("sessions_active", lambda: len(self.sessions), "open sessions")
        self.metrics.gauge("workers", lambda: self.scheduler.n_workers, "worker threads")
        self.metrics.gauge("workers_busy", lambda: self.scheduler.busy_workers, "workers in a round")
        self.metrics.gauge("sessions_ready", lambda: self.scheduler.queued, "sessions waiting for a worker")

    @classmethod
    def from_bundle(cls, path: str, cfg: Optional[EngineConfig] = None, vad: str = "silero",
                    device: str = "cpu", int8: bool = False) -> "DialogueEngine":
        """Load a bundle onto ``device``: listening side, and the speaking side when the bundle has one (``int8``:
        the LLM steps with weight-only int8 copies, :meth:`~freeze_omni.llm.backbone.FrozenLLM.quantize_int8`)."""
        from freeze_omni.bundle import Bundle
        from freeze_omni.dialogue.speech import SpeechOutput, has_speech
        from freeze_omni.dialogue.vad import load_vad
        from freeze_omni.llm.loader import load_speech_llm
        from freeze_omni.settings import PipelineSettings

        model, system = load_speech_llm(path)
        bundle = Bundle(path)
        speech = SpeechOutput.from_bundle(bundle, model.llm) if has_speech(bundle) else None
        sampling = PipelineSettings.from_bundle(bundle).sampling_config()
        model.to(device)
        if int8:
            model.llm.quantize_int8()
        if speech is not None:
            speech.decoder.to(device)
            speech.codec.to(device)
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
        """One round for each session of ``batch`` (the scheduler's callback; see the module docstring).
        Returns, per session, whether it has more work now and when a paced answer wants to be woken."""
        rows: list[tuple[Session, Packet, np.ndarray]] = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in batch:
                self._guard(s, self._intake, s)
                item = self._guard(s, self._next_chunk, s)
                if item is not None:
                    rows.append((s, *item))
            listening = {s for s, _, _ in rows}
            others = [s for s in batch if s not in listening]
            # a round that hears someone stays short (their next chunk waits for it): optional work waits
            leads = [] if rows else self._lead_part(others)
            answering = [s for s in others if self._guard(s, self._feeds, s)]
            # and answers whose text is a whole segment ahead of their speech write their next token later
            held = {s for s in answering if self._guard(s, self._text_ahead, s)} if rows else set()
            self._llm_round(self._listen(rows) if rows else [], [s for s in answering if s not in held], leads)
            speech = [s for s in others if self._guard(s, self._wants_speech, s)]
            now = [s for s in speech if not rows or self._urgent(s)]
            tokens = self._speech_round(now, t0)
            later = set(speech) - set(now)
            out = {}
            for s in batch:
                if s in later:
                    wake = None
                elif s in held and s not in tokens:
                    wake = self._guard(s, self._wake_time, s)
                else:
                    wake = self._guard(s, self._answer_step, s, tokens.get(s))
                out[s] = (not s.closed and (s.has_work() or self._answer_ready(s)), wake)
        return out

    def _speech_round(self, sessions: list[Session], round_t0: float) -> dict[Session, list[int]]:
        """The codec tokens of one speech unit of each session, the decoder fed for all of them in one pass per
        token (:func:`~freeze_omni.decoder.generator.step_many`); a starving session's extra units only while the
        round is shorter than :data:`ROUND_BUDGET_S` or its audio is about to stop (:data:`CRITICAL_AHEAD_S`)."""
        if not sessions:
            return {}
        from freeze_omni.decoder.generator import step_many

        t0 = time.perf_counter()
        new: dict[Session, list[int]] = {s: [] for s in sessions}
        per = sessions[0].answer.per_step
        budget = {s: per * (STARVING_UNITS if self._starving(s) else 1) for s in sessions}
        critical = {s for s in sessions if (a := self.speaker.audio_ahead(s)) is not None and a < CRITICAL_AHEAD_S}
        active = list(sessions)
        try:
            while active:
                toks = step_many([s.answer.speech_row for s in active])
                for s, tok in zip(active, toks):
                    if tok is not None:
                        new[s].append(tok)
                active = [s for s, tok in zip(active, toks) if tok is not None and len(new[s]) < budget[s]]
                if time.perf_counter() - round_t0 > ROUND_BUDGET_S:  # a long round delays every chunk
                    active = [s for s in active if len(new[s]) < per or s in critical]  # that arrives meanwhile
        except Exception as e:  # the decodes are half-stepped: these sessions start over (each gets the error)
            log.exception("a batched decoder pass failed")
            for s in sessions:
                self._guard(s, self._raise, e)
            return {}
        dt = (time.perf_counter() - t0) / len(sessions)
        self.metrics.counter("answer_compute_seconds_total", dt * len(sessions))
        self.metrics.counter("decoder_rounds_total")
        self.metrics.counter("decoder_rows_total", len(sessions))
        return new

    def _llm_round(self, chunks: list[tuple[Session, Packet, torch.Tensor]], answering: list[Session],
                   leads: list[tuple[Session, torch.Tensor]]) -> None:
        """One LLM pass for the round: the listening chunks' inputs, the answers' next tokens and the leads of idle
        sessions (:meth:`FrozenLLM.forward_ragged`: the weights are read once for all); then the verdicts."""
        rows = ([(s, x, pkt) for s, pkt, x in chunks] + [(s, s.gen.pending_input(), None) for s in answering]
                + [(s, x, LEAD) for s, x in leads])
        rows = [r for r in rows if r[1] is not None]
        if rows:
            self._ragged(rows)

    def _ragged(self, rows: list[tuple[Session, torch.Tensor, Optional[Packet]]]) -> None:
        t0 = time.perf_counter()
        try:
            hidden = self.llm.forward_ragged([x for _, x, _ in rows], [s.ctx.state for s, _, _ in rows])
        except Exception:  # one bad session must not take the others down: feed them one by one
            if len(rows) == 1:
                s, _, _ = rows[0]
                self._guard(s, self._raise, sys.exc_info()[1])
                return
            log.exception("a batched LLM pass failed; feeding the %d sessions one by one", len(rows))
            for row in rows:
                self._ragged([row])
            return
        dt = (time.perf_counter() - t0) / sum(x.shape[0] for _, x, _ in rows)
        self.metrics.counter("llm_passes_total")
        self.metrics.counter("llm_rows_total", len(rows))
        for (s, x, pkt), h in zip(rows, hidden):
            if pkt is LEAD:
                self.metrics.counter("listen_compute_seconds_total", dt * x.shape[0])
            elif pkt is None:  # an answer's next token
                self.metrics.counter("answer_compute_seconds_total", dt * x.shape[0])
                self._guard(s, s.gen.accept, h)
            else:
                self.metrics.counter("listen_compute_seconds_total", dt * x.shape[0])
                self._guard(s, self._verdict, s, pkt, h[-1])

    @staticmethod
    def _raise(e: BaseException) -> None:
        raise e

    def _guard(self, s: Session, fn: Any, *args: Any) -> Any:
        """Run one session's work; an exception resets that session's conversation, never the others'."""
        if s.closed:
            return None
        try:
            return fn(*args)
        except Exception as e:
            log.exception("session %s failed", s.id)
            self.metrics.counter("errors_total", code="internal_error")
            s.emit(ev.SessionError("internal_error", f"{type(e).__name__}: {e}; the conversation starts over"))
            try:
                self._reset(s, s.system_prompt)
            except Exception:  # cannot even start over: end the session
                log.exception("session %s cannot recover; closing it", s.id)
                s.emit(ev.SessionError("internal_error", "the session is closed"))
                self.close_session(s)
            return None

    # ------------------------------------------------------------------ input
    def _intake(self, s: Session) -> None:
        if s.ctx is None:
            try:
                self._reset(s, s.system_prompt)
            except PromptTooLong as e:
                s.emit(ev.SessionError("system_prompt_too_long", f"{e}; using the default prompt"))
                self._reset(s, self.system_prompt)
        for cmd in s.take_commands():
            if cmd.kind == "audio":
                s.samples_in += len(cmd.data)
                s.add_audio(cmd.data, cmd.t, self.packet)
            elif cmd.kind in ("flush", "respond"):
                s.add_flush(cmd.t, self.packet, respond=cmd.kind == "respond")
            elif cmd.kind == "cancel":
                self._signal(s, Signal.CANCEL)
            elif cmd.kind == "update":
                if cmd.data["vad"] is not None:
                    s.vad_enabled = bool(cmd.data["vad"])
                prompt = cmd.data["system_prompt"]
                if prompt is not None and prompt != s.system_prompt:
                    try:
                        self._reset(s, prompt)
                    except PromptTooLong as e:
                        s.emit(ev.SessionError("system_prompt_too_long", str(e)))
                s.emit(ev.SessionUpdated(s.system_prompt, s.vad_enabled))

    def _next_chunk(self, s: Session) -> Optional[tuple[Packet, np.ndarray]]:
        """Run the VAD over new packets until the open turn has a live chunk to encode; return it (or None).
        Pre-roll chunks on the way are encoded at once (their LLM inputs wait for the live chunk anyway), so a
        turn's start costs one round, not one per pre-roll chunk."""
        while True:
            t = s.turn
            if t is not None and t.feed:
                pkt = t.feed.popleft()
                if pkt.samples is None:  # end of input
                    self._end_turn(s, Signal.END_OF_INPUT)
                    continue
                feats = self.listener.features(t, pkt)
                if feats is not None and pkt.preroll:  # encoded now, fed with the first live chunk: the whole
                    self.listener.inputs(s, pkt, self.listener.encode([s], [feats])[0])  # pre-roll in one round
                elif feats is not None:
                    return pkt, feats
                continue
            if not s.packets:
                return None
            self._vad_packet(s, s.packets.popleft())

    def _vad_packet(self, s: Session, pkt: Packet) -> None:
        if pkt.samples is None:
            if turn_open(s.phase):
                s.turn.feed.append(pkt)
            elif pkt.respond:
                self._signal(s, Signal.RESPOND_NOW)
            return
        if s.vad_enabled:
            start, end = self.listener.vad(s, pkt)
        else:  # no gate: all audio is speech while the assistant is silent
            start, end = s.phase == Phase.IDLE, False
        if turn_open(s.phase):
            pkt.speech_end = end
            s.turn.feed.append(pkt)
            return
        s.ring.append(pkt)
        if start:
            self._signal(s, Signal.SPEECH_START)

    def _listen(self, rows: list[tuple[Session, Packet, np.ndarray]]) -> list[tuple[Session, Packet, torch.Tensor]]:
        """Encode one chunk per session (batched); each session's LLM inputs for it (None while pre-roll)."""
        if len(rows) == 1:
            emb = self._guard(rows[0][0], self.listener.encode, [rows[0][0]], [rows[0][2]])
            if emb is None:
                return []
        else:
            try:
                emb = self.listener.encode([s for s, _, _ in rows], [f for _, _, f in rows])
            except Exception:  # one bad session must not take the others down: encode them one by one
                log.exception("batched encoding failed; encoding the %d sessions one by one", len(rows))
                return [item for row in rows for item in self._listen([row])]
        out = []
        for b, (s, pkt, _) in enumerate(rows):
            x = self._guard(s, self.listener.inputs, s, pkt, emb[b])
            if x is not None:
                out.append((s, pkt, x))
        return out

    def _verdict(self, s: Session, pkt: Packet, hidden: torch.Tensor) -> None:
        verdict = self.listener.verdict(pkt, hidden)
        if verdict == UserState.RESPOND:
            self._end_turn(s, Signal.RESPOND)
        elif verdict == UserState.IGNORE:
            self._end_turn(s, Signal.IGNORE)
        elif pkt.speech_end:
            self._end_turn(s, Signal.SPEECH_END)
        elif s.turn.chunks >= self.max_turn_chunks:
            self._end_turn(s, Signal.TURN_LIMIT)

    def _end_turn(self, s: Session, signal: Signal) -> None:
        decision = {Signal.SPEECH_END: "no_decision"}.get(signal, signal.value)
        t = s.turn
        s.emit(ev.TurnEnded(decision, t.chunks if t else 0, bool(t and t.barge_in)))
        self.metrics.counter("turns_total", decision=decision)
        self._signal(s, signal)

    # ------------------------------------------------------------------ answering
    def _answer_ready(self, s: Session) -> bool:
        return self.speaker.ready(s)

    def _lead_part(self, sessions: list[Session]) -> list[tuple[Session, torch.Tensor]]:
        """One part of one idle session's lead for this round's pass (a round stays short)."""
        for s in sessions:
            x = self._guard(s, self._lead_inputs, s)
            if x is not None:
                return [(s, x)]
        return []

    def _lead_inputs(self, s: Session) -> Optional[torch.Tensor]:
        """While nobody speaks, the next user turn's lead (user prefix, prompt embeddings) goes into the context
        ahead of time, :data:`LEAD_STEP` positions per round, so a turn's first chunk costs a short pass, not one
        over the lead too (rolled back with the turn; dropped again before an answer to no speech)."""
        ctx = s.ctx
        if s.phase != Phase.IDLE or s.turn is not None or s.answer is not None or ctx is None \
                or ctx.answer_start is not None:
            return None
        return ctx.open_lead(self.listener.lead(), LEAD_STEP)

    def _feeds(self, s: Session) -> bool:
        """The answer's generator has an input to feed (its last token): it joins the round's LLM pass, whether
        or not this round samples the next token, so that answers' tokens share passes."""
        return s.answer is not None and s.gen is not None and not s.paused and s.gen.has_pending

    def _text_ahead(self, s: Session) -> bool:
        """The answer's text holds a complete segment its speech has not started: its next token can wait (an
        answer's tokens come ~3x faster than they are spoken; fed in a round that hears someone, each one makes the
        pass that those chunks wait for longer)."""
        return bool(s.answer.pending)

    def _wants_speech(self, s: Session) -> bool:
        return self.speaker.ready(s) and s.answer.wants_speech_tokens()

    def _starving(self, s: Session) -> bool:
        """Its audio is about to run out (less than :data:`STARVING_AHEAD_S` ahead of playback): this round gives
        it :data:`STARVING_UNITS` speech units at once (a new segment's first codec window needs 30 tokens)."""
        ahead = self.speaker.audio_ahead(s)
        return ahead is not None and ahead < STARVING_AHEAD_S

    def _urgent(self, s: Session) -> bool:
        """Its answer audio is less than :data:`URGENT_AHEAD_S` ahead of playback (or not started)."""
        ahead = self.speaker.audio_ahead(s)
        return ahead is None or ahead < URGENT_AHEAD_S

    def _answer_step(self, s: Session, tokens: Optional[list[int]] = None) -> Optional[float]:
        """One unit of the answer (unless paced; a speech unit of ``tokens`` sampled in this round's decoder pass,
        if given); returns the ``time.monotonic()`` to come back at when the answer is (now) paced."""
        if s.answer is None or (s.paused and not s.gen.done):
            return None
        if (tokens is not None or self.speaker.paced(s) is None) and self.speaker.step(s, tokens):
            self._signal(s, Signal.ANSWER_DONE)
        elif s.answer is not None and not s.paused and s.answer.can_sample() and self.speaker.step(s, text=True):
            self._signal(s, Signal.ANSWER_DONE)  # the token fed in this round's pass is sampled in any case
        self._show_state(s)
        return self._wake_time(s)

    def _wake_time(self, s: Session) -> Optional[float]:
        """When a paced answer wants to be woken (``time.monotonic()``), or None."""
        wait = self.speaker.paced(s) if s.answer is not None else None
        return None if wait is None else time.monotonic() + wait

    # ------------------------------------------------------------------ the state machine
    def _signal(self, s: Session, signal: Signal) -> None:
        phase, actions = transition(s.phase, signal)
        s.phase = phase
        for a in actions:
            self._act(s, a)
        self._show_state(s)

    def _act(self, s: Session, a: Action) -> None:
        if a == Action.OPEN_TURN:
            self.listener.open_turn(s, barge_in=s.phase == Phase.OVERLAP)
        elif a == Action.ROLLBACK_TURN:
            s.ctx.rollback_turn()
            s.turn = None
        elif a == Action.COMMIT_TURN:
            if s.turn is None and s.ctx.open:  # an answer to no speech: its user turn is empty, not a bare lead
                s.ctx.rollback_turn()
            if s.turn is not None and s.turn.deferred:
                s.ctx.feed(s.turn.deferred)
            s.ctx.commit_turn()
            s.turn = None
        elif a == Action.START_ANSWER:
            self.speaker.start(s)
        elif a == Action.PAUSE_ANSWER:
            s.gen.settle()
            s.paused = True
        elif a == Action.RESUME_ANSWER:
            s.paused = False
        elif a in (Action.INTERRUPT_ANSWER, Action.CANCEL_ANSWER):
            self.speaker.stop(s, "interrupted" if a == Action.INTERRUPT_ANSWER else "cancelled")
        elif a == Action.FINISH_ANSWER:
            self.speaker.finish(s)
            if s.phase == Phase.IDLE:
                s.ctx.maybe_evict()

    def _show_state(self, s: Session) -> None:
        if answering(s.phase):
            state = "speaking" if s.first_audio_t is not None else "thinking"
        else:
            state = "listening"
        if state != s.shown_state:
            s.shown_state = state
            s.emit(ev.StateChanged(state))

    def _reset(self, s: Session, system_prompt: str) -> None:
        """A new conversation for ``s`` (first use, new system prompt, or after an error). Raises
        :class:`PromptTooLong` (and changes nothing) when the prompt does not fit in the context."""
        ids = self.llm.system_ids(system_prompt)
        keep = self.cfg.keep_context if self.cfg.keep_context is not None else self.cfg.max_context // 2
        if len(ids) >= keep:
            raise PromptTooLong(f"the system prompt has {len(ids)} tokens; at most {keep - 1} fit")
        if s.answer is not None:
            with contextlib.suppress(Exception):
                s.answer.cancel()
            self.speaker.done(s, "cancelled", "")
        s.turn, s.phase, s.paused = None, Phase.IDLE, False
        s.ctx = None
        s.ctx = Context(self.llm, ids, lambda: self.model.bridge.prompt()[0], self.cfg.max_context,
                        self.cfg.keep_context)
        s.system_prompt = system_prompt
        self._show_state(s)

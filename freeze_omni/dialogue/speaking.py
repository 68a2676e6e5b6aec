"""The speaking side of the engine: starting, stepping, pacing, cutting and finishing a session's answer.

Each answer is an :class:`~freeze_omni.dialogue.answer.AnswerStream` (LLM tokens, segmenter, speech decoder,
streaming codec) over a :class:`PausableGenerator` that samples straight into the session's LLM context. The
:class:`Speaker` turns the stream's events into session events, paces the audio to stay a little ahead of
real-time playback, and keeps the context's bookkeeping right when an answer ends or is cut.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from freeze_omni.dialogue import events as ev
from freeze_omni.dialogue.answer import AnswerStream, Audio, Done, TextDelta
from freeze_omni.dialogue.context import Piece
from freeze_omni.dialogue.session import Session
from freeze_omni.llm.generation import TokenGenerator


class PausableGenerator(TokenGenerator):
    """A :class:`TokenGenerator` that can stop between tokens with the cache covering exactly :attr:`ids`."""

    @torch.no_grad()
    def settle(self) -> None:
        """Feed the last returned token now (what the next :meth:`next` would do first), so that the LLM state
        covers exactly the returned ids; sampling resumes from the same logits."""
        if self._unfed is not None and not self._done:
            hidden, logits = self.llm.step(self.state, [self._unfed])
            self._hidden, self._logits, self._unfed = hidden[0], logits, None


class Speaker:
    """Answers of every session of ``engine`` (reads its ``llm``, ``speech``, ``sampling``, ``cfg``, ``metrics``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.prefix = engine.llm.framing_ids(engine.llm.framing.assistant_prefix)

    def start(self, s: Session) -> None:
        """A new answer after the committed user turn (old turns are evicted first if the context is full)."""
        e = self.engine
        s.ctx.maybe_evict()
        s.ctx.begin_answer()
        s.decision_t = time.perf_counter()
        prefix = s.ctx.embed(Piece.of_ids(self.prefix))[None]
        s.gen = PausableGenerator(e.llm, s.ctx.state, prefix, e.sampling, s.generator)
        s.response_id += 1
        s.answer = AnswerStream(s.gen, e.llm.decode, e.speech, seed=s.seed * 1000 + s.response_id, t0=s.decision_t)
        s.paused, s.audio_out, s.first_audio_t = False, 0, None
        s.emit(ev.ResponseStarted(s.response_id))

    def audio_ahead(self, s: Session) -> Optional[float]:
        """Seconds of answer audio sent beyond what the client has played (None before the first audio)."""
        rate = self.engine.sample_rate
        if s.first_audio_t is None or not rate:
            return None
        return s.audio_out / rate - (time.monotonic() - s.first_audio_t)

    def lead_wait(self, s: Session) -> Optional[float]:
        """Seconds to wait before the next step so the audio stays ``answer_lead_seconds`` ahead of playback
        (None: step now; a wait within the scheduler's ``coalesce_s`` counts as none, so a session that a round
        takes early does step)."""
        lead, ahead = self.engine.cfg.answer_lead_seconds, self.audio_ahead(s)
        if lead is None or ahead is None:
            return None
        return ahead - lead if ahead > lead + self.engine.scheduler.coalesce_s else None

    def paced(self, s: Session) -> Optional[float]:
        """Seconds the answer's next unit must wait (None: none). Only speech is paced: text units go on while the
        audio is far enough ahead (the text is ready early, and its LLM passes are spread out)."""
        return None if s.answer.wants_text() else self.lead_wait(s)

    def ready(self, s: Session) -> bool:
        """The answer can take a step right now (it exists, is not paused by a barge-in, is not paced)."""
        return s.answer is not None and not (s.paused and not s.gen.done) and self.paced(s) is None

    def step(self, s: Session, tokens: Optional[list[int]] = None, text: bool = False) -> bool:
        """One unit of the answer (a speech unit of codec ``tokens`` sampled by the caller, if given; a text unit
        with ``text``), its events emitted; True when the answer is complete."""
        m = self.engine.metrics
        t0 = time.perf_counter()
        if text:
            events = s.answer.text_step()
        else:
            events = s.answer.step() if tokens is None else s.answer.speech_tokens(tokens)
        m.counter("answer_compute_seconds_total", time.perf_counter() - t0)
        finished = False
        for e in events:
            if isinstance(e, TextDelta):
                s.emit(ev.ResponseText(s.response_id, e.text))
            elif isinstance(e, Audio):
                if s.first_audio_t is None:
                    s.first_audio_t = time.monotonic()
                    m.observe("first_audio_seconds", time.perf_counter() - s.decision_t)
                s.audio_out += len(e.pcm)
                m.counter("answer_audio_seconds_total", len(e.pcm) / e.sample_rate)
                s.emit(ev.ResponseAudio(s.response_id, e.pcm, e.sample_rate))
            elif isinstance(e, Done):
                finished = True
        return finished

    def finish(self, s: Session) -> None:
        """The answer is complete: all of it joins the history."""
        s.ctx.end_answer(self.prefix, s.gen.ids)
        self.done(s, "completed", s.answer.answer_text())

    def stop(self, s: Session, status: str) -> None:
        """Cut the answer now; the context keeps what was spoken (and re-feeds an open barge-in turn after it)."""
        s.answer.cancel()
        ids = s.gen.ids
        keep = len(ids) if self.engine.cfg.keep_unspoken else len(s.answer.spoken_ids)
        s.ctx.end_answer(self.prefix, ids, keep)
        s.emit(ev.StateChanged("interrupted"))
        s.shown_state = "interrupted"
        self.done(s, status, self.engine.llm.decode(ids[:keep]).strip())

    def done(self, s: Session, status: str, text: str) -> None:
        s.emit(ev.ResponseDone(s.response_id, text, status, s.answer.latency_ms()))
        self.engine.metrics.counter("responses_total", status=status)
        s.answer = s.gen = None
        s.paused, s.first_audio_t = False, None

"""`AnswerStream`: everything one session needs while the assistant speaks, advanced one bounded unit at a time.

The stream owns the answer's token source (the frozen LLM sampling through
:class:`~freeze_omni.llm.generation.TokenGenerator`, or a written text), the
:class:`~freeze_omni.decoder.segmenter.TextSegmenter`, the queue of complete text segments, the speech decoder
state of the segment being spoken, the :class:`~freeze_omni.codec.streaming.StreamingCodecDecoder` and the
timestamps. :meth:`AnswerStream.step` does one unit of work and returns the events it produced, so one worker can
interleave many sessions:

* a **text unit**: one LLM token (feed the previous token, sample the next), its text delta, and the segment it
  completes, if any;
* a **prefill unit**: the decoder's NAR passes over the next complete segment (prefix decoder, pre-network,
  shared layers) up to the SOS feed;
* a **speech unit**: up to ``speech_tokens_per_step`` codec tokens of the current segment (10 by default: the
  codec windows complete at 30, 70, 110, ... tokens, so a window is decoded at the end of the unit that completes
  it), pushed into the codec; the segment's end flushes the codec.

Scheduling (streaming): a segment is prefilled as soon as it is complete. Until the answer's first audio sample,
speech work always goes first (the LLM waits: nothing shortens the time to first audio more). Afterwards the LLM
and the decoder alternate by need: a speech unit when the audio emitted so far is less than ``lead_seconds``
ahead of real-time playback (counted from the first audio), otherwise a text unit, so the LLM keeps writing
between decoder steps while the listener always has audio. When the text is finished only speech is left.

Cascade (``cascade=True``, the baseline of ``bench latency``): the whole answer text first, then every segment's
codec tokens, then one whole-utterance codec decode per segment, released as one piece. Same segmentation and
decoder inputs, so with the same seed it produces the same codec tokens as streaming; only the timing differs.

Timestamps (:meth:`AnswerStream.latency_ms`, ms from ``t0``, the end-of-turn decision): ``first_text`` (first
non-blank text), ``first_segment`` (first text segment complete), ``decoder_prefill`` (its prefill done),
``first_speech_tokens`` (tokens of the codec's first window ready, or the segment ended), ``first_audio`` (first
PCM sample out), ``text_done``, ``done``. :func:`stage_breakdown` turns them into the rows of the paper's latency
table (``reference/freeze_omni_facts.md`` §5.4).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch

from freeze_omni.codec.streaming import StreamingCodecDecoder
from freeze_omni.decoder.generator import DecoderState
from freeze_omni.decoder.segmenter import Segment, TextSegmenter
from freeze_omni.dialogue.speech import SpeechOutput
from freeze_omni.llm.generation import TokenGenerator

MARKS = ("first_text", "first_segment", "decoder_prefill", "first_speech_tokens", "first_audio", "text_done", "done")
STAGES = {  # the paper's latency table: stage -> (from mark, to mark); "" is the decision
    "first_segment": ("", "first_segment"),
    "decoder_prefill": ("first_segment", "decoder_prefill"),
    "first_speech_tokens": ("decoder_prefill", "first_speech_tokens"),
    "first_audio": ("first_speech_tokens", "first_audio"),
    "total": ("", "first_audio"),
}


@dataclass
class TextDelta:
    """New answer text (append it to what came before)."""

    text: str


@dataclass
class Audio:
    """New answer audio: float32 PCM at ``sample_rate`` (the codec's)."""

    pcm: np.ndarray
    sample_rate: int


@dataclass
class Done:
    """The answer is over: its text, its token ids (what the LLM context holds), whether it was cancelled."""

    answer: str
    ids: list[int]
    cancelled: bool = False


Event = Union[TextDelta, Audio, Done]


@dataclass
class AnswerResult:
    """A whole answer (:meth:`AnswerStream.run_to_end`)."""

    answer: str
    ids: list[int]
    hiddens: Optional[torch.Tensor]
    audio: Optional[np.ndarray]
    sample_rate: Optional[int]
    latency_ms: dict[str, float]
    segments: list[str] = field(default_factory=list)  # the normalised text of every spoken segment
    speech_tokens: list[list[int]] = field(default_factory=list)  # codec tokens, per spoken segment


@dataclass
class _Speaking:
    segment: Segment
    state: DecoderState
    heard: bool = False  # some of its audio has been emitted


def stage_breakdown(marks: dict[str, float]) -> dict[str, Optional[float]]:
    """The paper's latency rows (ms) from :meth:`AnswerStream.latency_ms` marks (None where a mark is missing)."""
    out: dict[str, Optional[float]] = {}
    for name, (a, b) in STAGES.items():
        va = 0.0 if not a else marks.get(a)
        vb = marks.get(b)
        out[name] = None if va is None or vb is None else round(vb - va, 1)
    return out


class AnswerStream:
    """One answer in progress (see the module docstring).

    Args:
        source: the token source (``next() -> id | None``, ``close()``, ``ids``, ``hiddens``, ``done``).
        decode: token ids -> text (``FrozenLLM.decode``).
        speech: the output side; None: text only (events are text deltas and the end).
        seed: seed of the codec-token sampling.
        cascade: whole text, then whole synthesis (the benchmark's baseline).
        t0: ``time.perf_counter()`` of the end-of-turn decision (default: now).
        speech_tokens_per_step: codec tokens per speech unit.
        lead_seconds: after the first audio, how far ahead of playback the audio must be before text goes first.
    """

    def __init__(self, source: Any, decode: Callable[[list[int]], str], speech: Optional[SpeechOutput] = None,
                 seed: int = 0, cascade: bool = False, t0: Optional[float] = None, speech_tokens_per_step: int = 10,
                 lead_seconds: float = 1.0) -> None:
        self.source, self.decode, self.speech, self.cascade = source, decode, speech, cascade
        self.t0 = time.perf_counter() if t0 is None else t0
        self.per_step, self.lead_seconds = max(1, speech_tokens_per_step), lead_seconds
        self.segmenter = TextSegmenter(decode, speech.segmenter if speech is not None else None)
        self.gen = speech.new_generator(seed) if speech is not None else None
        self.codec_stream = StreamingCodecDecoder(speech.codec, speech.streaming) if speech is not None else None
        self.pending: deque[Segment] = deque()  # complete segments not yet prefilled
        self.current: Optional[_Speaking] = None
        self.text = ""  # text sent as deltas so far
        self.spoken: list[_Speaking] = []  # segments whose decoding has started, in order
        self.samples = 0  # audio samples emitted
        self.marks: dict[str, float] = {}
        self.cancelled = False
        self._text_done = False
        self._finished = False

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_llm(cls, llm: Any, state: Any, sampling: Any, speech: Optional[SpeechOutput] = None,
                 generator: Optional[torch.Generator] = None, **kw: Any) -> "AnswerStream":
        """An answer sampled by the frozen LLM in the session ``state``, after the assistant prefix."""
        prefix = llm.embed(torch.tensor([llm.framing_ids(llm.framing.assistant_prefix)], device=llm.device))
        return cls(TokenGenerator(llm, state, prefix, sampling, generator), llm.decode, speech, **kw)

    # ------------------------------------------------------------------------------------------ properties
    @property
    def done(self) -> bool:
        return self._finished

    @property
    def ids(self) -> list[int]:
        """The answer token ids generated so far (the LLM state covers them once the stream is over)."""
        return list(self.source.ids)

    @property
    def spoken_ids(self) -> list[int]:
        """Token ids of the segments whose audio has started to come out (a prefix of :attr:`ids`)."""
        return [t for s in self.spoken if s.heard for t in s.segment.token_ids]

    @property
    def sample_rate(self) -> Optional[int]:
        return self.speech.sample_rate if self.speech is not None else None

    def latency_ms(self) -> dict[str, float]:
        """The timestamps reached so far, in ms from ``t0`` (keys of :data:`MARKS`)."""
        return {k: round(1000.0 * self.marks[k], 1) for k in MARKS if k in self.marks}

    # ------------------------------------------------------------------------------------------ driving
    def wants_text(self) -> bool:
        """The next :meth:`step` is a text unit (it samples a token, feeding the generator's pending input)."""
        if self._finished or self._text_done:
            return False
        has_speech_work = self.speech is not None and (self.current is not None or bool(self.pending))
        return not (has_speech_work and not self.cascade and self._speech_first())

    def wants_speech_tokens(self) -> bool:
        """The next :meth:`step` is a speech unit on a segment already prefilled: a server can sample its tokens
        together with other sessions' (:func:`~freeze_omni.decoder.generator.step_many` over
        :attr:`speech_row`) and hand them to :meth:`speech_tokens`."""
        return (not self._finished and not self.cascade and self.speech is not None and self.current is not None
                and not self.wants_text())

    @property
    def speech_row(self) -> tuple[Any, Any]:
        """The speech generator and the decoder state of the segment being spoken."""
        return self.gen, self.current.state

    def speech_tokens(self, new: list[int]) -> list[Event]:
        """A speech unit whose codec tokens the caller sampled (``speech_tokens_per_step``, or more for an answer
        whose audio is about to run out)."""
        return self._finishing(self._speech_out(new))

    def can_sample(self) -> bool:
        """The next token can be sampled without an LLM pass (its input is already fed): a server does that in
        every round, besides the round's speech unit, so the text keeps ahead of the speech."""
        return (not self._finished and not self._text_done and isinstance(self.source, TokenGenerator)
                and not self.source.has_pending)

    def text_step(self) -> list[Event]:
        """A text unit, whatever :meth:`step` would choose (see :meth:`can_sample`)."""
        return self._finishing(self._text_unit())

    @torch.no_grad()
    def step(self) -> list[Event]:
        """Do one unit of work (module docstring); returns its events ([] once :attr:`done`)."""
        if self._finished:
            return []
        has_speech_work = self.speech is not None and (self.current is not None or bool(self.pending))
        if self.wants_text():
            events = self._text_unit()
        elif has_speech_work:
            events = self._speech_unit()
        else:
            events = []
        return self._finishing(events)

    def _finishing(self, events: list[Event]) -> list[Event]:
        """``events``, plus the answer's end once its text is done and every segment spoken."""
        if self._text_done and self.current is None and not self.pending:
            events += self._finish()
        return events

    def events(self) -> Iterator[Event]:
        """Every remaining event, unit after unit."""
        while not self._finished:
            yield from self.step()

    def run_to_end(self, on_event: Optional[Callable[[Event], None]] = None) -> AnswerResult:
        """Run the answer to its end (offline use); ``on_event`` sees every event as it comes."""
        pcm = []
        for ev in self.events():
            if isinstance(ev, Audio):
                pcm.append(ev.pcm)
            if on_event is not None:
                on_event(ev)
        audio = None
        if self.speech is not None:
            audio = np.concatenate(pcm) if pcm else np.zeros(0, np.float32)
        hid = self.source.hiddens
        return AnswerResult(self.answer_text(), self.ids, torch.stack(hid) if hid else None, audio,
                            self.sample_rate, self.latency_ms(), [self.speech.normalize(s.segment.text) for s in self.spoken],
                            [list(s.state.tokens) for s in self.spoken])

    def answer_text(self) -> str:
        return self.decode(self.source.ids).strip()

    def cancel(self, rollback_to_spoken: bool = False) -> Done:
        """Barge-in: stop at once. The LLM state then covers exactly :attr:`ids` (what was generated), or, with
        ``rollback_to_spoken``, only :attr:`spoken_ids` (what the user has started to hear)."""
        if self._finished:
            return Done(self.answer_text(), self.ids, self.cancelled)
        self.source.close()
        if rollback_to_spoken and getattr(self.source, "answer_start", None) is not None:
            keep = len(self.spoken_ids)  # the assistant prefix stays: the next user prefix closes the turn
            self.source.state.crop(self.source.answer_start + keep)
            del self.source.ids[keep:], self.source.hiddens[keep:]
        self.cancelled, self._finished = True, True
        self.pending.clear()
        self.current = None
        self._mark("done")
        return Done(self.answer_text(), self.ids, cancelled=True)

    # ------------------------------------------------------------------------------------------ units
    def _speech_first(self) -> bool:
        if "first_audio" not in self.marks:
            return True
        played = time.perf_counter() - self.t0 - self.marks["first_audio"]
        return self.samples / self.speech.sample_rate - played < self.lead_seconds

    def _text_unit(self) -> list[Event]:
        tok = self.source.next()
        segments: list[Segment] = []
        if tok is None:
            self._text_done = True
            self._mark("text_done")
            last = self.segmenter.flush()
            segments = [last] if last is not None else []
            text = self.decode(self.source.ids)  # an incomplete character at the very end comes out now
        else:
            hidden = self.source.hiddens[-1] if len(self.source.hiddens) == len(self.source.ids) else None
            segments = self.segmenter.push(tok, hidden)
            text = self.segmenter.text
        events: list[Event] = []
        delta = text[len(self.text):]
        if delta:
            self.text = text
            events.append(TextDelta(delta))
            if text.strip():
                self._mark("first_text")
        for seg in segments if self.speech is not None else []:
            if self.speech.normalize(seg.text):
                self.pending.append(seg)
                self._mark("first_segment")
        return events

    def _speech_unit(self) -> list[Event]:
        sp = self.speech
        if self.current is None:  # prefill the next segment
            seg = self.pending.popleft()
            tts = sp.normalize(seg.text)
            hidden = seg.hidden if sp.needs_hidden else None
            state = self.gen.start(self.gen.text_inputs(tts), hidden, self.gen.cfg.limit(tts))
            self.current = _Speaking(seg, state)
            self.spoken.append(self.current)
            self._mark("decoder_prefill")
            return []
        new = []
        while len(new) < self.per_step and (tok := self.gen.step(self.current.state)) is not None:
            new.append(tok)
        return self._speech_out(new)

    def _speech_out(self, new: list[int]) -> list[Event]:
        """The rest of a speech unit once its codec tokens are sampled: the codec, the audio event."""
        sp, cur = self.speech, self.current
        if cur.state.done:
            self.current = None
        if self.cascade:
            return self._cascade_audio() if self._text_done and self.current is None and not self.pending else []
        cfg = sp.streaming
        if len(cur.state.tokens) >= cfg.first_chunk + cfg.context or (cur.state.done and cur.state.tokens):
            self._mark("first_speech_tokens")
        pcm = self.codec_stream.push(new)
        if cur.state.done:
            pcm = np.concatenate([pcm, self.codec_stream.flush()])
        return self._audio(pcm, cur)

    def _cascade_audio(self) -> list[Event]:
        """All tokens are ready: decode each segment whole and release the answer's audio at once."""
        self._mark("first_speech_tokens")
        codec, pieces = self.speech.codec, []
        with torch.no_grad():
            for s in self.spoken:
                if s.state.tokens:
                    x = torch.tensor([s.state.tokens], dtype=torch.long, device=codec.noise_table.device)
                    pieces.append(codec.decode(x)[0].float().cpu().numpy())
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        for s in self.spoken:
            s.heard = bool(s.state.tokens)
        return self._audio(pcm, None)

    def _audio(self, pcm: np.ndarray, cur: Optional[_Speaking]) -> list[Event]:
        if not len(pcm):
            return []
        self._mark("first_audio")
        self.samples += len(pcm)
        if cur is not None:
            cur.heard = True
        return [Audio(pcm.astype(np.float32, copy=False), self.speech.sample_rate)]

    def _finish(self) -> list[Event]:
        self.source.close()
        self._finished = True
        self._mark("done")
        return [Done(self.answer_text(), self.ids)]

    def _mark(self, name: str) -> None:
        if name not in self.marks:
            self.marks[name] = time.perf_counter() - self.t0


def speak_text(speech: SpeechOutput, text: str, system: str = "", question: str = "", seed: int = 0,
               t0: Optional[float] = None) -> AnswerResult:
    """Speak a written answer with the live machinery (``speak``, ``eval tts``): segments, decoder, codec windows.

    ``system`` and ``question`` frame the teacher-forced LLM pass that gives the prefix decoder its hidden states.
    """
    stream = AnswerStream(speech.written_answer(text, system, question), speech.llm.decode, speech, seed=seed,
                          t0=t0)
    with torch.inference_mode():
        return stream.run_to_end()

"""What a dialogue session tells its transport (websocket, OpenAI-Realtime endpoint, a test), in order.

Events are plain dataclasses; each transport maps them to its own wire format
(:mod:`freeze_omni.server.protocol` for ``/ws``). They are delivered by the session's ``on_event`` callback from a
worker thread, one session's events always in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

STATES = ("listening", "thinking", "speaking", "interrupted")
"""What the assistant is doing, as a client shows it: ``listening`` (idle or hearing the user), ``thinking``
(an answer started, no audio yet), ``speaking`` (answer audio flowing), ``interrupted`` (the answer was cut by the
user's speech or a cancel; ``thinking`` or ``listening`` follows)."""

DECISIONS = ("respond", "ignore", "end_of_input", "no_decision", "turn_limit")
"""How a user turn ended: the state head's two verdicts, the client's end of input, VAD silence with no
verdict (the speech is rolled back), or the turn's length limit (rolled back)."""


@dataclass
class StateChanged:
    state: str


@dataclass
class SpeechStarted:
    """The VAD heard speech start at ``audio_ms`` of the session's input stream."""

    audio_ms: int


@dataclass
class SpeechStopped:
    audio_ms: int


@dataclass
class TurnEnded:
    """A user turn ended with ``decision`` (:data:`DECISIONS`) after ``chunks`` 160 ms chunks; ``barge_in``: the
    user spoke while the assistant was answering."""

    decision: str
    chunks: int
    barge_in: bool = False


@dataclass
class ResponseStarted:
    response_id: int


@dataclass
class ResponseText:
    response_id: int
    delta: str


@dataclass
class ResponseAudio:
    """Answer audio: float32 PCM at ``sample_rate``."""

    response_id: int
    pcm: np.ndarray
    sample_rate: int


@dataclass
class ResponseDone:
    """The answer is over. ``status``: ``completed``, ``interrupted`` (barge-in) or ``cancelled`` (client);
    ``text``: what the LLM context keeps of it (the spoken part when cut); ``latency_ms``: stage timestamps from
    the end-of-turn decision (:meth:`freeze_omni.dialogue.answer.AnswerStream.latency_ms`)."""

    response_id: int
    text: str
    status: str
    latency_ms: dict = field(default_factory=dict)


@dataclass
class SessionUpdated:
    system_prompt: str
    vad: bool


@dataclass
class SessionError:
    """Something went wrong in this session; it keeps working (``code`` is stable, ``message`` is for people)."""

    code: str
    message: str


Event = Union[StateChanged, SpeechStarted, SpeechStopped, TurnEnded, ResponseStarted, ResponseText, ResponseAudio,
              ResponseDone, SessionUpdated, SessionError]

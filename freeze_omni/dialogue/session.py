"""`Session`: every cache and every bit of state of one user, and the transport-facing API.

A session holds (STYLE.md §7 item 1: per-user state lives here, never in the shared modules):

* the input side: unprocessed client audio, the VAD stream (model state, counters), the pre-roll ring, and for
  an open user turn a :class:`Turn` (front-end carry, encoder KV cache, adapter cache, packets still to encode);
* the LLM side: a :class:`~freeze_omni.dialogue.context.Context` (KV cache, the inputs behind it, history);
* the output side: the running :class:`~freeze_omni.dialogue.answer.AnswerStream` (token generator, segmenter,
  speech-decoder state, codec window) and its pacing counters;
* the listen/speak :class:`~freeze_omni.dialogue.state.Phase`.

Transports call :meth:`Session.push_audio`, :meth:`flush`, :meth:`cancel`, :meth:`update` and :meth:`close` from
any thread: these only queue a command and wake the scheduler. Everything else runs on a worker of the
:class:`~freeze_omni.dialogue.engine.DialogueEngine`, never on two at once, and reports back through the
``on_event`` callback (:mod:`freeze_omni.dialogue.events`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from freeze_omni.dialogue.context import Context, Piece
from freeze_omni.dialogue.events import Event
from freeze_omni.dialogue.state import Phase
from freeze_omni.dialogue.vad import VADStream

_ids = itertools.count(1)


@dataclass
class Packet:
    """One 160 ms packet of input audio (or, with ``samples`` None, the client's end-of-input marker).

    ``t``: when it was complete (``time.perf_counter``); ``preroll``: audio from before the speech onset (its
    state-head verdict is not used); ``speech_end``: the VAD heard the speech end in it."""

    samples: Optional[np.ndarray]
    t: float
    preroll: bool = False
    speech_end: bool = False
    respond: bool = False  # an end-of-input marker that also answers when no user turn is open


@dataclass
class Turn:
    """The streaming state of one open user turn (fresh for every turn, as in ``Listener.next_turn``)."""

    frontend: Any  # StreamingFrontend
    enc: Any  # EncoderCache
    adapter: torch.Tensor
    feed: deque = field(default_factory=deque)  # packets to encode, in order
    pending: np.ndarray = field(default_factory=lambda: np.zeros((0, 80), np.float32))
    deferred: list[Piece] = field(default_factory=list)  # pre-roll pieces not yet fed to the LLM
    chunks: int = 0  # chunks encoded
    barge_in: bool = False


@dataclass
class Command:
    kind: str  # "audio", "flush", "respond", "cancel", "update"
    data: Any = None
    t: float = 0.0


class Session:
    """One user's dialogue (see the module docstring). Create with :meth:`DialogueEngine.open_session`."""

    def __init__(self, engine: Any, system_prompt: str, vad: VADStream, vad_enabled: bool,
                 on_event: Optional[Callable[[Event], None]], seed: int) -> None:
        self.id = f"s{next(_ids)}"
        self.engine = engine
        self.system_prompt = system_prompt
        self.vad, self.vad_enabled = vad, vad_enabled
        self.on_event = on_event
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.created = time.monotonic()
        # input
        self.inbox: deque[Command] = deque()
        self.buffer = np.zeros(0, np.float32)
        self.buffer_t = 0.0
        self.packets: deque[Packet] = deque()
        self.ring: deque[Packet] = deque(maxlen=max(1, engine.cfg.preroll_chunks + 1))
        self.samples_in = 0
        self.turn: Optional[Turn] = None
        # model state
        self.phase = Phase.IDLE
        self.ctx: Optional[Context] = None
        self.answer: Any = None  # AnswerStream
        self.gen: Any = None  # its token generator
        self.paused = False
        self.response_id = 0
        self.decision_t = 0.0
        self.audio_out = 0  # samples of the current answer sent
        self.first_audio_t: Optional[float] = None
        self.shown_state = ""
        # scheduling (guarded by the scheduler's lock)
        self.closed = False
        self.queued = False
        self.busy = False
        self.dirty = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ transport API (any thread)
    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue 16 kHz mono audio: float32 in [-1, 1] or int16 samples."""
        pcm = np.asarray(pcm)
        if pcm.dtype == np.int16:
            pcm = pcm.astype(np.float32) / 32768.0
        self._command(Command("audio", pcm.astype(np.float32, copy=False).reshape(-1)))

    def flush(self) -> None:
        """End of user input: answer now if a user turn is open (push-to-talk release, end of a file)."""
        self._command(Command("flush"))

    def respond(self) -> None:
        """Answer now: like :meth:`flush`, and when no user turn is open (after the audio queued so far), an
        answer starts anyway, after an empty user turn (OpenAI Realtime's ``response.create``)."""
        self._command(Command("respond"))

    def cancel(self) -> None:
        """Stop the current answer (the spoken part stays in the context)."""
        self._command(Command("cancel"))

    def update(self, system_prompt: Optional[str] = None, vad: Optional[bool] = None) -> None:
        """Change the system prompt (starts a new conversation) and/or switch the VAD gate."""
        self._command(Command("update", {"system_prompt": system_prompt, "vad": vad}))

    def close(self) -> None:
        """End the session; its caches are released once no worker holds it."""
        self.engine.close_session(self)

    def _command(self, cmd: Command) -> None:
        if self.closed:
            return
        cmd.t = time.perf_counter()
        with self._lock:
            self.inbox.append(cmd)
        self.engine.scheduler.notify(self)

    # ------------------------------------------------------------------ worker side
    def take_commands(self) -> list[Command]:
        with self._lock:
            cmds = list(self.inbox)
            self.inbox.clear()
        return cmds

    def add_audio(self, pcm: np.ndarray, t: float, packet: int) -> None:
        """Append audio; every complete packet goes to :attr:`packets`."""
        self.buffer = np.concatenate([self.buffer, pcm]) if len(self.buffer) else pcm
        self.buffer_t = t
        n = len(self.buffer) // packet
        for i in range(n):
            self.packets.append(Packet(self.buffer[i * packet:(i + 1) * packet], t))
        self.buffer = self.buffer[n * packet:]

    def add_flush(self, t: float, packet: int, respond: bool = False) -> None:
        """Pad the incomplete packet with silence, then queue the end-of-input marker."""
        if len(self.buffer):
            self.packets.append(Packet(np.pad(self.buffer, (0, packet - len(self.buffer))), t))
            self.buffer = np.zeros(0, np.float32)
        self.packets.append(Packet(None, t, respond=respond))

    def emit(self, event: Event) -> None:
        if self.on_event is not None and not self.closed:
            self.on_event(event)

    def has_work(self) -> bool:
        """Something to do right now, apart from a paced answer."""
        return bool(self.inbox) or bool(self.packets) or bool(self.turn is not None and self.turn.feed)

    def backlog_seconds(self) -> float:
        """Input audio not yet processed (any thread; approximate)."""
        with self._lock:
            n = sum(len(c.data) for c in self.inbox if c.kind == "audio")
        turn, packet = self.turn, self.engine.packet
        n += len(self.buffer) + len(self.packets) * packet + (len(turn.feed) * packet if turn is not None else 0)
        return n / 16000

    @property
    def audio_ms(self) -> int:
        return self.samples_in * 1000 // 16000

    def __repr__(self) -> str:
        return f"Session({self.id}, {self.phase.value})"

"""One spoken user turn through the live path: 160 ms packets in, the state head decides, the LLM answers.

This is what `freeze-omni chat` runs and what the server runs per session: the audio is fed exactly as a
microphone would deliver it, nothing is re-encoded when the turn ends. The answer is an
:class:`~freeze_omni.dialogue.answer.AnswerStream`: text only, or spoken when a
:class:`~freeze_omni.dialogue.speech.SpeechOutput` is given (streaming, or the cascade baseline).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from freeze_omni.dialogue.answer import AnswerStream, Audio, TextDelta
from freeze_omni.dialogue.speech import SpeechOutput
from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.model import Listener, ListenSession
from freeze_omni.llm.sampling import SamplingConfig

PACKET = 2560  # 160 ms at 16 kHz

DECISIONS = {UserState.RESPOND: "respond", UserState.IGNORE: "ignore"}


@dataclass
class TurnResult:
    """What happened in one user turn.

    ``decision``: ``respond`` / ``ignore`` (the state head fired) or ``end_of_input`` (it never fired; the turn
    ended with the audio). ``decision_chunk``: index of the chunk where it fired (None at end of input).
    ``latency_ms``: from the decision (ms): ``first_text`` (first generated text) and, when the answer is spoken,
    ``first_audio`` and the other marks of :data:`freeze_omni.dialogue.answer.MARKS`. ``audio``: the spoken answer
    (float32 at ``sample_rate``), None when text only.
    """

    answer: str
    decision: str
    decision_chunk: Optional[int]
    chunks: int
    answer_ids: list[int] = field(default_factory=list)
    hiddens: Optional[torch.Tensor] = None
    latency_ms: dict = field(default_factory=dict)
    listen_seconds: float = 0.0  # compute time spent listening
    state_probs: list[list[float]] = field(default_factory=list)
    audio: Optional[np.ndarray] = None
    sample_rate: Optional[int] = None
    segments: list[str] = field(default_factory=list)
    speech_tokens: list[list[int]] = field(default_factory=list)


def run_turn(listener: Listener, session: ListenSession, wave: np.ndarray, sampling: SamplingConfig,
             use_state_head: bool = True, generator: Optional[torch.Generator] = None,
             on_text: Optional[Callable[[str], None]] = None, speech: Optional[SpeechOutput] = None,
             on_audio: Optional[Callable[[np.ndarray], None]] = None, speech_seed: int = 0,
             cascade: bool = False) -> tuple[TurnResult, ListenSession]:
    """Feed ``wave`` packet by packet; answer when the state head says so (or at the end of the audio).

    ``on_text(text_so_far)`` and ``on_audio(pcm)`` see the answer as it comes; ``speech`` speaks it (seeded by
    ``speech_seed``; ``cascade``: whole text first, then whole synthesis). Returns the result and the session to
    use for the next turn (LLM context kept; on ``ignore`` the turn's audio is rolled back out of the LLM context).
    """
    decision, fired_at, chunks, probs = None, None, 0, []
    t_listen = 0.0
    for s in range(0, len(wave), PACKET):
        t0 = time.perf_counter()
        verdicts = listener.accept(session, wave[s:s + PACKET])
        t_listen += time.perf_counter() - t0
        for state, p in verdicts:
            probs.append([round(float(x), 4) for x in p])
            chunks += 1
            if use_state_head and state != UserState.LISTEN and decision is None:
                decision, fired_at = state, chunks - 1
        if decision is not None:
            break
    if decision == UserState.IGNORE:
        result = TurnResult("", "ignore", fired_at, chunks, listen_seconds=t_listen, state_probs=probs)
        return result, listener.rollback(session)
    t_decide = time.perf_counter()
    stream = AnswerStream.from_llm(listener.model.llm, session.llm, sampling, speech, generator, seed=speech_seed,
                                   cascade=cascade, t0=t_decide)

    def on_event(ev) -> None:
        if isinstance(ev, TextDelta) and on_text is not None:
            on_text(stream.text)
        elif isinstance(ev, Audio) and on_audio is not None:
            on_audio(ev.pcm)

    with torch.inference_mode():
        ans = stream.run_to_end(on_event)
    result = TurnResult(ans.answer, DECISIONS.get(decision, "end_of_input"), fired_at, chunks, ans.ids, ans.hiddens,
                        ans.latency_ms, t_listen, probs, ans.audio, ans.sample_rate, ans.segments,
                        ans.speech_tokens)
    return result, listener.next_turn(session)

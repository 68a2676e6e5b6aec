"""One spoken user turn through the live path: 160 ms packets in, the state head decides, the LLM answers.

This is what `freeze-omni chat` runs and what the server runs per session: the audio is fed exactly as a
microphone would deliver it, nothing is re-encoded when the turn ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

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
    ``latency_ms``: ``first_text`` from the decision to the first generated text.
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


def run_turn(listener: Listener, session: ListenSession, wave: np.ndarray, sampling: SamplingConfig,
             use_state_head: bool = True, generator: Optional[torch.Generator] = None,
             on_text: Optional[Callable[[str], None]] = None) -> tuple[TurnResult, ListenSession]:
    """Feed ``wave`` packet by packet; answer when the state head says so (or at the end of the audio).

    Returns the result and the session to use for the next turn (LLM context kept; on ``ignore`` the turn's
    audio is rolled back out of the LLM context).
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
    first: dict[str, float] = {}

    def on_token(tok_id: int, text: str) -> bool:
        if "first_text" not in first and text.strip():
            first["first_text"] = (time.perf_counter() - t_decide) * 1000.0
        if on_text is not None:
            on_text(text)
        return True

    ids, hiddens, answer = listener.respond(session, sampling, generator=generator, on_token=on_token)
    result = TurnResult(answer, DECISIONS.get(decision, "end_of_input"), fired_at, chunks, ids, hiddens,
                        {k: round(v, 1) for k, v in first.items()}, t_listen, probs)
    return result, listener.next_turn(session)

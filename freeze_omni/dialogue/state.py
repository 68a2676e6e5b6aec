"""The listen / speak state machine of one dialogue session, as a pure transition function.

Upstream (``reference/freeze_omni_facts.md`` §3.2) names its states ``pre sl cl el ss cs``; here a session is in
one :class:`Phase`, receives :class:`Signal` s (from the VAD, the state head, the answer and the client) and
:func:`transition` says which phase comes next and which :class:`Action` s the engine must carry out, in order::

    IDLE ──speech start──► LISTENING ──respond / end of input──► ANSWERING ──answer done──► IDLE
     ▲                       │                                    │   ▲
     └── ignore / speech end / too long (roll back)  speech start │   │ ignore / speech end / too long
                                                                  ▼   │ (roll back, the answer resumes)
                                                                 OVERLAP ──respond──► ANSWERING
                                                                    (barge-in: cut the answer, answer anew)

* IDLE: nobody speaks; audio goes to the VAD and a short pre-roll ring only.
* LISTENING: a user turn is fed to the LLM chunk by chunk; the state head is read after every chunk.
* ANSWERING: the assistant's answer is produced (the client sees "thinking" until its first audio, then
  "speaking"); audio still goes to the VAD, so speech starts a barge-in candidate.
* OVERLAP: the user speaks during the answer. The answer's text generation is paused (its audio keeps flowing
  while the text is complete), the user's speech is fed on top of the LLM context; RESPOND interrupts the answer,
  IGNORE or silence rolls the speech back and the answer resumes exactly where it was (upstream §3.4).
"""

from __future__ import annotations

from enum import Enum


class Phase(str, Enum):
    IDLE = "idle"
    LISTENING = "listening"
    ANSWERING = "answering"
    OVERLAP = "overlap"


class Signal(str, Enum):
    SPEECH_START = "speech_start"  # VAD onset (or, without VAD, any audio while idle)
    SPEECH_END = "speech_end"  # VAD offset with no state-head decision
    RESPOND = "respond"  # state head: the user is done, answer
    IGNORE = "ignore"  # state head: the user is done, not for the assistant
    END_OF_INPUT = "end_of_input"  # client: the user is done (answer now)
    TURN_LIMIT = "turn_limit"  # the user turn reached its length limit with no decision
    ANSWER_DONE = "answer_done"  # the answer's last audio is out
    CANCEL = "cancel"  # client: stop the answer
    RESPOND_NOW = "respond_now"  # client: answer now, even with no new user speech (an empty user turn)


class Action(str, Enum):
    OPEN_TURN = "open_turn"  # start a user turn: fresh front end / encoder / adapter, pre-roll first
    ROLLBACK_TURN = "rollback_turn"  # crop the turn's audio out of the LLM context
    COMMIT_TURN = "commit_turn"  # the turn stays in the context and the history
    START_ANSWER = "start_answer"
    PAUSE_ANSWER = "pause_answer"  # stop text generation with the LLM context covering exactly its tokens
    RESUME_ANSWER = "resume_answer"
    INTERRUPT_ANSWER = "interrupt_answer"  # barge-in: stop at once, keep what was spoken, re-feed the open turn
    CANCEL_ANSWER = "cancel_answer"  # client cancel: stop at once, keep what was spoken
    FINISH_ANSWER = "finish_answer"  # the answer is over: it joins the history


P, S, A = Phase, Signal, Action
_TABLE: dict[tuple[Phase, Signal], tuple[Phase, tuple[Action, ...]]] = {
    (P.IDLE, S.SPEECH_START): (P.LISTENING, (A.OPEN_TURN,)),
    (P.IDLE, S.RESPOND_NOW): (P.ANSWERING, (A.COMMIT_TURN, A.START_ANSWER)),
    (P.LISTENING, S.RESPOND): (P.ANSWERING, (A.COMMIT_TURN, A.START_ANSWER)),
    (P.LISTENING, S.END_OF_INPUT): (P.ANSWERING, (A.COMMIT_TURN, A.START_ANSWER)),
    (P.LISTENING, S.IGNORE): (P.IDLE, (A.ROLLBACK_TURN,)),
    (P.LISTENING, S.SPEECH_END): (P.IDLE, (A.ROLLBACK_TURN,)),
    (P.LISTENING, S.TURN_LIMIT): (P.IDLE, (A.ROLLBACK_TURN,)),
    (P.ANSWERING, S.SPEECH_START): (P.OVERLAP, (A.PAUSE_ANSWER, A.OPEN_TURN)),
    (P.ANSWERING, S.ANSWER_DONE): (P.IDLE, (A.FINISH_ANSWER,)),
    (P.ANSWERING, S.CANCEL): (P.IDLE, (A.CANCEL_ANSWER,)),
    (P.OVERLAP, S.RESPOND): (P.ANSWERING, (A.INTERRUPT_ANSWER, A.COMMIT_TURN, A.START_ANSWER)),
    (P.OVERLAP, S.END_OF_INPUT): (P.ANSWERING, (A.INTERRUPT_ANSWER, A.COMMIT_TURN, A.START_ANSWER)),
    (P.OVERLAP, S.IGNORE): (P.ANSWERING, (A.ROLLBACK_TURN, A.RESUME_ANSWER)),
    (P.OVERLAP, S.SPEECH_END): (P.ANSWERING, (A.ROLLBACK_TURN, A.RESUME_ANSWER)),
    (P.OVERLAP, S.TURN_LIMIT): (P.ANSWERING, (A.ROLLBACK_TURN, A.RESUME_ANSWER)),
    (P.OVERLAP, S.ANSWER_DONE): (P.LISTENING, (A.FINISH_ANSWER,)),
    (P.OVERLAP, S.CANCEL): (P.LISTENING, (A.INTERRUPT_ANSWER,)),
}


def transition(phase: Phase, signal: Signal) -> tuple[Phase, tuple[Action, ...]]:
    """The next phase and the actions to carry out, in order. A signal that means nothing in ``phase`` (speech
    start while listening, cancel while idle, ...) leaves the phase unchanged with no action.

    >>> transition(Phase.IDLE, Signal.SPEECH_START)
    (<Phase.LISTENING: 'listening'>, (<Action.OPEN_TURN: 'open_turn'>,))
    >>> transition(Phase.OVERLAP, Signal.IGNORE)[0]
    <Phase.ANSWERING: 'answering'>
    >>> transition(Phase.IDLE, Signal.CANCEL)
    (<Phase.IDLE: 'idle'>, ())
    """
    return _TABLE.get((phase, signal), (phase, ()))


def turn_open(phase: Phase) -> bool:
    """A user turn is being fed to the LLM."""
    return phase in (Phase.LISTENING, Phase.OVERLAP)


def answering(phase: Phase) -> bool:
    """An answer is in progress (possibly paused)."""
    return phase in (Phase.ANSWERING, Phase.OVERLAP)

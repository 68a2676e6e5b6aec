"""The listen/speak state machine: a pure transition function."""

import doctest

from freeze_omni.dialogue import state as st
from freeze_omni.dialogue.state import Action, Phase, Signal, transition


def test_doctests():
    assert doctest.testmod(st).failed == 0


def test_every_pair_is_defined_and_consistent():
    for phase in Phase:
        for signal in Signal:
            nxt, actions = transition(phase, signal)
            assert isinstance(nxt, Phase) and all(isinstance(a, Action) for a in actions)
            if Action.START_ANSWER in actions:
                assert nxt == Phase.ANSWERING and Action.COMMIT_TURN in actions
            if Action.OPEN_TURN in actions:
                assert st.turn_open(nxt)
            if st.turn_open(phase) and not st.turn_open(nxt):  # a turn never just disappears
                assert {Action.ROLLBACK_TURN, Action.COMMIT_TURN} & set(actions)
            if st.answering(phase) and not st.answering(nxt):
                assert {Action.FINISH_ANSWER, Action.CANCEL_ANSWER, Action.INTERRUPT_ANSWER} & set(actions)


def test_respond_now_answers_from_idle_only():
    assert transition(Phase.IDLE, Signal.RESPOND_NOW) == (Phase.ANSWERING, (Action.COMMIT_TURN, Action.START_ANSWER))
    for phase in (Phase.LISTENING, Phase.ANSWERING, Phase.OVERLAP):  # an open turn ends by END_OF_INPUT instead
        assert transition(phase, Signal.RESPOND_NOW) == (phase, ())


def test_conversation_paths():
    p = Phase.IDLE
    for signal, want in [(Signal.SPEECH_START, Phase.LISTENING), (Signal.IGNORE, Phase.IDLE),
                         (Signal.SPEECH_START, Phase.LISTENING), (Signal.RESPOND, Phase.ANSWERING),
                         (Signal.SPEECH_START, Phase.OVERLAP), (Signal.SPEECH_END, Phase.ANSWERING),
                         (Signal.SPEECH_START, Phase.OVERLAP), (Signal.RESPOND, Phase.ANSWERING),
                         (Signal.ANSWER_DONE, Phase.IDLE)]:
        p, _ = transition(p, signal)
        assert p == want, (signal, p)
    assert transition(Phase.OVERLAP, Signal.RESPOND)[1] == (Action.INTERRUPT_ANSWER, Action.COMMIT_TURN,
                                                           Action.START_ANSWER)
    assert transition(Phase.OVERLAP, Signal.IGNORE)[1] == (Action.ROLLBACK_TURN, Action.RESUME_ANSWER)
    assert transition(Phase.ANSWERING, Signal.SPEECH_START)[1] == (Action.PAUSE_ANSWER, Action.OPEN_TURN)
    assert transition(Phase.LISTENING, Signal.SPEECH_START) == (Phase.LISTENING, ())

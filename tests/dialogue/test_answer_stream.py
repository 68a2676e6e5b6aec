"""AnswerStream: same text as the text-only path, audio accounting, event order, early first audio, barge-in,
cascade == streaming tokens, and run_turn's speech path."""

import numpy as np
import pytest
import torch

from freeze_omni.dialogue.answer import Audio, AnswerStream, Done, TextDelta, stage_breakdown
from freeze_omni.llm.model import Listener
from freeze_omni.llm.sampling import SamplingConfig

GREEDY = SamplingConfig(greedy=True, max_new_tokens=24)
TEXT = "Hello there, how are you today? I am fine, thank you. Bye now."


def _listening(speech_llm, wave):
    listener = Listener(speech_llm, "Be brief.")
    session = listener.new_session()
    listener.accept(session, wave)
    return listener, session


def _forced(speech, text=TEXT):
    return AnswerStream(speech.written_answer(text, "Be brief.", "How are you?"), speech.llm.decode, speech, seed=3)


@pytest.mark.parametrize("spoken", [False, True])
def test_same_answer_as_listener_respond(speech_llm, speech, wave, spoken):
    listener, a = _listening(speech_llm, wave)
    ids, hiddens, text = listener.respond(a, GREEDY)
    _, b = _listening(speech_llm, wave)
    stream = AnswerStream.from_llm(speech_llm.llm, b.llm, GREEDY, speech if spoken else None)
    res = stream.run_to_end()
    assert res.ids == ids and res.answer == text and len(ids) > 0
    torch.testing.assert_close(res.hiddens, hiddens)
    assert b.llm.length == a.llm.length  # the context holds exactly the answer
    assert (res.audio is not None) == spoken and (res.sample_rate == speech.sample_rate if spoken else True)


def test_audio_accounting_and_event_order(speech):
    events = list(_forced(speech).events())
    kinds = [type(e) for e in events]
    assert kinds[-1] is Done and kinds.count(Done) == 1 and kinds[0] is TextDelta
    assert kinds.index(Audio) > kinds.index(TextDelta)
    stream_text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert stream_text.strip() == events[-1].answer == TEXT
    audio = [e for e in events if isinstance(e, Audio)]
    assert all(a.sample_rate == speech.sample_rate and a.pcm.dtype == np.float32 for a in audio)
    res = _forced(speech).run_to_end()
    n_tokens = sum(len(t) for t in res.speech_tokens)
    assert len(res.segments) >= 3 and n_tokens > 0
    assert len(res.audio) == n_tokens * speech.codec.hop == sum(len(a.pcm) for a in audio)


def test_first_audio_before_the_text_is_finished(speech):
    stream = _forced(speech)
    events = list(stream.events())
    first_audio = next(i for i, e in enumerate(events) if isinstance(e, Audio))
    last_text = max(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert first_audio < last_text
    m = stream.latency_ms()
    assert m["first_segment"] <= m["decoder_prefill"] <= m["first_speech_tokens"] <= m["first_audio"] < m["text_done"]
    stages = stage_breakdown(m)
    assert set(stages) == {"first_segment", "decoder_prefill", "first_speech_tokens", "first_audio", "total"}
    assert stages["total"] == m["first_audio"] and all(v is not None and v >= 0 for v in stages.values())


def test_cascade_gives_the_same_tokens_under_top_k_1(speech):
    sp = speech.with_options(top_k=1)
    a = AnswerStream(sp.written_answer(TEXT, "Be brief."), sp.llm.decode, sp).run_to_end()
    c_stream = AnswerStream(sp.written_answer(TEXT, "Be brief."), sp.llm.decode, sp, cascade=True)
    events = []
    c = c_stream.run_to_end(events.append)
    assert [type(e) for e in events].count(Audio) == 1  # the whole answer at once
    assert c.speech_tokens == a.speech_tokens and c.segments == a.segments and c.answer == a.answer
    np.testing.assert_allclose(c.audio, a.audio, atol=2e-3)  # windowed decode == whole decode (float rounding)
    assert c.latency_ms["first_audio"] >= c.latency_ms["text_done"]


def test_cancel_stops_and_keeps_the_context_consistent(speech_llm, speech, wave):
    for rollback in (False, True):
        _, session = _listening(speech_llm, wave)
        stream = AnswerStream.from_llm(speech_llm.llm, session.llm, SamplingConfig(greedy=True, max_new_tokens=60),
                                       speech)
        while len(stream.ids) < 5:
            stream.step()
        done = stream.cancel(rollback_to_spoken=rollback)
        assert isinstance(done, Done) and done.cancelled and stream.done and stream.step() == []
        start = stream.source.answer_start
        if rollback:  # nothing was heard yet: the answer is forgotten, the assistant prefix stays
            assert done.ids == stream.spoken_ids == [] and session.llm.length == start
        else:
            assert done.ids == stream.ids and len(done.ids) == 5 and session.llm.length == start + 5


def test_cancel_after_audio_exposes_what_was_spoken(speech):
    stream = _forced(speech)
    while not any(isinstance(e, Audio) for e in stream.step()):
        pass
    done = stream.cancel()
    assert stream.spoken_ids and done.ids[:len(stream.spoken_ids)] == stream.spoken_ids
    assert len(stream.spoken_ids) < len(speech.llm.tokenize(TEXT))  # cut before the end


def test_run_turn_speaks(speech_llm, speech, wave):
    from freeze_omni.dialogue.turn import run_turn

    listener = Listener(speech_llm, "Be brief.")
    heard = []
    res, _ = run_turn(listener, listener.new_session(), wave, GREEDY, use_state_head=False, speech=speech,
                      on_audio=heard.append)
    assert res.decision == "end_of_input" and res.sample_rate == speech.sample_rate
    assert len(res.audio) == sum(len(x) for x in heard) > 0
    assert res.latency_ms["first_audio"] >= res.latency_ms["first_segment"] > 0
    text_only, _ = run_turn(listener, listener.new_session(), wave, GREEDY, use_state_head=False)
    assert text_only.answer == res.answer and text_only.audio is None and "first_audio" not in text_only.latency_ms

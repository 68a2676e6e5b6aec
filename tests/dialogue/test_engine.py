"""The dialogue engine on a tiny random bundle: listening == Listener, answers, barge-in, ignore, bounded context,
concurrent sessions (threads, batching) without leaks, error isolation."""

import time

import numpy as np
import pytest
import torch

from freeze_omni.dialogue import events as ev
from freeze_omni.dialogue.engine import DialogueEngine, EngineConfig
from freeze_omni.dialogue.state import Phase
from freeze_omni.dialogue.vad import VADConfig
from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.sampling import SamplingConfig
from freeze_omni.server.testing import force_state, letters_only, speech_like

SR = 16000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from freeze_omni.dialogue.testing import save_tiny_bundle

    return save_tiny_bundle(tmp_path_factory.mktemp("engine"))


def make_engine(bundle, state=UserState.RESPOND, greedy=True, max_new_tokens=40, **cfg) -> DialogueEngine:
    torch.set_num_threads(1)
    cfg.setdefault("answer_lead_seconds", None)
    engine = DialogueEngine.from_bundle(str(bundle), EngineConfig(**cfg))
    force_state(engine.model, state)
    letters_only(engine.llm)
    engine.sampling = SamplingConfig(greedy=greedy, max_new_tokens=max_new_tokens)
    return engine


def question(seconds=1.0, seed=0) -> np.ndarray:
    return np.concatenate([np.zeros(SR // 2, np.float32), speech_like(seconds, seed), np.zeros(SR // 2, np.float32)])


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, e):
        self.events.append(e)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def drive(engine, s, until=None, timeout=30.0):
    """Run rounds for ``s`` until ``until()`` or nothing is left (a paced answer is waited for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        if s.has_work() or engine._answer_ready(s):
            engine.process([s])
        elif s.answer is not None and not s.paused:
            time.sleep(0.005)
        else:
            return
    raise AssertionError("drive timed out")


def open_session(engine, **kw):
    rec = Recorder()
    s = engine.open_session(on_event=rec, **kw)
    return s, rec


def test_listening_equals_listener(bundle):
    engine = make_engine(bundle, state=UserState.LISTEN)
    s, _ = open_session(engine, vad=False)
    wave = (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    s.push_audio(wave)
    drive(engine, s)
    assert s.phase == Phase.LISTENING
    _assert_heard_as_listener(engine, s, wave)


def _assert_heard_as_listener(engine, s, wave):
    """The session's LLM context after ``wave`` equals the Listener's: same length, same next hidden state."""
    from freeze_omni.llm.model import Listener

    listener = Listener(engine.model, engine.system_prompt)
    ls = listener.new_session()
    listener.accept(ls, wave)
    assert s.ctx.state.length == ls.llm.length
    probe = engine.llm.embed(torch.tensor([[65]]))
    with torch.inference_mode():
        a = engine.llm.forward_embeds(probe, s.ctx.state.clone(), logits_for="none")[0]
        b = engine.llm.forward_embeds(probe, ls.llm.clone(), logits_for="none")[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("idle_rounds", [1, 12])
def test_lead_fed_while_idle_changes_nothing(bundle, monkeypatch, idle_rounds):
    """The next turn's lead (user prefix, prompt) goes into the context while nobody speaks, a few positions per
    round; the turn that follows (whether it starts with the lead half or wholly fed) equals the Listener's, and an
    answer to no speech still follows an empty user turn."""
    import freeze_omni.dialogue.engine as engine_module

    monkeypatch.setattr(engine_module, "LEAD_STEP", 2)
    engine = make_engine(bundle, state=UserState.LISTEN)
    s, _ = open_session(engine, vad=False)
    lead = sum(p.length for p in engine.listener.lead())
    for i in range(idle_rounds):  # nothing heard yet: the lead goes in, 2 positions per round
        engine.process([s])
        assert s.ctx.turn_length == min(lead, 2 * (i + 1)) and bool(s.ctx.lead_left) == (lead > 2 * (i + 1))
    assert s.phase == Phase.IDLE and s.ctx.state.length == s.ctx.expected_length()
    wave = (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    s.push_audio(wave)
    drive(engine, s)
    _assert_heard_as_listener(engine, s, wave)

    other, rec = open_session(make_engine(bundle, state=UserState.LISTEN, max_new_tokens=5), vad=False)
    other.engine.process([other])
    assert other.ctx.turn_length > 0
    other.respond()
    drive(other.engine, other)
    assert rec.of(ev.ResponseDone) and other.ctx.exchanges[0].user == []
    assert other.ctx.state.length == other.ctx.expected_length()


def test_spoken_question_gets_a_spoken_answer(bundle):
    engine = make_engine(bundle, preroll_chunks=3)
    s, rec = open_session(engine)
    s.push_audio(question())
    drive(engine, s)
    names = [type(e).__name__ for e in rec.events]
    assert names.index("SpeechStarted") < names.index("TurnEnded") < names.index("ResponseStarted")
    assert rec.of(ev.TurnEnded)[0].decision == "respond"
    assert [e.state for e in rec.of(ev.StateChanged)][:4] == ["listening", "thinking", "speaking", "listening"]
    done = rec.of(ev.ResponseDone)
    assert len(done) == 1 and done[0].status == "completed" and done[0].text
    assert "".join(e.delta for e in rec.of(ev.ResponseText)).strip() == done[0].text
    audio = rec.of(ev.ResponseAudio)
    assert audio and all(a.sample_rate == engine.sample_rate and a.pcm.dtype == np.float32 for a in audio)
    assert {"first_text", "first_audio", "done"} <= set(done[0].latency_ms)
    # pre-roll: the turn was fed from 3 chunks before the onset; the cache is exactly system + exchange
    assert s.phase == Phase.IDLE and s.ctx.state.length == s.ctx.expected_length()
    user = s.ctx.exchanges[0].user
    assert user[-1].embeds.shape[0] == 2 * (3 + 1)  # 2 embeddings per chunk, onset chunk + 3 of pre-roll


def test_barge_in_cuts_the_answer_and_keeps_what_was_spoken(bundle):
    engine = make_engine(bundle, greedy=False, max_new_tokens=150, answer_lead_seconds=0.3,
                         vad=VADConfig(min_silence_ms=300))
    s, rec = open_session(engine)
    s.push_audio(question())
    drive(engine, s, until=lambda: rec.of(ev.ResponseAudio) and not s.packets)
    engine.sampling = SamplingConfig(greedy=True, max_new_tokens=5)  # the next answer (this one keeps its own)
    s.push_audio(speech_like(1.0, seed=3))
    drive(engine, s, until=lambda: len(rec.of(ev.ResponseStarted)) == 2)
    done = rec.of(ev.ResponseDone)
    assert done[0].response_id == 1 and done[0].status == "interrupted"
    i_done = rec.events.index(done[0])
    assert isinstance(rec.events[i_done - 1], ev.StateChanged) and rec.events[i_done - 1].state == "interrupted"
    assert not [e for e in rec.events[i_done:] if isinstance(e, ev.ResponseAudio) and e.response_id == 1]
    assert rec.of(ev.TurnEnded)[-1].barge_in and rec.of(ev.TurnEnded)[-1].decision == "respond"
    prefix = engine.llm.framing_ids(engine.llm.framing.assistant_prefix)
    kept = s.ctx.exchanges[0].answer[0].ids
    assert kept[:len(prefix)] == prefix and 0 < len(kept) - len(prefix) < 150
    assert engine.llm.decode(kept[len(prefix):]).strip() == done[0].text
    drive(engine, s)
    assert rec.of(ev.ResponseDone)[-1].status == "completed"
    assert s.ctx.state.length == s.ctx.expected_length() and len(s.ctx.exchanges) == 2


def test_ignored_speech_is_rolled_back_and_the_answer_resumes(bundle):
    """Speech during the answer's text generation pauses it; IGNORE rolls the speech back and the greedy answer
    comes out exactly as without the interruption."""
    answers = []
    for barge in (False, True):
        engine = make_engine(bundle, max_new_tokens=60, vad=VADConfig(min_silence_ms=300))
        s, rec = open_session(engine)
        s.push_audio(question())
        drive(engine, s, until=lambda: rec.of(ev.ResponseStarted))
        force_state(engine.model, UserState.IGNORE)
        s.push_audio(speech_like(0.6, seed=5) if barge else np.zeros(SR * 6 // 10, np.float32))
        if barge:
            drive(engine, s, until=lambda: rec.of(ev.TurnEnded)[-1].barge_in)
            assert rec.of(ev.TurnEnded)[-1].decision == "ignore" and s.phase == Phase.ANSWERING
            assert not s.gen.done  # the text was paused, not finished
        drive(engine, s)
        assert [d.status for d in rec.of(ev.ResponseDone)] == ["completed"]
        assert s.ctx.state.length == s.ctx.expected_length()
        answers.append(rec.of(ev.ResponseDone)[0].text)
    assert answers[0] == answers[1] and len(answers[0]) > 40  # greedy: the rolled-back speech left no trace


def test_long_session_runs_in_bounded_context(bundle):
    engine = make_engine(bundle, state=UserState.LISTEN, max_new_tokens=6, max_context=160, keep_context=100)
    s, rec = open_session(engine, vad=False)
    peak = 0
    for i in range(25):
        s.push_audio((0.1 * np.random.default_rng(i).standard_normal(SR // 4)).astype(np.float32))
        s.flush()
        drive(engine, s)
        peak = max(peak, s.ctx.state.length)
    assert len(rec.of(ev.ResponseDone)) == 25 and s.ctx.evictions > 0
    assert peak <= 160 + 60 and s.ctx.state.length == s.ctx.expected_length()


def _converse(engine, prompts, start_first):
    recs, sessions = [], []
    for p in prompts:
        s, rec = open_session(engine, system_prompt=p, seed=len(p))
        sessions.append(s)
        recs.append(rec)
    for i, s in enumerate(sessions):
        s.push_audio(question(seed=i))
    if start_first:
        engine.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(r.of(ev.ResponseDone) for r in recs):
        time.sleep(0.01)
    engine.stop()
    return [(r.of(ev.ResponseDone)[0].text, _pcm(r)) for r in recs], recs


def _pcm(rec) -> bytes:
    return b"".join(e.pcm.tobytes() for e in rec.of(ev.ResponseAudio))


def test_concurrent_sessions_do_not_leak(bundle):
    """Sessions served together (batched encoder, LLM and decoder passes) answer, in text and audio, exactly
    what each says alone; so do sessions served without batching."""
    prompts = ["You are Alpha.", "You are Bravo, a pirate who speaks in riddles."]
    alone = [_converse(make_engine(bundle, greedy=False, workers=2), [p], True)[0][0] for p in prompts]
    engine = make_engine(bundle, greedy=False, workers=2, max_batch=4)
    together, recs = _converse(engine, prompts, True)
    assert together == alone and alone[0] != alone[1] and all(len(pcm) > 0 for _, pcm in alone)
    assert engine.metrics.value("decoder_rows_total") > engine.metrics.value("decoder_rounds_total")
    assert engine.metrics.value("batched_chunks_total") > engine.metrics.value("batches_total")  # some batching
    assert engine.metrics.value("llm_rows_total") > engine.metrics.value("llm_passes_total")  # shared LLM passes
    for rec in recs:
        assert {e.response_id for e in rec.events if hasattr(e, "response_id")} == {1}
    unbatched = make_engine(bundle, greedy=False, workers=2, batching=False)
    assert _converse(unbatched, prompts, True)[0] == alone
    assert unbatched.metrics.value("batched_chunks_total") == unbatched.metrics.value("batches_total")
    assert unbatched.metrics.value("llm_rows_total") == unbatched.metrics.value("llm_passes_total")
    assert unbatched.metrics.value("decoder_rows_total") == unbatched.metrics.value("decoder_rounds_total") > 0


def test_a_failing_session_recovers(bundle):
    engine = make_engine(bundle, state=UserState.LISTEN)
    s, rec = open_session(engine, vad=False)
    other, orec = open_session(engine, vad=False)
    engine.process([s, other])
    s.ctx.state = None  # corrupt this session only
    for x in (s, other):
        x.push_audio(np.zeros(SR // 2, np.float32))
        x.flush()
    engine.process([s, other])
    drive(engine, s)
    drive(engine, other)
    assert rec.of(ev.SessionError) and rec.of(ev.SessionError)[0].code == "internal_error"
    assert not orec.of(ev.SessionError) and orec.of(ev.ResponseDone)
    s.push_audio(np.zeros(SR // 2, np.float32))
    s.flush()
    drive(engine, s)
    assert rec.of(ev.ResponseDone)[-1].status == "completed"


def test_paced_answer_is_woken_by_the_scheduler(bundle):
    """Audio at most ``answer_lead_seconds`` ahead of playback: the answer sleeps on the scheduler's timers."""
    engine = make_engine(bundle, greedy=False, max_new_tokens=40, answer_lead_seconds=0.2, workers=1)
    s, rec = open_session(engine, vad=False)
    s.push_audio(np.zeros(SR // 4, np.float32))
    s.flush()
    t0 = time.monotonic()
    engine.start()
    try:
        deadline = time.monotonic() + 20
        while not rec.of(ev.ResponseDone) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.stop()
    elapsed = time.monotonic() - t0
    audio = sum(len(a.pcm) for a in rec.of(ev.ResponseAudio)) / engine.sample_rate
    assert rec.of(ev.ResponseDone)[0].status == "completed" and len(rec.of(ev.ResponseAudio)) > 2
    last_chunk = len(rec.of(ev.ResponseAudio)[-1].pcm) / engine.sample_rate
    assert elapsed > audio - last_chunk - 0.2 - 0.1  # not (much) faster than real time


def test_respond_answers_now_without_new_speech(bundle):
    """`Session.respond()` (OpenAI Realtime's response.create): from idle, an answer after an empty user turn,
    the history stays consistent; with a turn open it ends the turn like `flush()`."""
    engine = make_engine(bundle, state=UserState.LISTEN, max_new_tokens=10)
    s, rec = open_session(engine)
    s.respond()
    drive(engine, s)
    assert not rec.of(ev.TurnEnded) and [e.status for e in rec.of(ev.ResponseDone)] == ["completed"]
    assert s.phase == Phase.IDLE and len(s.ctx.exchanges) == 1 and s.ctx.exchanges[0].user == []
    assert s.ctx.state.length == s.ctx.expected_length()
    s.push_audio(question())
    s.respond()
    drive(engine, s)
    assert rec.of(ev.TurnEnded)[-1].decision == "end_of_input" and len(rec.of(ev.ResponseDone)) == 2
    assert len(s.ctx.exchanges) == 2 and s.ctx.state.length == s.ctx.expected_length()


def test_answer_text_ahead_waits_in_a_round_that_hears_someone(bundle, monkeypatch):
    """In a round with a listening chunk, an answer whose text is ahead of its speech (``_text_ahead``: a whole
    unspoken segment) is not fed to that round's LLM pass and takes no step (its token waits); rounds without
    one feed it, and it completes as usual."""
    engine = make_engine(bundle, max_new_tokens=40)
    b, rec_b = open_session(engine, vad=False)
    b.push_audio(question(0.5, seed=3))
    b.flush()
    drive(engine, b, until=lambda: b.answer is not None and b.gen.has_pending and len(b.gen.ids) > 2)
    assert b.answer is not None
    monkeypatch.setattr(engine, "_text_ahead", lambda s: s is b)
    a, _ = open_session(engine, vad=False)
    a.push_audio(question(1.0, seed=4))
    fed = []
    ragged = engine._ragged
    monkeypatch.setattr(engine, "_ragged", lambda rows: (fed.append([s for s, _, _ in rows]), ragged(rows))[1])
    ids = list(b.gen.ids)
    engine.process([a, b])
    assert fed and a in fed[-1] and b not in fed[-1]
    assert b.gen.has_pending and b.gen.ids == ids  # nothing fed, nothing sampled
    drive(engine, b)
    assert [e.status for e in rec_b.of(ev.ResponseDone)] == ["completed"]
    assert any(b in rows for rows in fed[1:])

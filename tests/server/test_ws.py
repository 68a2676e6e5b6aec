"""The /ws protocol over a real websocket: spoken question -> text + audio, barge-in, cancel, busy, bad input,
connect/disconnect cycles, concurrent sessions with their own system prompts, health and metrics."""

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.sampling import SamplingConfig
from freeze_omni.server.testing import force_state, speech_like

SR = 16000


def question(seconds=1.0, seed=0):
    return np.concatenate([np.zeros(SR // 2, np.float32), speech_like(seconds, seed), np.zeros(SR // 2, np.float32)])


@pytest.fixture(autouse=True)
def defaults(served):
    _, engine = served
    force_state(engine.model, UserState.RESPOND)
    engine.sampling = SamplingConfig(max_new_tokens=30)
    yield


def test_spoken_question_gets_text_and_audio(served, client_of):
    srv, engine = served
    c = client_of(srv.url)
    created = c.created
    assert created["type"] == "session.created" and created["protocol"] == 1
    assert created["input_audio"] == {"format": "pcm16", "sample_rate": 16000, "channels": 1}
    assert created["output_audio"]["sample_rate"] == engine.sample_rate == 24000
    c.send_json({"type": "session.update", "system_prompt": "Be terse.", "input_sample_rate": 16000,
                 "input_format": "pcm16", "vad": True})
    assert c.event("session.updated")["system_prompt"] == "Be terse."
    c.send_audio(question())
    done = c.event("response.done")
    assert done["status"] == "completed" and done["response_id"] == 1 and done["latency_ms"]["first_audio"] > 0
    types = c.types()
    assert types.index("input.speech_started") < types.index("input.turn_ended") < types.index("response.started")
    start, end = types.index("response.started"), len(types) - 1
    audio = [m for m in c.log[start:end] if isinstance(m, bytes)]
    assert audio and all(len(a) % 2 == 0 for a in audio)
    pcm = np.frombuffer(b"".join(audio), "<i2")
    assert len(pcm) > 0.1 * engine.sample_rate and np.abs(pcm).max() > 0
    text = "".join(m["delta"] for m in c.log if isinstance(m, dict) and m["type"] == "response.text.delta")
    assert text.strip() == done["text"]
    states = [m["state"] for m in c.log if isinstance(m, dict) and m["type"] == "state"]
    assert states == ["listening", "thinking", "speaking"]
    assert c.event("state")["state"] == "listening"
    assert [m for m in c.log if isinstance(m, dict) and m["type"] == "input.turn_ended"][0]["decision"] == "respond"


def test_end_of_input_without_vad(served, client_of):
    srv, engine = served
    force_state(engine.model, UserState.LISTEN)
    c = client_of(srv.url)
    c.send_json({"type": "session.update", "vad": False})
    assert c.event("session.updated")["vad"] is False
    c.send_audio((0.1 * np.random.default_rng(0).standard_normal(SR // 2)).astype(np.float32))
    c.send_json({"type": "input.flush"})
    assert c.event("input.turn_ended")["decision"] == "end_of_input"
    assert c.event("response.done")["status"] == "completed"


def test_barge_in_stops_the_answer_then_cancel(served, client_of):
    srv, engine = served
    engine.sampling = SamplingConfig(max_new_tokens=200)
    c = client_of(srv.url)
    c.send_audio(question())
    c.event("response.started", response_id=1)
    while not isinstance(c.next(), bytes):  # the answer is speaking
        pass
    if "input.speech_stopped" not in c.types():  # the question's own speech is over
        c.event("input.speech_stopped")
    c.send_audio(speech_like(1.0, seed=7))
    c.event("response.started", response_id=2)
    log = c.log
    i_int = next(i for i, m in enumerate(log) if isinstance(m, dict) and m.get("state") == "interrupted")
    i_done = next(i for i, m in enumerate(log) if isinstance(m, dict) and m["type"] == "response.done")
    assert log[i_done]["response_id"] == 1 and log[i_done]["status"] == "interrupted" and i_int < i_done
    assert not [m for m in log[i_int:] if isinstance(m, bytes)]  # no audio of answer 1 after the interruption
    ended = [m for m in log if isinstance(m, dict) and m["type"] == "input.turn_ended"]
    assert ended[-1]["barge_in"] and ended[-1]["decision"] == "respond"
    c.send_json({"type": "response.cancel"})
    assert c.event("response.done", response_id=2)["status"] == "cancelled"
    assert c.event("state")["state"] in ("interrupted", "listening")


def test_too_many_users_get_busy(served, client_of):
    from websockets.exceptions import ConnectionClosed

    srv, _ = served
    a, b = client_of(srv.url), client_of(srv.url)
    third = client_of(srv.url)
    assert third.created == {"type": "error", "code": "busy", "message": third.created["message"]}
    with pytest.raises(ConnectionClosed) as info:
        third.next(timeout=5)
    assert info.value.rcvd.code == 1013
    for c in (a, b):
        c.close()
    deadline = time.monotonic() + 5
    while srv.server.config.app.state.server.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client_of(srv.url).created["type"] == "session.created"  # room again


def test_bad_input_gets_errors_and_the_session_goes_on(served, client_of):
    srv, engine = served
    bystander = client_of(srv.url)
    c = client_of(srv.url)
    cases = [("{not json", "bad_json"), ("[1, 2]", "bad_event"), (json.dumps({"type": "nope"}), "unknown_event"),
             (json.dumps({"type": "session.update", "input_sample_rate": 48000}), "unsupported_sample_rate"),
             (json.dumps({"type": "session.update", "input_format": "f32"}), "unsupported_format"),
             (json.dumps({"type": "session.update", "vad": "yes"}), "bad_event"),
             (json.dumps({"type": "session.update", "system_prompt": "x" * 5000}), "message_too_large"),
             (json.dumps({"type": "session.update", "colour": "red"}), "unknown_field"),
             (json.dumps({"type": "session.update", "system_prompt": "y" * 3000}), "system_prompt_too_long"),
             (b"\x01\x02\x03", "bad_audio_frame"), (b"\x00" * 20000, "message_too_large"),
             ("x" * 17000, "message_too_large")]
    for msg, code in cases:
        c.ws.send(msg)
        err = c.event("error", timeout=5)
        assert err["code"] == code, (msg[:40], err)
    acks = [m for m in c.log if isinstance(m, dict) and m["type"] == "session.updated"]
    assert acks and acks[-1]["system_prompt"] == engine.system_prompt  # the long prompt was not taken
    t = threading.Thread(target=lambda: bystander.send_audio(question(seed=2)))
    t.start()
    c.send_audio(question(seed=1))
    t.join()
    assert c.event("response.done")["status"] == "completed"
    assert bystander.event("response.done")["status"] == "completed"
    assert not [m for m in bystander.log if isinstance(m, dict) and m["type"] == "error"]


def test_two_sessions_keep_their_own_prompts(served, client_of):
    srv, engine = served
    prompts = ["You are Alpha.", "You are Bravo and you like riddles."]
    clients = [client_of(srv.url) for _ in prompts]
    for c, p in zip(clients, prompts):
        c.send_json({"type": "session.update", "system_prompt": p})
    threads = [threading.Thread(target=c.send_audio, args=(question(seed=i),)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c, p in zip(clients, prompts):
        assert c.event("session.updated")["system_prompt"] == p
        assert c.event("response.done")["response_id"] == 1
        session = engine.sessions[c.created["session_id"]]
        assert session.ctx.system.ids == engine.llm.system_ids(p)
        ids = {m.get("response_id") for m in c.log if isinstance(m, dict) and "response_id" in m}
        assert ids == {1}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_connect_disconnect_cycles_leave_nothing_behind(served):
    from freeze_omni.server.testing import pcm16
    from websockets.sync.client import connect

    srv, engine = served
    state = srv.server.config.app.state.server

    def cycle(i):
        with connect(srv.url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
            if i % 2:
                ws.send(pcm16(np.zeros(1600, np.float32)))

    for i in range(20):
        cycle(i)
    time.sleep(0.2)
    threads, rss = threading.active_count(), _rss_mb()
    for i in range(200):
        cycle(i)
    deadline = time.monotonic() + 10
    while (engine.sessions or state.active) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.sessions and state.active == 0
    assert threading.active_count() <= threads + 1
    assert _rss_mb() - rss < 40
    assert engine.metrics.value("sessions_total") >= 220


def test_health_and_metrics(served):
    srv, engine = served
    health = json.loads(urllib.request.urlopen(srv.http + "/health", timeout=5).read())
    assert health["status"] == "ok" and health["workers"] == 2 and health["max_users"] == 2
    text = urllib.request.urlopen(srv.http + "/metrics", timeout=5).read().decode()
    for name in ("freeze_omni_sessions_active", "freeze_omni_chunk_latency_seconds_bucket",
                 "freeze_omni_listen_rtf", "freeze_omni_answer_rtf", "freeze_omni_listen_chunks_total",
                 "freeze_omni_responses_total"):
        assert name in text, name

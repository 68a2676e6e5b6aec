"""/v1/realtime with the official `openai` client: session.update, server VAD and manual commit, audio and
transcript deltas, response.create with no new audio, response.cancel, bad events; the beta event names."""

import base64
import time

import numpy as np
import pytest

from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.sampling import SamplingConfig
from freeze_omni.server.testing import force_state, speech_like

openai = pytest.importorskip("openai")
RATE = 24000


def question_24k(seconds=1.0, seed=0):
    from freeze_omni.audio.io import resample

    x = np.concatenate([np.zeros(8000, np.float32), speech_like(seconds, seed), np.zeros(8000, np.float32)])
    return resample(x, 16000, RATE)


def b64(x):
    return base64.b64encode((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()).decode()


@pytest.fixture(autouse=True)
def defaults(served):
    _, engine = served
    force_state(engine.model, UserState.RESPOND)
    engine.sampling = SamplingConfig(max_new_tokens=30)
    yield


def connect(srv, beta=False):
    client = openai.OpenAI(api_key="x", base_url=f"{srv.http}/v1", websocket_base_url=f"ws://127.0.0.1:{srv.port}/v1")
    return (client.beta.realtime if beta else client.realtime).connect(model="freeze-omni")


def until(conn, kind, log, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        e = conn.recv()
        assert e.type and e.event_id
        log.append(e)
        if e.type == kind:
            return e
    raise AssertionError(f"no {kind} in {[e.type for e in log]}")


def append(conn, x, frame=2400):
    for i in range(0, len(x), frame):
        conn.input_audio_buffer.append(audio=b64(x[i:i + frame]))


def test_server_vad_turn_with_the_openai_client(served):
    srv, engine = served
    with connect(srv) as conn:
        log = []
        created = until(conn, "session.created", log)
        assert created.session.audio.output.format.rate == RATE
        conn.session.update(session={"type": "realtime", "instructions": "Be terse.",
                                     "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                                         "turn_detection": {"type": "server_vad"}}}})
        assert until(conn, "session.updated", log).session.instructions == "Be terse."
        append(conn, question_24k())
        done = until(conn, "response.done", log)
        types = [e.type for e in log]
        assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.committed") \
            < types.index("response.created") < types.index("response.output_audio.delta")
        assert done.response.status == "completed"
        audio = b"".join(base64.b64decode(e.delta) for e in log if e.type == "response.output_audio.delta")
        pcm = np.frombuffer(audio, "<i2")
        assert len(pcm) > 0.1 * RATE and np.abs(pcm).max() > 0
        text = "".join(e.delta for e in log if e.type == "response.output_audio_transcript.delta")
        assert text
        assert not [e for e in log if e.type == "error"], [e for e in log if e.type == "error"]
        tdone = [e for e in log if e.type == "response.output_audio_transcript.done"]
        assert tdone and tdone[0].transcript == text and "response.output_audio.done" in types
        # a malformed event and an unknown one: errors, the session goes on
        conn.send({"type": "input_audio_buffer.append", "audio": "@@not base64@@"})
        assert until(conn, "error", log).error.code == "bad_audio_frame"
        conn.send_raw("{nope")
        assert until(conn, "error", log).error.code == "bad_json"
        conn.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}})
        assert until(conn, "error", log).error.code == "unknown_event"
        # response.create with no new audio answers now (an empty user turn)
        conn.response.create()
        r = until(conn, "response.created", log)
        assert until(conn, "response.done", log).response.id == r.response.id


def test_manual_commit_and_cancel(served):
    srv, engine = served
    force_state(engine.model, UserState.LISTEN)  # only the client ends turns
    engine.sampling = SamplingConfig(max_new_tokens=200)
    with connect(srv) as conn:
        log = []
        until(conn, "session.created", log)
        conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        assert until(conn, "session.updated", log).session.audio.input.turn_detection is None
        conn.input_audio_buffer.commit()
        assert until(conn, "error", log).error.code == "input_audio_buffer_commit_empty"
        append(conn, question_24k(0.6))
        conn.input_audio_buffer.commit()
        until(conn, "input_audio_buffer.committed", log)
        conn.response.create()
        until(conn, "response.created", log)
        until(conn, "response.output_audio.delta", log)
        conn.response.cancel()
        done = until(conn, "response.done", log)
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        i = [e.type for e in log].index("response.done")
        assert [e.type for e in log[i - 2:i]] == ["response.output_audio.done", "response.output_audio_transcript.done"]
        # nothing of the cancelled answer after its response.done
        conn.input_audio_buffer.clear()
        until(conn, "input_audio_buffer.cleared", log, 5)
        assert not [e for e in log[i:] if e.type.startswith("response.output_audio")]


def test_beta_client_gets_beta_names(served):
    srv, _ = served
    with connect(srv, beta=True) as conn:
        log = []
        created = until(conn, "session.created", log)
        assert created.session.input_audio_format == "pcm16"
        conn.session.update(session={"instructions": "Hi.", "turn_detection": {"type": "server_vad"},
                                     "input_audio_format": "pcm16"})
        until(conn, "session.updated", log)
        append(conn, question_24k())
        until(conn, "response.done", log)
        types = {e.type for e in log}
        assert {"response.audio.delta", "response.audio_transcript.delta", "response.audio.done",
                "response.audio_transcript.done"} <= types
        assert not any(t.startswith("response.output_audio") for t in types)


def test_stream_resampler_is_seamless():
    from freeze_omni.audio.io import resample
    from freeze_omni.server.realtime import StreamResampler

    x = np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE).astype(np.float32)
    rs = StreamResampler(RATE, 16000)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        parts.append(rs(x[i:i + n]))
        i += n
    y = np.concatenate(parts + [rs.flush()])
    ref = resample(x, RATE, 16000)
    assert len(y) == len(ref) and np.abs(y - ref)[200:-200].max() < 1e-3

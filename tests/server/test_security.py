"""Bearer token, origin checks, idle and session timeouts, /metrics behind the token, `freeze-omni serve`."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from freeze_omni.server.testing import pcm16, speech_like, tiny_engine


@pytest.fixture(scope="module")
def strict(bundle):
    from freeze_omni.server.app import ServerSettings, create_app
    from freeze_omni.server.testing import ServerThread

    settings = ServerSettings(token="s3cret", allowed_origins=["https://app.example"], idle_timeout_s=0.5,
                              max_session_s=1.5)
    with ServerThread(create_app(tiny_engine(bundle, workers=1), settings)) as srv:
        yield srv


def _status(url, **kw) -> int:
    try:
        with connect(url, open_timeout=5, **kw) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "session.created"
            return 101
    except InvalidStatus as e:
        return e.response.status_code


def test_token_and_origin(strict):
    url = strict.url
    assert _status(url) == 403
    assert _status(url, additional_headers={"Authorization": "Bearer wrong"}) == 403
    assert _status(url, additional_headers={"Authorization": "Bearer s3cret"}) == 101
    assert _status(url + "?token=s3cret") == 101
    assert _status(url + "?token=s3cret", origin="https://evil.example") == 403
    assert _status(url + "?token=s3cret", origin="https://app.example") == 101


def test_default_origin_policy(served):
    srv, _ = served
    assert _status(srv.url, origin="http://localhost:3000") == 101
    assert _status(srv.url, origin=f"http://127.0.0.1:{srv.port}") == 101
    assert _status(srv.url, origin="https://evil.example") == 403


def test_metrics_need_the_token(strict):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(strict.http + "/metrics", timeout=5)
    assert info.value.code == 401
    req = urllib.request.Request(strict.http + "/metrics", headers={"Authorization": "Bearer s3cret"})
    assert b"freeze_omni_sessions_active" in urllib.request.urlopen(req, timeout=5).read()
    assert json.loads(urllib.request.urlopen(strict.http + "/health", timeout=5).read())["status"] == "ok"


def _closing_error(ws, keepalive: bool) -> tuple[str, int]:
    err = None
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            if keepalive:
                ws.send(json.dumps({"type": "input.flush"}))
            try:
                msg = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            if isinstance(msg, str) and json.loads(msg)["type"] == "error":
                err = json.loads(msg)["code"]
    except ConnectionClosed as e:
        return err, e.rcvd.code
    raise AssertionError("not closed")


def test_idle_and_session_timeouts(strict):
    with connect(strict.url + "?token=s3cret", open_timeout=5) as ws:
        assert _closing_error(ws, keepalive=False) == ("idle_timeout", 1000)
    with connect(strict.url + "?token=s3cret", open_timeout=5) as ws:
        assert _closing_error(ws, keepalive=True) == ("session_timeout", 1000)


def test_serve_command(tmp_path):
    from freeze_omni.dialogue.testing import save_tiny_bundle
    from freeze_omni.llm.bridge import UserState

    bundle = save_tiny_bundle(tmp_path, state=UserState.RESPOND)  # answers whatever it hears
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "freeze_omni.server.cli", "--model", str(bundle), "--port",
                             str(port), "--workers", "2", "--max-users", "1", "--vad", "energy", "--threads", "1",
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
                time.sleep(0.2)
        assert health["workers"] == 2 and health["max_users"] == 1
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
            created = json.loads(ws.recv(timeout=5))
            assert created["type"] == "session.created" and created["output_audio"]["sample_rate"] == 24000
            with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as other:
                assert json.loads(other.recv(timeout=5))["code"] == "busy"
            # a question in, an answer with audio out: the main-thread worker (and a second one) serve it
            ws.send(pcm16(np.concatenate([np.zeros(4000, np.float32), speech_like(1.0, seed=3)])))
            ws.send(json.dumps({"type": "input.flush"}))
            audio, done = 0, None
            while done is None:
                msg = ws.recv(timeout=30)
                if isinstance(msg, bytes):
                    audio += len(msg)
                elif json.loads(msg)["type"] == "response.done":
                    done = json.loads(msg)
            assert done["status"] == "completed" and audio > 0
        proc.terminate()  # SIGTERM: a clean shutdown, exit status 0
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(20)
        proc.stdout.close()

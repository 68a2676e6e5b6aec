"""A tiny random bundle served over a real websocket (uvicorn in a thread), and a small sync client."""

import json
import time

import numpy as np
import pytest
from freeze_omni.server.testing import pcm16, tiny_engine

SR = 16000


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    from freeze_omni.dialogue.testing import save_tiny_bundle

    return save_tiny_bundle(tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def served(bundle):
    """(server thread, engine) with max_users=2 and a 16 kB message limit."""
    from freeze_omni.server.app import ServerSettings, create_app
    from freeze_omni.server.testing import ServerThread

    engine = tiny_engine(bundle)
    engine.warmup()
    with ServerThread(create_app(engine, ServerSettings(max_users=2, max_message_bytes=16000))) as srv:
        yield srv, engine


class Client:
    """A websocket client that records every message (JSON as dicts, audio as bytes)."""

    def __init__(self, url: str, **kw) -> None:
        from websockets.sync.client import connect

        self._conn = connect(url, open_timeout=10, max_size=None, **kw)
        self.ws = self._conn.__enter__()
        self.log: list = []
        self.created = self.next_json()

    def next(self, timeout: float = 10.0):
        msg = self.ws.recv(timeout=timeout)
        msg = json.loads(msg) if isinstance(msg, str) else msg
        self.log.append(msg)
        return msg

    def next_json(self, timeout: float = 10.0) -> dict:
        while not isinstance(msg := self.next(timeout), dict):
            pass
        return msg

    def until(self, pred, timeout: float = 20.0) -> dict:
        """Read until a JSON message satisfies ``pred``; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if isinstance(msg, dict) and pred(msg):
                return msg

    def event(self, kind: str, timeout: float = 20.0, **match) -> dict:
        return self.until(lambda m: m["type"] == kind and all(m.get(k) == v for k, v in match.items()), timeout)

    def send_json(self, obj) -> None:
        self.ws.send(json.dumps(obj))

    def send_audio(self, wave: np.ndarray, frame: int = 1600) -> None:
        for s in range(0, len(wave), frame):
            self.ws.send(pcm16(wave[s:s + frame]))

    def close(self) -> None:
        self._conn.__exit__(None, None, None)

    def types(self) -> list:
        return [m["type"] if isinstance(m, dict) else "audio" for m in self.log]


@pytest.fixture
def client_of():
    made = []

    def make(url, **kw):
        c = Client(url, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()

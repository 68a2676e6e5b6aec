"""Helpers for tests and benchmarks of the server: a uvicorn thread on a free port, speech-like audio, and knobs
that make a tiny random model behave predictably (state head verdict, answers made of letters).

>>> with ServerThread(create_app(engine)) as srv:   # doctest: +SKIP
...     ws = websockets.sync.client.connect(srv.url)
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

import numpy as np


class ServerThread:
    """Serve an ASGI ``app`` with uvicorn on ``127.0.0.1:<free port>`` in a background thread (a context manager).

    Args:
        app: the ASGI app (its lifespan runs: the engine's workers start and stop with the server).
        ws_max_size: the websocket layer's hard message limit (default: 4x the app's soft limit).
    """

    def __init__(self, app: Any, ws_max_size: Optional[int] = None) -> None:
        import uvicorn

        limit = getattr(getattr(app.state, "server", None), "settings", None)
        size = ws_max_size or 4 * (limit.max_message_bytes if limit is not None else 65536)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=size, lifespan="on",
                                                    ws_ping_interval=None))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn-test", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


VOWELS = (((700, 80), (1220, 90), (2600, 120)), ((300, 60), (2300, 100), (3000, 120)),
          ((500, 70), (900, 80), (2400, 120)), ((400, 60), (800, 80), (2500, 120)),
          ((600, 80), (1700, 90), (2500, 120)))
"""Formants (Hz, bandwidth) of a few vowels."""


def speech_like(seconds: float, seed: int = 0, sample_rate: int = 16000, level: float = 0.3) -> np.ndarray:
    """Speech-like audio made from scratch: syllables of a fricative-like noise burst and a vowel (a falling
    glottal pulse train through three formant resonators), 120-250 ms each with short gaps. silero-vad scores
    it as speech (dips below 0.35 last under 200 ms), white noise and silence it does not."""
    from scipy.signal import lfilter

    def resonate(y: np.ndarray, f: float, bw: float) -> np.ndarray:
        r = np.exp(-np.pi * bw / sample_rate)
        return lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sample_rate), r * r], y)

    rng = np.random.default_rng(seed)
    out, n, total = [], 0, int(seconds * sample_rate)
    while n < total:
        dur = int(rng.uniform(0.12, 0.25) * sample_rate)
        t = np.arange(dur) / sample_rate
        f0 = rng.uniform(100, 150) * (1 - 0.15 * t / t[-1])
        y = (np.diff(np.floor(np.cumsum(f0 / sample_rate)), prepend=0) > 0).astype(np.float64)
        for f, bw in VOWELS[rng.integers(len(VOWELS))]:
            y = resonate(y, f * rng.uniform(0.9, 1.1), bw)
        y = y / (np.abs(y).max() + 1e-9) * np.hanning(dur) * rng.uniform(0.5, 1.0)
        c = int(rng.uniform(0.03, 0.08) * sample_rate)
        burst = resonate(rng.standard_normal(c), rng.uniform(2500, 5000), 1500)
        burst = burst / np.abs(burst).max() * 0.15 * np.hanning(c)
        seg = np.concatenate([burst, y, np.zeros(int(rng.uniform(0.01, 0.06) * sample_rate))])
        out.append(seg)
        n += len(seg)
    return (np.concatenate(out)[:total] * level).astype(np.float32)


def pcm16(x: np.ndarray) -> bytes:
    """float32 -> PCM16 little-endian bytes."""
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def force_state(model: Any, state: int, margin: float = 20.0) -> None:
    """Make the state head of ``model`` (a SpeechLLM) say ``state`` on every chunk (weights 0, one-hot bias)."""
    import torch

    proj = model.bridge.predictor_head.proj
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.zero_()
        proj.bias[int(state)] = margin


def letters_only(llm: Any, chars: str = "abcdefghijklmnopqrstuvwxyz .,") -> None:
    """Restrict a tiny random LLM's answers to ``chars`` and never end them: its LM head gets a bias of -1e4 on
    every other token (end of turn included), so answers are speakable and run to ``max_new_tokens``."""
    import torch
    from torch import nn

    keep = sorted({i for c in chars for i in llm.tokenize(c)})
    old = llm.lm.get_output_embeddings()
    head = nn.Linear(old.in_features, old.out_features, bias=True).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.fill_(-1e4)
        head.bias[keep] = 0.0
    head.requires_grad_(False)
    llm.lm.set_output_embeddings(head)


def tiny_engine(bundle: Any, answer_tokens: int = 30, **cfg: Any) -> Any:
    """A :class:`~freeze_omni.dialogue.engine.DialogueEngine` over a tiny random bundle
    (:func:`freeze_omni.dialogue.testing.save_tiny_bundle`) that behaves predictably: the state head always says
    RESPOND (change with :func:`force_state`), answers are letters and punctuation of ``answer_tokens`` tokens,
    2 workers, audio paced 1 s ahead, VAD silence of 300 ms ends speech. ``cfg``: :class:`EngineConfig` fields."""
    import torch

    from freeze_omni.dialogue.engine import DialogueEngine, EngineConfig
    from freeze_omni.dialogue.vad import VADConfig
    from freeze_omni.llm.bridge import UserState
    from freeze_omni.llm.sampling import SamplingConfig

    torch.set_num_threads(1)
    cfg = {"workers": 2, "answer_lead_seconds": 1.0, "vad": VADConfig(min_silence_ms=300), **cfg}
    engine = DialogueEngine.from_bundle(str(bundle), EngineConfig(**cfg))
    force_state(engine.model, UserState.RESPOND)
    letters_only(engine.llm)
    engine.sampling = SamplingConfig(max_new_tokens=answer_tokens)
    return engine

"""VAD: silero's ONNX model through onnxruntime (torch never needed), the start/end rule, the energy gate."""

import subprocess
import sys

import numpy as np

from freeze_omni.dialogue.vad import EnergyVAD, SileroVAD, VADConfig, VADStream, silero_model_path
from freeze_omni.server.testing import speech_like

SR = 16000


def _events(model, wave, **cfg):
    stream = VADStream(model, VADConfig(**cfg))
    out = []
    for s in range(0, len(wave), 2560):  # 160 ms packets, as the engine feeds it
        out += stream.process(wave[s:s + 2560])
    return out


def test_silero_finds_speech_between_silences():
    wave = np.concatenate([np.zeros(SR, np.float32), speech_like(1.5), np.zeros(2 * SR, np.float32)])
    ev = _events(SileroVAD(), wave, min_silence_ms=500)
    assert [e.kind for e in ev] == ["start", "end"]
    assert 0.8 * SR < ev[0].sample < 1.3 * SR
    assert 2.3 * SR < ev[1].sample < 3.2 * SR


def test_silero_ignores_noise_and_silence():
    rng = np.random.default_rng(0)
    wave = np.concatenate([np.zeros(SR, np.float32), (0.05 * rng.standard_normal(2 * SR)).astype(np.float32)])
    assert _events(SileroVAD(), wave) == []


def test_silero_without_torch():
    code = ("import sys; from freeze_omni.dialogue.vad import SileroVAD; import numpy as np; v = SileroVAD(); "
            "v.score(np.zeros((2, 512), np.float32), v.new_state()); assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert silero_model_path().name == "silero_vad.onnx"


def test_energy_gate_and_odd_packet_sizes():
    wave = np.concatenate([np.zeros(SR, np.float32), 0.3 * np.ones(SR, np.float32), np.zeros(2 * SR, np.float32)])
    stream = VADStream(EnergyVAD(), VADConfig(min_silence_ms=300))
    ev = []
    for s in range(0, len(wave), 700):  # not a multiple of the 512-sample window
        ev += stream.process(wave[s:s + 700])
    assert [e.kind for e in ev] == ["start", "end"]
    assert abs(ev[0].sample - SR) <= 1024 and abs(ev[1].sample - 2 * SR) <= 1024

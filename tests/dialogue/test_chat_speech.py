"""`freeze-omni chat AUDIO --out WAV` and `speak` on a tiny random bundle that can speak."""

import json
import shutil

import pytest
import soundfile as sf
import yaml

from freeze_omni.cli import main


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import numpy as np

    from freeze_omni.audio.io import save_wav
    from freeze_omni.dialogue.testing import save_tiny_bundle

    d = tmp_path_factory.mktemp("chat_speech")
    b = save_tiny_bundle(d)
    rng = np.random.default_rng(0)
    save_wav(d / "q.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32))
    return b


def test_chat_out_writes_the_spoken_answer(bundle, tmp_path, capsys):
    from freeze_omni.dialogue.testing import CODEC_RATE

    out = tmp_path / "a.wav"
    args = ["chat", str(bundle.parent / "q.wav"), "--model", str(bundle), "--greedy", "--max-new-tokens", "12",
            "--no-state-head", "--json"]
    assert main(args + ["--out", str(out)]) == 0
    r = _last_json(capsys)
    assert set(r) >= {"answer", "decision", "audio", "sample_rate", "latency_ms", "rtf"}
    assert r["audio"] == str(out) and r["sample_rate"] == CODEC_RATE and r["decision"] == "end_of_input"
    assert r["latency_ms"]["first_audio"] >= r["latency_ms"]["first_text"] > 0
    info = sf.info(str(out))
    assert info.samplerate == CODEC_RATE and info.frames == round(r["audio_seconds"] * CODEC_RATE) > 0
    assert main(args) == 0  # without --out: text only, the same answer
    t = _last_json(capsys)
    assert t["answer"] == r["answer"] and t["audio"] is None and t["latency_ms"]["first_audio"] is None


def test_chat_out_needs_a_speaking_bundle(bundle, tmp_path, capsys):
    mute = tmp_path / "mute"
    shutil.copytree(bundle, mute)
    cfg = yaml.safe_load((mute / "bundle.yaml").read_text())
    del cfg["components"]["decoder"]
    (mute / "bundle.yaml").write_text(yaml.safe_dump(cfg))
    wav = str(bundle.parent / "q.wav")
    assert main(["chat", wav, "--model", str(mute), "--out", str(tmp_path / "x.wav"), "--no-state-head"]) == 2
    assert "no decoder" in capsys.readouterr().err and not (tmp_path / "x.wav").exists()
    assert main(["chat", wav, "--model", str(mute), "--max-new-tokens", "3", "--no-state-head", "--json"]) == 0
    assert _last_json(capsys)["audio"] is None


def test_speak_uses_the_bundle_rate(bundle, tmp_path, capsys):
    out = tmp_path / "s.wav"
    assert main(["speak", "Hello there, how are you? Fine.", "--model", str(bundle), "--out", str(out),
                 "--json"]) == 0
    r = _last_json(capsys)
    assert r["prefix"] is True and len(r["segments"]) == 3 and r["first_audio_ms"] > 0
    assert sf.info(str(out)).frames == r["tokens"] * r["sample_rate"] // 40

import io
import json

import numpy as np
import pytest
import soundfile as sf

from freeze_omni.audio.cmvn import GlobalCMVN
from freeze_omni.audio.features import StreamingFrontend, extract, fbank, mel_filters, whisper_log_mel
from freeze_omni.audio.io import AudioError, load_audio, save_wav


def _speechlike(seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("kind", ["fbank", "whisper"])
@pytest.mark.parametrize("packet", [2560, 1000, 77])
def test_streaming_equals_whole_file(kind, packet):
    wave = _speechlike()
    whole = extract(wave, kind)
    fe = StreamingFrontend(kind)
    parts = [fe.accept(wave[s:s + packet]) for s in range(0, len(wave), packet)]
    assert whole.shape == (len(wave) // 160, 80)
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("kind", ["fbank", "whisper"])
def test_160ms_packets_give_16_frames_each(kind):
    fe = StreamingFrontend(kind)
    wave = _speechlike(1.0)
    counts = [fe.accept(wave[s:s + 2560]).shape[0] for s in range(0, 2560 * 6, 2560)]
    assert counts == [16] * 6


def test_fbank_is_kaldi_compatible_and_on_int16_scale():
    wave = _speechlike()
    f = fbank(wave)
    # log-mel energies of int16-scale audio are large and positive; of [-1,1]-scale audio they would be ~-10
    assert f[10:].mean() > 5
    # the first frame covers 240 leading zeros + 160 samples: frames are aligned to packet ends
    f_shift = fbank(np.concatenate([np.zeros(160, np.float32), wave]))
    np.testing.assert_allclose(f_shift[1:], f, atol=1e-3)


def test_whisper_exact_matches_transformers_feature_extractor():
    transformers = pytest.importorskip("transformers")
    wave = _speechlike(3.0)
    ref = transformers.WhisperFeatureExtractor()._np_extract_fbank_features(wave[None], "cpu")[0].T
    np.testing.assert_allclose(whisper_log_mel(wave, exact=True), ref, atol=1e-5)
    assert mel_filters().shape == (80, 201)


def test_streaming_whisper_floor_is_causal():
    wave = _speechlike(2.0)
    a = whisper_log_mel(wave)
    b = whisper_log_mel(np.concatenate([wave, 3 * wave]))  # louder audio later cannot change earlier frames
    np.testing.assert_array_equal(a, b[: a.shape[0]])


def test_cmvn_roundtrip_upstream_json(tmp_path):
    rng = np.random.default_rng(0)
    feats = [rng.normal(3.0, 2.0, size=(100, 80)) for _ in range(3)]
    cmvn = GlobalCMVN.from_features(feats)
    path = tmp_path / "global_cmvn"
    cmvn.save(path)
    d = json.loads(path.read_text())
    assert set(d) == {"mean_stat", "var_stat", "frame_num"} and d["frame_num"] == 300
    loaded = GlobalCMVN.load(path)
    out = loaded.apply(np.concatenate(feats))
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-4)
    (tmp_path / "bad.json").write_text('{"mean": []}')
    with pytest.raises(ValueError, match="not an upstream CMVN"):
        GlobalCMVN.load(tmp_path / "bad.json")


def test_load_audio_resamples_and_downmixes(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32) * 0.5
    p = tmp_path / "x.flac"
    sf.write(p, stereo, sr)
    wave = load_audio(p)
    assert wave.shape == (16000,) and wave.dtype == np.float32
    spec = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spec) - 440) <= 1  # 1 s of audio: bin = Hz
    buf = io.BytesIO()
    sf.write(buf, stereo[:, 0], sr, format="WAV")
    assert load_audio(buf.getvalue()).shape == (16000,)


def test_load_audio_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError):
        load_audio(bad)
    with pytest.raises(AudioError):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    save_wav(empty, np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)

"""Whisper weights read straight from the pip-shipped CTranslate2 model.bin, checked against CTranslate2."""

import numpy as np
import pytest
import torch

from freeze_omni.audio.features import whisper_log_mel
from freeze_omni.encoder.ct2 import read_ct2, whisper_model_dir
from freeze_omni.encoder.whisper_init import load_whisper_encoder

ctranslate2 = pytest.importorskip("ctranslate2")


def _speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 150 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32)


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_encoder_matches_ctranslate2_encode(name):
    wave = np.zeros(480000, np.float32)
    wave[:32000] = _speechlike(2.0)
    mel = whisper_log_mel(wave, exact=True)  # [3000, 80]
    enc = load_whisper_encoder(name, causal_convs=False, dropout=0.0).eval()
    with torch.no_grad():
        ours, _ = enc(torch.from_numpy(mel)[None], torch.tensor([3000]))
    model = ctranslate2.models.Whisper(str(whisper_model_dir(name)), device="cpu", compute_type="float32")
    ref = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None])),
                                to_cpu=True))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours[0].numpy(), ref[0], atol=2e-3, rtol=0)
    assert np.abs(ours[0].numpy() - ref[0]).mean() < 1e-5


def test_reader_skips_by_prefix_and_reads_all_layers():
    v = read_ct2(whisper_model_dir("tiny.en") / "model.bin", prefix="encoder/")
    assert all(k.startswith("encoder/") for k in v)
    assert v["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert v["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)


def test_causal_streaming_whisper_stays_close_to_original():
    """Causal convs alone keep the pretrained encoder usable (cpu_feasibility: cosine ~0.94)."""
    wave = _speechlike(3.0)
    mel = torch.from_numpy(whisper_log_mel(wave))[None]
    orig = load_whisper_encoder("tiny.en", causal_convs=False, dropout=0.0).eval()
    causal = load_whisper_encoder("tiny.en", causal_convs=True, dropout=0.0).eval()
    with torch.no_grad():
        a, _ = orig(mel, torch.tensor([mel.shape[1]]))
        b, _ = causal(mel, torch.tensor([mel.shape[1]]))
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    assert cos > 0.8

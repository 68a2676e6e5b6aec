"""Codec geometry, encode/decode shapes, presets, bundle round trip, and that training reduces the loss."""

from pathlib import Path

import numpy as np
import pytest
import torch

from freeze_omni.codec.config import CodecConfig, build_codec_config, codec_24k, codec_default, codec_tiny
from freeze_omni.codec.f0 import yin
from freeze_omni.codec.model import Codec, resynthesize
from freeze_omni.train.codec import CodecCollate, export_bundle


def _tiny(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    return Codec(codec_tiny())


def test_geometry_of_the_presets():
    for cfg, sr, hop in ((codec_default(), 16000, 400), (codec_24k(), 24000, 600), (codec_tiny(), 16000, 400)):
        assert (cfg.sample_rate, cfg.frame_rate, cfg.hop, cfg.control_hop) == (sr, 40, hop, hop // 4)
    m = Codec(codec_default())
    assert (m.sample_rate, m.frame_rate, m.hop, m.codebook_size) == (16000, 40, 400, 1024)
    assert m.receptive_tokens <= 10  # fits upstream's 10-token streaming context
    assert sum(p.numel() for p in m.parameters()) < 8_000_000
    assert Codec(codec_24k()).hop == 600


def test_config_dicts_round_trip_and_reject_unknown_keys():
    cfg = codec_tiny()
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    assert build_codec_config({"preset": "tiny", "codebook_size": 32}).codebook_size == 32
    assert build_codec_config("default") == codec_default()
    with pytest.raises(ValueError, match="unknown codec config"):
        CodecConfig.from_dict({"codebook_sise": 3})
    with pytest.raises(ValueError, match="multiple"):
        CodecConfig(sample_rate=16000, frame_rate=30)


def test_encode_decode_shapes():
    m = _tiny().eval()
    wave = 0.1 * torch.randn(2, 16000 + 123)
    tokens = m.encode(wave)
    assert tokens.shape == (2, 41) and tokens.dtype == torch.long  # ceil(16123 / 400)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < m.codebook_size
    out = m.decode(tokens)
    assert out.shape == (2, 41 * 400) and torch.isfinite(out).all()
    y = resynthesize(m, wave[0].numpy())
    assert y.shape == (16123,) and y.dtype == np.float32
    assert not m.training


def _speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A gliding 90-140 Hz pulse train through a moving two-formant filter, with pauses: harmonics to learn."""
    rng = np.random.default_rng(seed)
    sr, n = 16000, int(16000 * seconds)
    f0 = 115 + 25 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * np.arange(n) / sr)
    phase = np.cumsum(2 * np.pi * f0 / sr)
    x = sum(np.sin(k * phase) / k * (1.5 + np.sin(np.arange(n) / sr * 3 + k / 4)) for k in range(1, 30))
    env = (np.sin(2 * np.pi * 1.5 * np.arange(n) / sr + rng.uniform(0, 6)) > -0.5).astype(float)
    return (0.05 * x * env + 0.003 * rng.standard_normal(n)).astype(np.float32)


def test_a_few_training_steps_reduce_the_loss():
    m = _tiny().train()
    collate = CodecCollate(m.cfg, segment_seconds=0.5)
    items = [{"wave": _speechlike(1.0, s)} for s in range(4)]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    torch.manual_seed(0)
    batch = collate(items)
    assert batch["wave"].shape == (4, 8000) and batch["f0"].shape == batch["voiced"].shape == (4, 80)
    losses = []
    for _ in range(40):
        out = m(batch)
        assert set(out) >= {"loss", "stft", "mel", "f0", "voicing", "codebook", "commitment", "perplexity"}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_collate_f0_targets_match_the_tracker():
    cfg = codec_tiny()
    w = _speechlike(0.3)
    batch = CodecCollate(cfg, segment_seconds=1.0)([{"wave": w}])  # shorter than a segment: zero-padded
    assert batch["wave"].shape == (1, 16000) and torch.all(batch["wave"][0, len(w):] == 0)
    assert batch["audio_seconds"] == pytest.approx(0.3)
    f0, v = yin(batch["wave"][0].numpy(), 16000, cfg.control_hop, fmin=cfg.f0_min, fmax=cfg.f0_max)
    np.testing.assert_allclose(batch["f0"][0].numpy(), f0)


def test_bundle_round_trip(tmp_path):
    m = _tiny().eval()
    export_bundle(m, tmp_path / "b")
    assert (tmp_path / "b" / "codec.safetensors").is_file()
    loaded = Codec.from_bundle(tmp_path / "b")
    assert loaded.cfg == m.cfg and not loaded.training
    # Weights travel as fp16: the loaded codec is the original with its weights rounded to fp16.
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in m.state_dict().items()}
    m.load_state_dict(rounded)
    tokens = torch.randint(0, m.codebook_size, (1, 20))
    torch.testing.assert_close(loaded.decode(tokens), m.decode(tokens), atol=1e-5, rtol=0)


def test_the_recipe_config_builds():
    import yaml

    from freeze_omni.train import TrainConfig

    root = Path(__file__).resolve().parents[2]
    for name in ("codec", "codec_finetune"):
        conf = yaml.safe_load((root / "recipes" / "tiny-en" / "conf" / f"{name}.yaml").read_text())
        cfg = build_codec_config(conf["codec"])
        assert (cfg.sample_rate, cfg.frame_rate, cfg.codebook_size) == (16000, 40, 1024)
        assert TrainConfig.from_dict(conf["train"]).batch_size == 16
        assert set(conf) <= {"codec", "init", "freeze", "segment_seconds", "adversarial", "data", "train", "export"}
    assert conf["init"] and set(conf["freeze"]) == {"encoder", "quantizer"}  # the fine-tune keeps every token

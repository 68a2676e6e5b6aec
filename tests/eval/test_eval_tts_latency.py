"""`freeze-omni eval tts` (faster-whisper on real speech, random decoder on the output side) and the response part
of `freeze-omni bench latency`, on a tiny random bundle that can speak."""

import json
import shutil

import pytest

from freeze_omni.cli import main

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup)")


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from freeze_omni.data.manifest import write_manifest
    from freeze_omni.data.synth import synthesize
    from freeze_omni.dialogue.testing import save_tiny_bundle

    d = tmp_path_factory.mktemp("eval_tts")
    bundle = save_tiny_bundle(d)
    texts = ["The capital of France is Paris.", "Two plus two is four."]
    for i, t in enumerate(texts):
        synthesize(t, "espeak:en-us", out_path=d / f"a{i}.wav")
    write_manifest(d / "tts.jsonl", [{"id": f"a{i}", "text": t, "audio": str(d / f"a{i}.wav")}
                                     for i, t in enumerate(texts)])
    return d, bundle


def test_eval_tts_fields_reference_resynth_and_ablation(setup, capsys):
    d, bundle = setup
    args = ["eval", "tts", "--model", str(bundle), "--manifest", str(d / "tts.jsonl"), "--json"]
    assert main(args + ["--resynth", "--out", str(d / "items.jsonl")]) == 0
    r = _last_json(capsys)
    assert r["n"] == 2 and r["n_reference"] == 2 and r["top_k"] == 2 and r["prefix"] is True
    assert r["cer"] is not None and r["wer"] is not None and r["resynth_cer"] is not None
    assert r["reference_cer"] < 10  # the recogniser understands real (espeak) speech
    items = [json.loads(x) for x in (d / "items.jsonl").read_text().splitlines()]
    assert len(items) == 2 and all(i["seconds"] > 0 and "hyp" in i for i in items)

    assert main(args + ["--ablation", "--limit", "1", "--top-k", "3"]) == 0
    r = _last_json(capsys)
    assert r["n"] == 1 and r["top_k"] == 3
    table = r["ablation"]
    assert table["top_k"] == [1, 2, 3, 4, 5] and table["n"] == 1
    assert [(row["prefix"], row["pre_network"]) for row in table["rows"]] == [(False, True), (True, True)]
    assert all(len(row["cer"]) == len(row["wer"]) == 5 for row in table["rows"])


def test_bench_latency_breakdown(setup, capsys):
    _, bundle = setup
    assert main(["bench", "latency", "--model", str(bundle), "--chunks", "3", "--questions", "2",
                 "--max-new-tokens", "16", "--json"]) == 0
    r = _last_json(capsys)
    assert r["listen"]["ms_p50"] > 0 and "rtf" in r["listen"]
    resp = r["response"]
    assert resp["n"] == 2 and resp["differ"] == 0
    for mode in ("streaming", "cascade"):
        assert set(resp[mode]) >= {"first_segment", "decoder_prefill", "first_speech_tokens", "first_audio",
                                   "total"}
        assert set(resp[mode]["total"]) == {"p50", "p90"}
    assert "ratio_p50" in resp and "ratio_p90" in resp


def test_eval_tts_resynth_on_a_codec_only_bundle(setup, tmp_path, capsys):
    """A codec still in training (no speech decoder yet) is measured by its resynthesis alone; without
    --resynth such a bundle is refused with the missing part named."""
    import yaml

    d, bundle = setup
    codec_only = tmp_path / "codec_bundle"
    codec_only.mkdir()
    cfg = yaml.safe_load((bundle / "bundle.yaml").read_text())
    comp = cfg["components"]["codec"]
    shutil.copy(bundle / comp, codec_only / comp)
    keep = {k: v for k, v in cfg.items() if k in ("format", "sample_rate", "codec")}
    (codec_only / "bundle.yaml").write_text(yaml.safe_dump({**keep, "components": {"codec": comp}}))
    args = ["eval", "tts", "--model", str(codec_only), "--manifest", str(d / "tts.jsonl"), "--json"]
    assert main(args + ["--resynth"]) == 0
    r = _last_json(capsys)
    assert r["codec_only"] is True and r["n_reference"] == 2
    assert r["reference_cer"] < 10 and r["resynth_cer"] is not None
    assert main(args) != 0
    assert "has no decoder" in capsys.readouterr().err

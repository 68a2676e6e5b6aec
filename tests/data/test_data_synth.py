"""Voice inventory and real espeak-ng / flite synthesis, resumable corpus synthesis, and the CLI."""

import argparse
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from freeze_omni.data.manifest import read_manifest
from freeze_omni.data.synth import SynthError, plan_jobs, synth_corpus, synthesize
from freeze_omni.data.voices import Voice, espeak_base_voices, list_voices, select_voices

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
TEXTS = [(0, "Hello there, how are you today?"), (2, "What is the capital of France?"), (3, "Tell me a joke.")]


def _check_wav(path, text):
    info = sf.info(str(path))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    wave, _ = sf.read(str(path), dtype="float32")
    assert np.sqrt(np.mean(wave ** 2)) > 0.01  # not silent
    words = len(text.split())
    assert 0.15 * words < len(wave) / 16000 < 1.2 * words + 1.0  # plausible speaking rate


def test_voice_specs():
    assert Voice.parse("espeak:en-us+f3") == Voice("espeak", "en-us+f3")
    for bad in ("en-us", "festival:x", "flite:"):
        with pytest.raises(ValueError):
            Voice.parse(bad)
    specs = ["espeak:en-us", "espeak:en-us+klatt2", "espeak:en-gb+f1", "flite:rms", "flite:slt", "flite:awb"]
    assert select_voices(specs, exclude=["flite:rms", "flite:slt", "*+klatt*"]) == \
        ["espeak:en-us", "espeak:en-gb+f1", "flite:awb"]
    assert select_voices(specs, include=["flite:*"], exclude=["flite:rms"]) == ["flite:slt", "flite:awb"]


@needs_espeak
def test_inventory_has_working_espeak_variants_but_no_mbrola():
    specs = list_voices(["espeak"])
    assert "espeak:en-us" in specs and "espeak:en-us+f3" in specs and "espeak:en-gb+klatt" in specs
    assert not any(s.startswith("espeak:mb-") for s in specs)
    assert len(specs) == len(espeak_base_voices()) * (1 + len({s.split("+")[1] for s in specs if "+" in s}))


@needs_espeak
@needs_flite
@pytest.mark.parametrize("voice, rate, pitch", [("espeak:en-us+f3", 1.0, 0.0), ("espeak:en-gb-scotland+m3", 0.7, -4),
                                                ("flite:slt", 1.2, 3.0), ("flite:kal16", 0.8, -2.0)])
def test_real_synthesis(tmp_path, voice, rate, pitch):
    text = TEXTS[0][1]
    out = tmp_path / "x.wav"
    dur = synthesize(text, voice, rate, pitch, out)
    _check_wav(out, text)
    assert dur == pytest.approx(sf.info(str(out)).duration, abs=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]  # the raw tool output is cleaned up


@needs_espeak
def test_rate_changes_duration(tmp_path):
    slow = synthesize(TEXTS[1][1], "espeak:en-us", 0.7, 0, tmp_path / "slow.wav")
    fast = synthesize(TEXTS[1][1], "espeak:en-us", 1.25, 0, tmp_path / "fast.wav")
    assert slow > 1.3 * fast


def test_synthesis_errors(tmp_path):
    with pytest.raises(SynthError):
        synthesize("   ", "espeak:en-us", out_path=tmp_path / "a.wav")
    with pytest.raises(SynthError):
        synthesize("hi there", "flite:nosuchvoice", out_path=tmp_path / "a.wav")
    assert not list(tmp_path.iterdir())


def test_plan_is_deterministic_per_id():
    voices = ["espeak:en-us", "espeak:en-gb+f1", "flite:awb"]
    a = plan_jobs(TEXTS, voices, per_text=2, seed=0)
    assert [j.id for j in a] == ["u000000_0", "u000000_1", "u000002_0", "u000002_1", "u000003_0", "u000003_1"]
    assert a == plan_jobs(TEXTS, voices, per_text=2, seed=0)
    assert plan_jobs(TEXTS[1:], voices, per_text=2, seed=0) == a[2:]  # independent of other lines
    assert a != plan_jobs(TEXTS, voices, per_text=2, seed=1)
    only_flite = plan_jobs(TEXTS * 5, voices, seed=0, engine_weights={"espeak": 0, "flite": 1})
    assert {j.voice for j in only_flite} == {"flite:awb"}


@needs_espeak
@needs_flite
def test_synth_corpus_resumes(tmp_path):
    voices = ["espeak:en-us+m3", "espeak:en-gb+f2", "flite:awb"]
    first = synth_corpus(TEXTS, tmp_path, voices, jobs=2, progress=False)
    assert (first["synthesized"], first["failed"], first["existing"]) == (3, 0, 0)
    rows = read_manifest(tmp_path / "manifest.jsonl")
    assert [r["id"] for r in rows] == ["u000000_0", "u000002_0", "u000003_0"]
    for r, (_, text) in zip(rows, TEXTS):
        assert r["text"] == text and r["speaker"] in voices
        _check_wav(r["audio"], text)
    assert json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])["audio"] == "wav/u000000_0.wav"

    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "wav").iterdir()}
    second = synth_corpus(TEXTS, tmp_path, voices, jobs=2, progress=False)
    assert (second["synthesized"], second["existing"]) == (0, 3)
    assert read_manifest(tmp_path / "manifest.jsonl") == rows

    (tmp_path / "wav" / "u000002_0.wav").unlink()
    (tmp_path / "wav" / "u000003_0.wav").write_bytes(b"garbage")  # unreadable: made again
    third = synth_corpus(TEXTS, tmp_path, voices, jobs=2, progress=False)
    assert (third["synthesized"], third["existing"], third["failed"]) == (2, 1, 0)
    assert (tmp_path / "wav" / "u000000_0.wav").stat().st_mtime_ns == mtimes["u000000_0.wav"]
    assert len(read_manifest(tmp_path / "manifest.jsonl")) == 3


def test_synth_corpus_counts_failures(tmp_path):
    res = synth_corpus(TEXTS[:2], tmp_path, ["flite:nosuchvoice"], progress=False)
    assert (res["synthesized"], res["failed"]) == (0, 2) and len(res["errors"]) == 2
    assert read_manifest(tmp_path / "manifest.jsonl") == []


@needs_espeak
def test_cli(tmp_path, capsys):
    from freeze_omni.data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    texts = tmp_path / "t.txt"
    texts.write_text("Good morning.\n\nHow many legs does a spider have?\n")
    args = parser.parse_args(["data", "synth", "--texts", str(texts), "--out", str(tmp_path / "o"),
                              "--voices", "espeak", "--include-voices", "espeak:en-us*",
                              "--exclude-voices", "*+klatt*", "--no-progress", "--json"])
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["synthesized"] == 2 and res["failed"] == 0
    assert all(r["speaker"].startswith("espeak:en-us") and "klatt" not in r["speaker"]
               for r in read_manifest(tmp_path / "o" / "manifest.jsonl"))

    args = parser.parse_args(["data", "voices", "--voices", "espeak", "--json"])
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["count"] == len(res["voices"]) > 100

    out = tmp_path / "c.txt"
    args = parser.parse_args(["data", "corpus", "--out", str(out), "--n", "50", "--kinds", "numbers,chitchat",
                              "--heldout-frac", "0.2", "--json"])
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (res["lines"], res["heldout_lines"]) == (40, 10)

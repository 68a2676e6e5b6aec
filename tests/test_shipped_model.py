"""The shipped default bundle (models/tiny-en) with its real frozen SmolLM2: a spoken question end to end.

What a fresh clone gives: `chat` on the bundled spoken question decides, answers in text with the LLM, and, once the
bundle has a speech decoder and codec, writes the spoken answer; `transcribe` of the same wav hears the question.
"""

import json
from pathlib import Path

import pytest
import soundfile as sf

from freeze_omni.cli import main

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "tiny-en"
QUESTION = REPO / "assets" / "question.wav"

pytestmark = pytest.mark.skipif(not (MODEL / "bundle.yaml").is_file(), reason="no shipped bundle")


def _components() -> set:
    from freeze_omni.bundle import Bundle

    return set(Bundle(MODEL).config.get("components", {}))


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_shipped_model_hears_the_question(capsys):
    assert main(["transcribe", str(QUESTION), "--model", str(MODEL), "--json"]) == 0
    text = _last_json(capsys)["text"].lower()
    assert "capital" in text and "france" in text, text


def test_shipped_model_answers_and_speaks(tmp_path, capsys):
    parts = _components()
    if "bridge" not in parts:
        pytest.skip("the shipped bundle has no trained bridge yet")
    speaks = {"decoder", "codec"} <= parts
    out = tmp_path / "answer.wav"
    args = ["chat", str(QUESTION), "--model", str(MODEL), "--greedy", "--json"]
    args += ["--out", str(out)] if speaks else []
    assert main(args) == 0
    r = _last_json(capsys)
    assert r["decision"] in ("respond", "end_of_input")
    assert len(r["answer"].split()) >= 3, r
    if speaks:
        audio, sr = sf.read(out)
        assert sr == r["sample_rate"] and len(audio) / sr > 1.0  # seconds of speech, not a click
        assert abs(audio).max() > 0.05
        assert r["latency_ms"]["first_audio"] is not None

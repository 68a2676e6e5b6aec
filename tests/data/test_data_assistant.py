"""`freeze-omni data assistant`: Q&A answers cut into live segments and spoken, as output stage 3 rows."""

import json
import shutil

import pytest

from freeze_omni.data.assistant import answer_segments, build_answer_speech

ANSWERS = [
    {"id": "qa0", "questions": ["What is the capital of France?", "Why?"], "dropped": None,
     "answers": ["The capital of France is Paris, a city on the Seine. It is famous for the Eiffel Tower.", "No."]},
    {"id": "qa1", "questions": ["Hi"], "answers": ["Hello there! How can I help you today?"], "dropped": None},
    {"id": "qa2", "questions": ["Tell me more"], "answers": [""], "dropped": "empty"},
]


def _tok():
    from freeze_omni.llm.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    return (lambda text: tok(text, add_special_tokens=False)["input_ids"]), tok.decode


def test_segments_follow_the_live_segmenter_and_keep_the_answer_before():
    tokenize, decode = _tok()
    rows = answer_segments(ANSWERS, tokenize, decode, {"qa1": "heldout"})
    first = [r for r in rows if r["id"].startswith("qa0_")]
    assert [r["answer"] for r in first] == ["The capital of France is Paris,", " a city on the Seine.",
                                            " It is famous for the Eiffel Tower."]
    assert "".join(r["answer"] for r in first) == ANSWERS[0]["answers"][0]  # first round only, nothing lost
    assert all(r["answer_before"] == "".join(x["answer"] for x in first[:i]) for i, r in enumerate(first))
    assert first[0]["text"] == "The capital of France is Paris." and first[0]["split"] == "train"
    assert {r["split"] for r in rows if r["id"].startswith("qa1_")} == {"heldout"}
    assert not any(r["id"].startswith("qa2_") for r in rows)  # dropped dialogues are skipped


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup)")
def test_build_writes_train_and_eval_rows(tmp_path):
    from freeze_omni.data.manifest import read_manifest

    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ANSWERS))
    (tmp_path / "qa" / "dialogues.jsonl").write_text(json.dumps({"id": "qa1", "split": "heldout"}) + "\n")
    tokenize, decode = _tok()
    r = build_answer_speech(tmp_path / "qa" / "answers.jsonl", tmp_path / "answers", tokenize, decode,
                            voice="espeak:en-us", progress=False)
    assert r["failed"] == 0 and r["train"] == 3 and r["eval"] >= 1
    train = read_manifest(tmp_path / "answers" / "train.jsonl")
    assert set(train[0]) >= {"question", "answer", "answer_before", "audio", "text"}
    assert all((tmp_path / "answers" / "wav").joinpath(f"{t['id']}.wav").is_file() for t in train)

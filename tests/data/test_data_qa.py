"""Stage-3 Q&A data: question plans and held-out splits, answers from a tiny random frozen LLM (resumable),
chunk state labels, state-2 clips with espeak-ng, the skip-tolerant manifest readers and the CLI."""

import argparse
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from freeze_omni.data import qa
from freeze_omni.data.manifest import read_manifest, write_manifest
from freeze_omni.data.text import normalize_text

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
SR = 16000


def _questions(dialogues, split):
    return {normalize_text(q) for d in dialogues if d.split == split for q in d.questions}


# ---------------------------------------------------------------------------------------------- questions

def test_plan_is_deterministic_and_heldout_is_disjoint():
    a = qa.plan_dialogues(240, multi_frac=0.3, heldout_frac=0.2, seed=0)
    assert [d.to_row() for d in a] == [d.to_row() for d in qa.plan_dialogues(240, 0.3, 0.2, seed=0)]
    assert [d.to_row() for d in a] != [d.to_row() for d in qa.plan_dialogues(240, 0.3, 0.2, seed=1)]
    assert len(a) >= 230 and len({d.id for d in a}) == len(a)
    held = [d for d in a if d.split == "heldout"]
    assert 0.08 * len(a) < len(held) < 0.35 * len(a)
    assert not _questions(a, "train") & _questions(a, "heldout")  # held-out questions never in train
    assert not {d.key for d in a if d.split == "train"} & {d.key for d in held}  # nor their entities
    for d in a:
        assert all(qa.is_request(q) for q in d.questions[:1]), d.questions
    assert qa.plan_dialogues(240, 0.3, 0.0, seed=0)[0].split == "train"
    assert all(d.split == "train" for d in qa.plan_dialogues(60, 0.3, 0.0, seed=0))


def test_requests_and_entity_keys():
    assert qa.is_request("What is the capital of Peru?") and qa.is_request("Convert 5 miles to kilometers.")
    assert qa.is_request("Tell me a joke about cats.")
    assert not qa.is_request("A guitar is a stringed instrument.") and not qa.is_request("I had a long day at work.")
    assert not qa.is_request("Can you say that again?")  # needs context: follow-ups only
    assert qa.entity_key("What is the capital of Peru?") == qa.entity_key("Which country has Lima as its capital?") \
        == "country:Peru"
    assert qa.entity_key("What do cats eat?") == qa.entity_key("Tell me a story about a cat.") == "e:cat"
    assert qa.entity_key("What is a guitar?") == qa.entity_key("How do you spell guitar?") == "e:guitar"
    assert qa.entity_key("What is 7 plus 5?") == "q:what is seven plus five"


def test_multi_round_structure():
    ds = qa.plan_dialogues(200, multi_frac=0.5, heldout_frac=0.1, seed=3)
    multi = [d for d in ds if d.kind != "single"]
    assert 80 <= len(multi) <= 100
    assert all(2 <= len(d.questions) <= 3 for d in multi)
    assert all(len(d.questions) == 1 for d in ds if d.kind == "single")
    assert any(len(d.questions) == 3 for d in multi)
    country = [d for d in multi if d.kind == "country"]
    assert country and all(d.key.startswith("country:") for d in country)
    followups = {q for d in country for q in d.questions[1:]}
    # pronoun follow-ups ("How many people live there?")
    assert followups & set(qa.questions._CHAINS["country"].followups)
    for d in multi:
        assert len({normalize_text(q) for q in d.questions}) == len(d.questions)  # no repeated turn
    # held-out dialogues use only held-out follow-up phrasings
    generic = set(qa.GENERIC_FOLLOWUPS)
    used = {s: {q for d in multi if d.split == s for q in d.questions[1:] if q in generic} for s in qa.SPLITS}
    assert not used["train"] & used["heldout"]


# ---------------------------------------------------------------------------------------------- answers

@pytest.fixture(scope="module")
def tiny():
    """A tiny random FrozenLLM whose end-of-turn logit is boosted so that some answers finish early."""
    import torch
    from freeze_omni.llm.testing import tiny_llm

    llm = tiny_llm()
    with torch.no_grad():
        llm.lm.lm_head.weight[llm.eot_id] *= 2.0
    return llm


def test_answers_from_tiny_llm_resume(tmp_path, tiny):
    from freeze_omni.llm.sampling import SamplingConfig

    ds = qa.plan_dialogues(12, multi_frac=0.5, heldout_frac=0.0, seed=0)
    sampling = SamplingConfig(greedy=True, max_new_tokens=12)
    out = tmp_path / "answers.jsonl"
    calls = []

    def factory():
        calls.append(1)
        return tiny

    first = qa.generate_answers(ds, factory, out, "Be brief.", sampling, batch_size=4, progress=False)
    assert first["generated"] == len(ds) == first["total"] and calls == [1]
    assert first["kept"] + first["dropped_empty"] + first["dropped_truncated"] == len(ds)
    assert first["kept"] >= 2 and first["dropped_truncated"] >= 1
    rows = qa.read_answers(out)
    for d in ds:
        r = rows[d.id]
        assert r["questions"] == d.questions
        if r["dropped"] is None:
            assert len(r["answers"]) == len(d.questions) and all(a.strip() for a in r["answers"])
        else:
            assert len(r["answers"]) < len(d.questions)
    single = [d for d in ds if len(d.questions) == 1 and rows[d.id]["dropped"] is None]
    direct = tiny.answer_text([d.questions[0] for d in single], "Be brief.", sampling)
    assert [rows[d.id]["answers"][0] for d in single] == [a.strip() for a in direct]  # same as the text modality

    second = qa.generate_answers(ds, factory, out, "Be brief.", sampling, batch_size=4, progress=False)
    assert second["generated"] == 0 and second["existing"] == len(ds) and calls == [1]  # LLM not even loaded
    assert second["kept"] == first["kept"]
    third = qa.generate_answers(ds, tiny, out, "Another prompt.", sampling, batch_size=4, progress=False)
    assert third["generated"] == len(ds)  # other settings: answers made again


class _FakeLLM:
    """Records calls; answers "empty" with "", "long" with 20 words, else "ok N" (N = history length)."""

    def __init__(self):
        self.calls = []

    def tokenize(self, text):
        return text.split()

    def answer_text(self, questions, system, sampling, batch_size=16, history=None):
        self.calls.append((list(questions), history))
        hist = history or [[] for _ in questions]
        return ["" if q == "empty" else " ".join(["w"] * 20) if q == "long" else f"ok {len(h)}"
                for q, h in zip(questions, hist)]


def test_answers_history_and_drops(tmp_path):
    from freeze_omni.llm.sampling import SamplingConfig

    ds = [qa.Dialogue("a", ["q1", "q2", "q3"], "x", "k", "train"), qa.Dialogue("b", ["q1", "empty"], "x", "k", "train"),
          qa.Dialogue("c", ["long", "q2"], "x", "k", "train"), qa.Dialogue("d", ["q1"], "x", "k", "train")]
    fake = _FakeLLM()
    res = qa.generate_answers(ds, fake, tmp_path / "a.jsonl", "S", SamplingConfig(greedy=True, max_new_tokens=10),
                              progress=False)
    assert (res["kept"], res["dropped_empty"], res["dropped_truncated"]) == (2, 1, 1)
    rows = qa.read_answers(tmp_path / "a.jsonl")
    assert rows["a"]["answers"] == ["ok 0", "ok 1", "ok 2"] and rows["d"]["answers"] == ["ok 0"]
    assert rows["b"]["dropped"] == "empty" and rows["c"]["dropped"] == "truncated"
    assert len(fake.calls) == 3  # one batch per round; "c" stops after its first round
    assert fake.calls[0][1] is None  # round 1 has no history
    assert sorted(fake.calls[1][0]) == ["empty", "q2"] and fake.calls[2] == (["q3"], [[("q1", "ok 0"), ("q2", "ok 1")]])


# ---------------------------------------------------------------------------------------------- state labels

def test_chunk_labels():
    assert qa.chunk_labels(0.5) == [0, 0, 0, 1]
    assert qa.chunk_labels(0.32) == [0, 1] and qa.chunk_labels(0.33) == [0, 0, 1]
    assert qa.chunk_labels(0.0) == [1] and qa.chunk_labels(0.05, final_label=2) == [2]
    assert qa.chunk_labels(0.5, end_pad_chunks=2) == [0, 0, 0, 1, 1, 1]
    assert qa.chunk_labels(1.0, chunk_seconds=0.25, final_label=2) == [0, 0, 0, 2]
    with pytest.raises(ValueError):
        qa.chunk_labels(1.0, chunk_seconds=0)


def _tone(seconds, rng, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * rng.standard_normal(len(t)))


def test_speech_end_on_synthetic_audio():
    rng = np.random.default_rng(0)
    lead, speech, trail = np.zeros(int(0.2 * SR)), _tone(1.0, rng), np.zeros(int(0.27 * SR))
    speech[-int(0.1 * SR):] *= np.linspace(1, 0.05, int(0.1 * SR))  # a fading last phone (-26 dB): still speech
    wave = np.concatenate([lead, speech, trail]).astype(np.float32)
    end = qa.speech_end(wave, SR)
    assert abs(end - 1.2) < 0.025
    floor = wave + 10 ** (-50 / 20) * 0.3 * rng.standard_normal(len(wave))  # flite-like noise floor
    assert abs(qa.speech_end(floor, SR) - 1.2) < 0.025
    pause = np.concatenate([lead, _tone(0.4, rng), np.zeros(int(0.3 * SR)), _tone(0.3, rng), trail])
    assert abs(qa.speech_end(pause, SR) - 1.2) < 0.025  # a pause inside the turn is not its end
    assert qa.speech_end(np.zeros(SR), SR) == 0.0 and qa.speech_end(np.zeros(0), SR) == 0.0
    noise = 0.1 * rng.standard_normal(SR)  # stationary noise is sound to its last sample
    assert qa.speech_end(noise, SR) > 0.98

    cut, labels = qa.turn_audio(wave, end)
    assert labels == qa.chunk_labels(end) and len(labels) == 8  # ceil(1.2 / 0.16): the chunk holding the end
    assert len(cut) == 8 * 2560 and np.array_equal(cut, wave[:8 * 2560])
    true_end_chunk = int(1.2 // qa.CHUNK_SECONDS)
    assert abs(labels.index(1) - true_end_chunk) <= 1
    padded, lab2 = qa.turn_audio(wave[:int(1.21 * SR)], 1.21, end_pad_chunks=1, final_label=2)
    assert lab2 == [0] * 7 + [2, 2] and len(padded) == 9 * 2560 and not padded[int(1.21 * SR):].any()


# ---------------------------------------------------------------------------------------------- state 2

def test_plan_state2_split_and_kinds():
    items = qa.plan_state2(300, heldout_frac=0.2, seed=0, avoid=["Where did I put my glasses?"])
    assert len(items) == 300 and len({i.id for i in items}) == 300
    kinds = {k: sum(i.kind == k for i in items) for k in qa.STATE2_KINDS}
    assert kinds["side_talk"] == 120 and all(v > 0 for v in kinds.values())
    for kind in ("side_talk", "backchannel"):
        texts = {s: {normalize_text(i.text) for i in items if i.kind == kind and i.split == s} for s in qa.SPLITS}
        assert texts["train"] and texts["heldout"] and not texts["train"] & texts["heldout"]
    assert "where did i put my glasses" not in {normalize_text(i.text) for i in items}
    assert all(i.spoken for i in items if i.kind in ("side_talk", "backchannel"))
    assert len(qa.SIDE_TALK) >= 200
    again = qa.plan_state2(300, 0.2, 0, ["Where did I put my glasses?"])
    assert [i.__dict__ for i in items] == [i.__dict__ for i in again]


@needs_espeak
def test_make_state2_with_espeak(tmp_path):
    items = [qa.State2Item("s2_side_talk_00000", "side_talk", "Honey, did you feed the dog?", "train",
                           "Honey, did you feed the dog?"),
             qa.State2Item("s2_backchannel_00000", "backchannel", "mm-hmm", "heldout", "umhum"),
             qa.State2Item("s2_cough_00000", "cough", "", "train"),
             qa.State2Item("s2_babble_00000", "babble", "", "train")]
    pools = {"train": ["espeak:en-us+m3"], "heldout": ["espeak:en-gb+f2"]}
    res = qa.make_state2(items, tmp_path / "state2", pools, jobs=2, progress=False)
    assert res["failed"] == 0 and res["total"] == 4
    rows = read_manifest(tmp_path / "state2" / "manifest.jsonl")
    assert [r["id"] for r in rows] == [i.id for i in items]
    raw = json.loads((tmp_path / "state2" / "manifest.jsonl").read_text().splitlines()[0])
    assert raw["audio"] == "wav/s2_side_talk_00000.wav"
    by_id = {r["id"]: r for r in rows}
    assert by_id["s2_backchannel_00000"]["speaker"] == "espeak:en-gb+f2"  # held-out voice
    for r in rows:
        info = sf.info(r["audio"])
        assert info.samplerate == SR and 0.1 < r["speech_end"] <= r["duration"] + 1e-6
        assert 0.05 < r["duration"] - r["speech_end"] < 0.7  # trailing silence (longer at slow rates) found
        labels = qa.chunk_labels(r["speech_end"], final_label=2)
        assert labels[-1] == 2 and set(labels[:-1]) <= {0}
    back, _ = qa.read_state2_manifest(tmp_path / "state2" / "manifest.jsonl")
    assert len(back) == 4
    again = qa.make_state2(items, tmp_path / "state2", pools, jobs=2, progress=False)  # resumes
    assert read_manifest(tmp_path / "state2" / "manifest.jsonl") == rows and again["failed"] == 0


# ---------------------------------------------------------------------------------------------- manifests

def test_read_qa_manifest_skips_corrupt_audio(tmp_path):
    good, bad = tmp_path / "wav" / "a.wav", tmp_path / "wav" / "b.wav"
    good.parent.mkdir()
    sf.write(str(good), np.zeros(1600, dtype=np.float32), SR, subtype="PCM_16")
    bad.write_bytes(b"RIFF garbage")
    rows = [{"id": "a", "split": "train", "turns": [{"question": "Hi?", "answer": "Hello.", "audio": str(good)}]},
            {"id": "b", "split": "train", "turns": [{"question": "Hi?", "answer": "Hello.", "audio": str(good)},
                                                    {"question": "Why?", "answer": "So.", "audio": str(bad)}]},
            {"id": "c", "split": "train", "turns": [{"question": "Hi?", "audio": str(good)}]},  # no answer
            {"id": "d", "split": "train", "turns": [{"question": "Text only?", "answer": "Yes."}]}]
    write_manifest(tmp_path / "qa_train.jsonl", rows)
    with open(tmp_path / "qa_train.jsonl", "a") as f:
        f.write('{"id": "truncated", "tur')
    got, skipped = qa.read_qa_manifest(tmp_path / "qa_train.jsonl")
    assert [r["id"] for r in got] == ["a", "d"] and skipped == 2
    assert got[0]["turns"][0]["audio"] == str(good)
    assert len(qa.read_qa_manifest(tmp_path / "qa_train.jsonl", check_audio=False)[0]) == 3


# ---------------------------------------------------------------------------------------------- CLI

@needs_espeak
def test_cli_end_to_end(tmp_path, capsys, monkeypatch):
    from freeze_omni.data.cli import register
    from freeze_omni.llm.backbone import FrozenLLM

    loaded = []
    monkeypatch.setattr(FrozenLLM, "load", classmethod(lambda cls, ref, *a, **k: loaded.append(ref) or _FakeLLM()))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "qa"
    argv = ["data", "qa", "--out", str(out), "--n", "8", "--multi-frac", "0.5", "--heldout-frac", "0.3",
            "--max-new-tokens", "12", "--state2", "4", "--voices", "espeak", "--include-voices", "espeak:en-us*",
            "--exclude-voices", "espeak:en-us+f*", "--seed", "1", "--no-progress", "--json"]
    args = parser.parse_args(argv)
    rc = args.func(args)
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == (0 if res["qa_train"] else 1)
    assert loaded == ["smollm2-135m-instruct"]
    assert res["qa_train"] + res["qa_heldout"] == res["answers"]["kept"] == res["planned"] == 8, res
    assert res["qa_heldout"] >= 1 and res["multi_round"] >= 3
    assert res["speech"]["failed"] == 0 and res["state2"]["failed"] == 0
    assert res["state2"]["train"] + res["state2"]["heldout"] == 4
    for name in ("qa_train", "qa_heldout", "state2_train", "state2_heldout"):
        assert (out / f"{name}.jsonl").exists()
    rows = read_manifest(out / "qa_train.jsonl") + read_manifest(out / "qa_heldout.jsonl")
    for r in rows:
        assert r["turns"] and all(t["answer"] and sf.info(t["audio"]).frames > 0 for t in r["turns"])
        assert all(0 < t["speech_end"] <= t["duration"] + 1e-6 for t in r["turns"])
        held_voice = r["speaker"].startswith("espeak:en-us+f")
        assert held_voice == (r["split"] == "heldout")  # held-out voices speak only the held-out split
    first = json.loads((out / "qa_train.jsonl").read_text().splitlines()[0])
    assert first["turns"][0]["audio"].startswith("wav/") and first["turns"][0]["answer"].startswith("ok ")
    s2 = json.loads((out / "state2_train.jsonl").read_text().splitlines()[0])
    assert s2["audio"].startswith("state2/wav/") and set(s2) >= {"id", "audio", "kind", "text"}

    args = parser.parse_args(argv)  # a rerun makes nothing new
    args.func(args)
    res2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res2["answers"]["generated"] == 0 and res2["speech"]["synthesized"] == 0
    assert res2["qa_train"] == res["qa_train"] and loaded == ["smollm2-135m-instruct"]  # not loaded again


def test_cli_limit_then_complete_the_same_plan(tmp_path, capsys, monkeypatch):
    from freeze_omni.data.cli import register
    from freeze_omni.llm.backbone import FrozenLLM

    monkeypatch.setattr(FrozenLLM, "load", classmethod(lambda cls, ref, *a, **k: _FakeLLM()))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    argv = ["data", "qa", "--out", str(tmp_path / "qa"), "--n", "8", "--skip-speech", "--no-progress", "--json"]
    args = parser.parse_args(argv + ["--limit", "3"])
    args.func(args)
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["planned"] == 3 and first["answers"]["generated"] == 3
    assert len((tmp_path / "qa" / "dialogues.jsonl").read_text().splitlines()) == 8  # the whole plan is written
    args = parser.parse_args(argv)
    args.func(args)
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert full["planned"] == 8 and full["answers"]["existing"] == 3 and full["answers"]["generated"] == 5

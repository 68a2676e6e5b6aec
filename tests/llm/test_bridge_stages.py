"""Stages 2 (align) and 3 (qa) end to end through the command line with a tiny random LLM saved to disk,
then `chat`, `eval qa` and `eval state` on the trained bundle."""

import json
import shutil

import pytest
import yaml

from freeze_omni.cli import main

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make setup)")


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from freeze_omni.data.manifest import read_manifest, write_manifest
    from freeze_omni.encoder.ctc import CharTokenizer, CTCHead
    from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
    from freeze_omni.encoder.masks import ChunkPolicy
    from freeze_omni.llm.testing import tiny_causal_lm, tiny_tokenizer
    from freeze_omni.train.ctc import CTCStage, export_bundle

    d = tmp_path_factory.mktemp("bridge")
    tok = tiny_tokenizer()
    tiny_causal_lm("qwen2", vocab_size=len(tok)).save_pretrained(d / "llm")
    tok.save_pretrained(d / "llm")
    enc = SpeechEncoder(EncoderConfig(d_model=32, n_heads=2, d_ff=64, n_layers=1, left_chunks=4))
    ctok = CharTokenizer()
    export_bundle(CTCStage(enc, CTCHead(32, ctok.vocab_size), ChunkPolicy()), ctok, d / "ctc")
    (d / "texts.txt").write_text("what is two plus two\nhello there\nuh huh\n")
    assert main(["data", "synth", "--texts", str(d / "texts.txt"), "--out", str(d / "asr"), "--voices", "espeak",
                 "--no-progress", "--json"]) == 0
    rows = read_manifest(d / "asr" / "manifest.jsonl")
    qa = [{"id": "d0", "turns": [{"question": rows[0]["text"], "audio": rows[0]["audio"], "answer": "four",
                                  "expected": ["four"]},
                                 {"question": rows[1]["text"], "audio": rows[1]["audio"], "answer": "hi"}]}]
    write_manifest(d / "qa.jsonl", qa)
    write_manifest(d / "state2.jsonl", [{"id": "s0", "audio": rows[2]["audio"], "kind": "backchannel",
                                          "text": rows[2]["text"]}])
    return d


def _train(tmp, stage, init, d, extra):
    cfg = {"init_bundle": str(init), "llm": str(d / "llm"), "system_prompt": "be brief",
           "bridge": {"prompt_num": 3, "transcribe_tokens": 2},
           "train": {"out_dir": str(tmp / stage), "max_steps": 3, "lr": 1e-3, "batch_size": 2, "log_every": 1,
                     "ckpt_every": 3, "threads": 1},
           "export": {"bundle": str(tmp / f"{stage}_bundle")}, **extra}
    (tmp / f"{stage}.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", stage, "--config", str(tmp / f"{stage}.yaml")]) == 0
    return tmp / f"{stage}_bundle"


def test_align_on_the_token_ctc_alone_skips_the_llm(tmp_path, setup, capsys):
    from freeze_omni.bundle import Bundle

    d = setup
    out = _train(tmp_path, "align", d / "ctc", d, {"data": {"train": str(d / "asr" / "manifest.jsonl")},
                                                    "train_encoder": False, "llm_weight": 0.0,
                                                    "token_ctc_weight": 1.0, "token_ctc_negatives": 16})
    log = [json.loads(x) for x in (tmp_path / "align" / "log.jsonl").read_text().splitlines()]
    assert all("train/token_ctc" in x and "train/ce" not in x for x in log if "train/loss" in x)
    before, after = Bundle(d / "ctc").tensors("encoder"), Bundle(out).tensors("encoder")
    assert all((before[k] == after[k]).all() for k in before)  # the encoder stayed as it was
    # The blank and scale travel with the bundle, so that stage 3 goes on with the outputs fitted to them.
    blank = Bundle(out).tensors("token_ctc")["blank"]
    capsys.readouterr()  # what the adapter writes, read as the LLM's tokens
    assert main(["eval", "asr", "--model", str(out), "--manifest", str(d / "asr" / "manifest.jsonl"),
                 "--decoder", "adapter", "--mode", "streaming", "--json"]) == 0
    r = _last_json(capsys)
    assert r["decoder"] == "adapter" and r["n"] == 3 and r["wer"] >= 0
    assert main(["eval", "asr", "--model", str(d / "ctc"), "--manifest", str(d / "asr" / "manifest.jsonl"),
                 "--decoder", "adapter", "--mode", "streaming"]) != 0
    assert "no token_ctc component" in capsys.readouterr().err  # a bundle trained without it says so
    qa = _train(tmp_path, "qa", out, d, {"data": {"train": str(d / "qa.jsonl")}, "train_adapter": True,
                                         "token_ctc_weight": 0.5, "token_ctc_negatives": 16,
                                         "train": {"out_dir": str(tmp_path / "qa"), "max_steps": 1, "lr": 1e-9,
                                                   "batch_size": 1, "ckpt_every": 1, "threads": 1}})
    assert (Bundle(qa).tensors("token_ctc")["blank"] - blank).abs().max() < 1e-3


def test_align_then_qa_then_chat_and_eval(tmp_path, setup, capsys):
    from freeze_omni.bundle import Bundle

    d = setup
    align = _train(tmp_path, "align", d / "ctc", d, {"data": {"train": str(d / "asr" / "manifest.jsonl")},
                                                      "ctc_weight": 0.3, "token_ctc_weight": 0.5,
                                                      "token_ctc_negatives": 16})
    b = Bundle(align)
    assert b.has("bridge") and b.has("encoder") and b.has("ctc")
    # The encoder trained, so the CTC head trained along with it (ctc_weight) and was exported.
    log = [json.loads(x) for x in (tmp_path / "align" / "log.jsonl").read_text().splitlines()]
    assert any("train/ctc" in x for x in log)
    assert any("train/token_ctc" in x for x in log)  # the adapter's outputs read through the LLM's embeddings
    before, after = Bundle(d / "ctc").tensors("ctc"), b.tensors("ctc")
    assert any(not (before[k] == after[k]).all() for k in before)
    assert b.config["llm"]["ref"] == str(d / "llm") and b.config["llm"]["fingerprint"]
    # Stage 2's task read back: the frozen LLM writes the transcript through the bridge.
    capsys.readouterr()
    assert main(["eval", "asr", "--model", str(align), "--manifest", str(d / "asr" / "manifest.jsonl"),
                 "--decoder", "llm", "--mode", "streaming", "--json"]) == 0
    r = _last_json(capsys)
    assert r["decoder"] == "llm" and r["n"] == 3 and r["wer"] >= 0 and "cer_full" not in r
    qa = _train(tmp_path, "qa", align, d, {"data": {"train": str(d / "qa.jsonl"), "state2": str(d / "state2.jsonl"),
                                                     "state2_frac": 1.0}})
    log = [json.loads(x) for x in (tmp_path / "qa" / "log.jsonl").read_text().splitlines()]
    assert any("train/state_ce" in x for x in log) and any("train/ce" in x for x in log)
    capsys.readouterr()

    wav = json.loads((d / "qa.jsonl").read_text().splitlines()[0])["turns"][0]["audio"]
    wav = str((d / wav).resolve()) if not wav.startswith("/") else wav
    assert main(["chat", wav, "--model", str(qa), "--greedy", "--max-new-tokens", "4", "--json"]) == 0
    out = _last_json(capsys)
    assert set(out) >= {"answer", "decision", "audio", "sample_rate", "latency_ms", "rtf"}
    assert out["decision"] in ("respond", "ignore", "end_of_input")
    # greedy is deterministic
    assert main(["chat", wav, "--model", str(qa), "--greedy", "--max-new-tokens", "4", "--json"]) == 0
    assert _last_json(capsys)["answer"] == out["answer"]

    assert main(["eval", "qa", "--model", str(qa), "--manifest", str(d / "qa.jsonl"), "--json"]) == 0
    r = _last_json(capsys)
    assert r["n"] == 2 and r["n_known"] == 1 and 0 <= r["identical"] <= 100 and "acc_gap" in r
    assert 0 <= r["topic_recall_speech"] <= 100 and 0 <= r["topic_recall_text"] <= 100
    assert main(["eval", "state", "--model", str(qa), "--manifest", str(d / "state2.jsonl"), "--json"]) == 0
    s = _last_json(capsys)
    assert s["state2"] == 1 and "state2_rejected" in s
    assert main(["bench", "latency", "--model", str(qa), "--chunks", "4", "--json"]) == 0
    assert _last_json(capsys)["listen"]["ms_p50"] > 0

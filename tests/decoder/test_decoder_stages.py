"""Output stages 2 (`decoder`) and 3 (`prefix`) end to end through the command line, then `speak`, with a tiny
LLM saved to disk and a tiny random codec bundle."""

import json

import torch
import yaml

from freeze_omni.cli import main

TINY = {"preset": "tiny_en", "d_model": 32, "n_heads": 2, "ffn": 64, "n_layers": 2, "n_pre": 1, "n_prefix": 2}


def _train(tmp, d, stage, init, extra=None):
    cfg = {"init_bundle": str(init), "llm": str(d / "llm"), "system_prompt": "be brief",
           "decoder": TINY if stage == "decoder" else {"dropout": 0.1},
           "data": {"train": str(d / ("tts.jsonl" if stage == "decoder" else "answers.jsonl")), "max_seconds": 5},
           "train": {"out_dir": str(tmp / stage), "max_steps": 2, "lr": 1e-3, "batch_size": 2, "log_every": 1,
                     "ckpt_every": 1, "eval_every": 1, "threads": 1},
           "export": {"bundle": str(tmp / f"{stage}_bundle")}, **(extra or {})}
    (tmp / f"{stage}.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", stage, "--config", str(tmp / f"{stage}.yaml")]) == 0
    return tmp / f"{stage}_bundle"


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_decoder_then_prefix_then_speak(tmp_path, disk_setup, capsys):
    from freeze_omni.bundle import Bundle
    from freeze_omni.decoder.model import SpeechDecoder

    d = disk_setup
    # stage 2: text -> codec tokens; codec carried over, LLM recorded, tokens cached beside the manifest
    b2 = _train(tmp_path, d, "decoder", d / "codec", {"data": {"train": str(d / "tts.jsonl"),
                                                              "eval": str(d / "tts.jsonl")}})
    bundle = Bundle(b2)
    assert bundle.has("decoder") and bundle.has("codec") and bundle.config["llm"]["ref"] == str(d / "llm")
    assert bundle.config["decoder"]["use_prefix"] is False and bundle.config["decoder"]["codebook_size"] == 64
    assert len(list(d.glob("tts.codes-*.pt"))) == 1
    log = [json.loads(x) for x in (tmp_path / "decoder" / "log.jsonl").read_text().splitlines()]
    assert any("train/acc" in x for x in log) and any("eval/loss" in x for x in log)
    dec2 = SpeechDecoder.from_bundle(b2)

    # stage 3: only the prefix decoder changes
    b3 = _train(tmp_path, d, "prefix", b2)
    assert len(list(d.glob("answers.prefix-*.pt"))) == 1
    dec3 = SpeechDecoder.from_bundle(b3)
    assert dec3.cfg.use_prefix and dec3.cfg.dropout == 0.1
    s2, s3 = dec2.state_dict(), dec3.state_dict()
    assert set(s3) - set(s2) and all(k.startswith(("layers_prefix.", "prefix_proj.")) for k in set(s3) - set(s2))
    assert all(torch.equal(s2[k], s3[k]) for k in s2)  # stage 3 froze everything else
    # resume continues from the last checkpoint (the caches are complete: no recomputation)
    assert main(["train", "prefix", "--config", str(tmp_path / "prefix.yaml"), "--resume",
                 "--set", "train.max_steps=3"]) == 0

    # speak, with the prefix (stage-3 bundle) and without (stage-2 bundle)
    capsys.readouterr()
    for b, with_prefix in ((b3, True), (b2, False)):
        out = tmp_path / f"speak_{with_prefix}.wav"
        assert main(["speak", "Hello there, how are you? Fine.", "--out", str(out), "--model", str(b),
                     "--top-k", "2", "--seed", "0", "--json"]) == 0
        r = _last_json(capsys)
        assert r["prefix"] is with_prefix and r["sample_rate"] == 16000 and r["audio"] == str(out)
        assert set(r) >= {"audio", "sample_rate", "seconds", "rtf"} and len(r["segments"]) >= 2
        import soundfile as sf

        info = sf.info(str(out))
        assert info.samplerate == 16000 and info.frames == round(r["seconds"] * 16000)
        assert info.frames == r["tokens"] * 16000 // 40  # every token became hop samples


def test_speak_needs_a_decoder(tmp_path, disk_setup, capsys):
    rc = main(["speak", "Hi.", "--out", str(tmp_path / "x.wav"), "--model", str(disk_setup / "codec")])
    assert rc == 2 and "no decoder" in capsys.readouterr().err


def test_what_each_stage_trains(make_decoder):
    from freeze_omni.llm.testing import tiny_llm
    from freeze_omni.train.decoder import DecoderStage

    llm = tiny_llm()
    batch = {"text_ids": torch.randint(0, 200, (2, 5)), "text_lens": torch.tensor([5, 3]),
             "codes": torch.randint(0, 16, (2, 6)), "code_lens": torch.tensor([6, 4]),
             "prefix": torch.randn(2, 4, llm.hidden_size), "prefix_lens": torch.tensor([4, 2])}
    for stage, use_prefix in (("decoder", False), ("prefix", True)):
        model = DecoderStage(make_decoder(llm_hidden=llm.hidden_size, use_prefix=use_prefix), llm, stage).train()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if stage == "prefix":
            parts = ("decoder.layers_prefix.", "decoder.prefix_proj.")
            assert trainable and all(n.startswith(parts) for n in trainable)
            assert not model.decoder.layers.training and model.decoder.layers_prefix.training
            assert "decoder.layers_prefix.1.mlp.up_proj.weight" not in trainable  # dead weight of the last layer
        else:
            assert "decoder.layers.0.mlp.up_proj.weight" in trainable and "decoder.input_proj.weight" in trainable
        assert not any(n.startswith("llm") for n, _ in model.named_parameters())
        model(batch)["loss"].backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # none unused (DDP)


def test_phoneme_decoder_trains_prefixes_and_speaks(tmp_path, disk_setup, capsys):
    from freeze_omni.bundle import Bundle
    from freeze_omni.decoder.model import SpeechDecoder
    from freeze_omni.decoder.phonemes import DEFAULT_SYMBOLS

    d = disk_setup
    b2 = _train(tmp_path, d, "decoder", d / "codec", {"decoder": {**TINY, "text_input": "phonemes"}})
    cfg = Bundle(b2).config["decoder"]
    assert cfg["text_input"] == "phonemes" and cfg["symbols"] == DEFAULT_SYMBOLS  # the inventory travels along
    dec2 = SpeechDecoder.from_bundle(b2)
    assert not hasattr(dec2, "input_proj") and dec2.symbol_embedding.num_embeddings == len(DEFAULT_SYMBOLS) + 2
    b3 = _train(tmp_path, d, "prefix", b2)  # the prefix decoder still reads the LLM's hidden states
    dec3 = SpeechDecoder.from_bundle(b3)
    assert torch.equal(dec2.symbol_embedding.weight, dec3.symbol_embedding.weight)
    capsys.readouterr()
    out = tmp_path / "phonemes.wav"
    assert main(["speak", "Hello there, how are you?", "--out", str(out), "--model", str(b3), "--json"]) == 0
    r = _last_json(capsys)
    assert r["prefix"] is True and r["tokens"] > 0 and out.is_file()

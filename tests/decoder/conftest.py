"""Tiny decoders, a tiny LLM and a tiny codec bundle for the speech-decoder tests."""

import pytest
import torch


def tiny_config(**kw):
    from freeze_omni.decoder.model import DecoderConfig

    base = dict(llm_hidden=32, d_model=32, n_heads=2, ffn=64, n_layers=2, n_pre=1, n_prefix=2, codebook_size=16,
                llm_map="project", dropout=0.0)
    return DecoderConfig(**{**base, **kw})


@pytest.fixture
def make_decoder():
    """``make_decoder(**config overrides)`` -> a seeded tiny SpeechDecoder in eval mode."""
    from freeze_omni.decoder.model import SpeechDecoder

    def make(seed: int = 0, **kw):
        torch.manual_seed(seed)
        return SpeechDecoder(tiny_config(**kw)).eval()

    return make


@pytest.fixture(scope="session")
def disk_setup(tmp_path_factory):
    """A tiny LLM saved to disk, a tiny random codec bundle, assistant-voice wavs and the two manifests."""
    import numpy as np

    from freeze_omni.audio.io import save_wav
    from freeze_omni.bundle import save_component, write_bundle_config
    from freeze_omni.codec.config import codec_tiny
    from freeze_omni.codec.model import Codec
    from freeze_omni.data.manifest import write_manifest
    from freeze_omni.llm.testing import tiny_causal_lm, tiny_tokenizer

    d = tmp_path_factory.mktemp("decoder_disk")
    tok = tiny_tokenizer()
    tiny_causal_lm("qwen2", vocab_size=len(tok)).save_pretrained(d / "llm")
    tok.save_pretrained(d / "llm")
    torch.manual_seed(0)
    codec = Codec(codec_tiny())
    fname = save_component(d / "codec", "codec", codec.state_dict())
    write_bundle_config(d / "codec", {"codec": codec.cfg.to_dict(), "components": {"codec": fname}})
    rng = np.random.default_rng(0)
    sr = codec.sample_rate
    texts = ["Hello there.", "Paris is the capital of France.", "Two plus two is four."]
    rows, qa = [], []
    for i, t in enumerate(texts):
        n = int(sr * (0.4 + 0.2 * i))
        wave = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * np.arange(n) / sr) + 0.01 * rng.standard_normal(n)
        save_wav(d / f"a{i}.wav", wave.astype(np.float32), sr)
        rows.append({"id": f"a{i}", "audio": f"a{i}.wav", "text": t})
        qa.append({"id": f"q{i}", "question": f"Question {i}?", "answer": t, "audio": f"a{i}.wav"})
    qa[2]["answer_before"] = "Well, "
    write_manifest(d / "tts.jsonl", rows)
    write_manifest(d / "answers.jsonl", qa)
    return d

"""Tiny random pieces for the answer-stream tests: a SpeechLLM over a tiny LLM, a tiny decoder and codec."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def speech_llm():
    from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
    from freeze_omni.llm.model import BridgeConfig, SpeechLLM
    from freeze_omni.llm.testing import tiny_llm

    torch.manual_seed(0)
    enc = SpeechEncoder(EncoderConfig(d_model=32, n_heads=2, d_ff=64, n_layers=1, chunk_size=8, left_chunks=4,
                                      dropout=0.0))
    return SpeechLLM(enc, tiny_llm("llama"), BridgeConfig(prompt_num=3)).eval()


@pytest.fixture(scope="module")
def speech(speech_llm):
    """SpeechOutput with a tiny random decoder (with prefix decoder) and a tiny random codec."""
    from freeze_omni.codec.config import codec_tiny
    from freeze_omni.codec.model import Codec
    from freeze_omni.decoder.generator import GenerationConfig
    from freeze_omni.decoder.model import DecoderConfig, SpeechDecoder
    from freeze_omni.dialogue.speech import SpeechOutput

    torch.manual_seed(0)
    codec = Codec(codec_tiny()).eval()
    dec = SpeechDecoder(DecoderConfig(llm_hidden=32, d_model=32, n_heads=2, ffn=64, n_layers=2, n_pre=1, n_prefix=2,
                                      codebook_size=codec.codebook_size, llm_map="project", dropout=0.0)).eval()
    with torch.no_grad():  # no early EOS: every segment speaks up to its limit
        dec.out_fnn.bias[dec.cfg.eos_id] = -30.0
    return SpeechOutput(dec, codec, speech_llm.llm, GenerationConfig(top_k=2, min_tokens=20, tokens_per_char=3.0))


@pytest.fixture
def wave():
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(16000 * 2 // 5)).astype(np.float32)

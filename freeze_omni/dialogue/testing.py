"""A complete tiny random model bundle on disk (listening + speaking) for fast CPU tests of the dialogue commands.

>>> bundle = save_tiny_bundle(tmp_path)   # doctest: +SKIP
>>> main(["chat", "q.wav", "--model", str(bundle), "--out", "a.wav"])   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

CODEC_RATE = 24000  # not the 16 kHz of the input side, so that tests see which rate a wav was written at


def save_tiny_bundle(root: str | os.PathLike, speech: bool = True, seed: int = 0, state: int | None = None) -> Path:
    """Write ``root/llm`` (a tiny Qwen2 + byte tokenizer) and ``root/bundle`` (random encoder, bridge and, with
    ``speech``, a random speech decoder with prefix decoder and a tiny 24 kHz codec); returns the bundle folder.
    ``state``: the state head says this on every chunk (:func:`freeze_omni.server.testing.force_state`), e.g. for
    a server in another process.

    The decoder's EOS logit is pushed down so that every segment speaks up to its length limit (random decoders
    otherwise stop at random), which keeps the audio of the tests non-empty.
    """
    from freeze_omni.bundle import save_component, write_bundle_config
    from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import save_speech_llm
    from freeze_omni.llm.model import BridgeConfig, SpeechLLM
    from freeze_omni.llm.testing import tiny_causal_lm, tiny_tokenizer

    root = Path(root)
    tok = tiny_tokenizer()
    tiny_causal_lm("qwen2", vocab_size=len(tok), seed=seed).save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    llm = FrozenLLM.load(str(root / "llm"))
    torch.manual_seed(seed)
    enc = SpeechEncoder(EncoderConfig(d_model=32, n_heads=2, d_ff=64, n_layers=1, chunk_size=8, left_chunks=4,
                                      dropout=0.0))
    bundle = root / "bundle"
    model = SpeechLLM(enc, llm, BridgeConfig(prompt_num=3))
    if state is not None:
        from freeze_omni.server.testing import force_state

        force_state(model, state)
    save_speech_llm(model, bundle, str(root / "llm"), "Be brief.")
    if speech:
        save_tiny_speech(bundle, llm.hidden_size, seed)
    return bundle


def save_tiny_speech(bundle: str | os.PathLike, llm_hidden: int, seed: int = 0) -> None:
    """Add a random tiny decoder (prefix + pre-network) and a tiny 24 kHz codec to ``bundle``."""
    from freeze_omni.bundle import save_component, write_bundle_config
    from freeze_omni.codec.config import codec_tiny
    from freeze_omni.codec.model import Codec
    from freeze_omni.decoder.model import DecoderConfig, SpeechDecoder

    torch.manual_seed(seed)
    codec = Codec(dataclasses.replace(codec_tiny(), sample_rate=CODEC_RATE))
    dec = SpeechDecoder(DecoderConfig(llm_hidden=llm_hidden, d_model=32, n_heads=2, ffn=64, n_layers=2, n_pre=1,
                                      n_prefix=2, codebook_size=codec.codebook_size, llm_map="project",
                                      dropout=0.0))
    with torch.no_grad():
        dec.out_fnn.bias[dec.cfg.eos_id] = -30.0
    comps = {"codec": save_component(bundle, "codec", codec.state_dict(), torch.float32),
             "decoder": save_component(bundle, "decoder", dec.state_dict(), torch.float32)}
    write_bundle_config(bundle, {"codec": codec.cfg.to_dict(), "decoder": dec.cfg.to_dict(),
                                 "generation": {"top_k": 2, "min_tokens": 20, "tokens_per_char": 3.0},
                                 "components": comps})

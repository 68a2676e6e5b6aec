"""Initialise a Whisper-family :class:`SpeechEncoder` from the CTranslate2 Whisper weights shipped in pip."""

from __future__ import annotations

import re

import torch

from freeze_omni.encoder.ct2 import read_ct2, whisper_model_dir
from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder, whisper_config


def ct2_encoder_state_dict(variables: dict, n_layers: int) -> dict[str, torch.Tensor]:
    """Map CTranslate2 ``encoder/…`` variables onto :class:`SpeechEncoder` parameter names."""
    t = {k: torch.from_numpy(v.copy()) for k, v in variables.items()}
    sd = {
        "front.conv1.weight": t["encoder/conv1/weight"], "front.conv1.bias": t["encoder/conv1/bias"],
        "front.conv2.weight": t["encoder/conv2/weight"], "front.conv2.bias": t["encoder/conv2/bias"],
        "positions": t["encoder/position_encodings/encodings"],
        "after_norm.weight": t["encoder/layer_norm/gamma"], "after_norm.bias": t["encoder/layer_norm/beta"],
    }
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"encoders.{i}"
        qkv_w, qkv_b = t[f"{src}/self_attention/linear_0/weight"], t[f"{src}/self_attention/linear_0/bias"]
        for j, name in enumerate(("q", "k", "v")):
            sd[f"{dst}.self_attn.linear_{name}.weight"] = qkv_w.chunk(3, dim=0)[j]
            sd[f"{dst}.self_attn.linear_{name}.bias"] = qkv_b.chunk(3, dim=0)[j]
        sd[f"{dst}.self_attn.linear_out.weight"] = t[f"{src}/self_attention/linear_1/weight"]
        sd[f"{dst}.self_attn.linear_out.bias"] = t[f"{src}/self_attention/linear_1/bias"]
        sd[f"{dst}.norm1.weight"] = t[f"{src}/self_attention/layer_norm/gamma"]
        sd[f"{dst}.norm1.bias"] = t[f"{src}/self_attention/layer_norm/beta"]
        sd[f"{dst}.norm2.weight"] = t[f"{src}/ffn/layer_norm/gamma"]
        sd[f"{dst}.norm2.bias"] = t[f"{src}/ffn/layer_norm/beta"]
        sd[f"{dst}.feed_forward.w_1.weight"] = t[f"{src}/ffn/linear_0/weight"]
        sd[f"{dst}.feed_forward.w_1.bias"] = t[f"{src}/ffn/linear_0/bias"]
        sd[f"{dst}.feed_forward.w_2.weight"] = t[f"{src}/ffn/linear_1/weight"]
        sd[f"{dst}.feed_forward.w_2.bias"] = t[f"{src}/ffn/linear_1/bias"]
    return sd


def load_whisper_encoder(name: str = "tiny.en", **overrides) -> SpeechEncoder:
    """A Whisper-family encoder with the pretrained weights of Whisper ``name`` (``tiny.en`` or ``base``).

    ``overrides`` go to :func:`whisper_config` (e.g. ``causal_convs=False`` for the original, non-streaming
    encoder, ``chunk_size``, ``left_chunks``, ``dropout``).
    """
    path = whisper_model_dir(name) / "model.bin"
    variables = read_ct2(path, prefix="encoder/")
    n_layers = len({k.split("/")[1] for k in variables if re.match(r"encoder/layer_\d+/", k)})
    cfg: EncoderConfig = whisper_config(name, **overrides)
    if cfg.n_layers != n_layers:
        raise ValueError(f"{path}: {n_layers} layers, config says {cfg.n_layers}")
    enc = SpeechEncoder(cfg)
    enc.load_state_dict(ct2_encoder_state_dict(variables, n_layers), strict=True)
    return enc

"""A fake upstream ``checkpoints/`` folder with random weights, for tests (no real release needed).

Every tensor is written under its released name (``reference/freeze_omni_facts.md`` §4, spelled out here
independently of :mod:`freeze_omni.upstream.mapping`, misspellings included), with the release's shapes at
reduced widths, into files of the release's layout: ``torch.save`` of ``OrderedDict`` s (bf16 like the release),
``train.yaml``, ``model.json`` as ``[idim, odim, args]``, JSON ``global_cmvn`` and ``server.json``. The codec's
convolutions are weight-normalised (``weight_g`` / ``weight_v``), as released.

>>> root = write_fake_release(tmp / "checkpoints", llm_hidden=128)        # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml


@dataclass
class FakeSizes:
    """Reduced widths. ``llm_hidden`` must be ``split * dec_d`` (4 x 32 by default, as 3584 = 4 x 896)."""

    enc_d: int = 64
    enc_heads: int = 4
    enc_ff: int = 128
    enc_blocks: int = 2
    llm_hidden: int = 128
    llm_heads: int = 4
    llm_kv_heads: int = 2
    dec_d: int = 32
    dec_heads: int = 2
    dec_ffn: int = 64
    dec_blocks: int = 2
    n_codes: int = 1024
    codec_channels: int = 64  # 64 -> 32 -> 16 (global feature) -> 8 -> 4
    code_dim: int = 32
    global_code_dim: int = 2  # 8 x 2 = 16 = the second stage's channels


def _w(*shape: int, std: float = 0.05) -> torch.Tensor:
    return (torch.randn(*shape) * std).to(torch.bfloat16)


def _ln(prefix: str, d: int, out: dict) -> None:
    out[f"{prefix}.weight"] = (1 + torch.randn(d) * 0.05).to(torch.bfloat16)
    out[f"{prefix}.bias"] = _w(d, std=0.02)


def _linear(prefix: str, o: int, i: int, out: dict, bias: bool = True) -> None:
    out[f"{prefix}.weight"] = _w(o, i, std=1 / np.sqrt(i))
    if bias:
        out[f"{prefix}.bias"] = _w(o, std=0.02)


def audiollm_state(s: FakeSizes, cmvn_mean: np.ndarray, cmvn_istd: np.ndarray) -> "OrderedDict[str, torch.Tensor]":
    """``audiollm/final.pt``: encoder, ``adpter``, prompt/task embeddings, predictor head (+ 2 LLM tensors, which
    the real file does not have but a converter must ignore)."""
    d, out = s.enc_d, OrderedDict()
    out["encoder.global_cmvn.mean"] = torch.from_numpy(cmvn_mean).float()
    out["encoder.global_cmvn.istd"] = torch.from_numpy(cmvn_istd).float()
    out["encoder.enc.0.core.conv.0.weight"] = _w(d, 1, 3, 3, std=0.3)
    out["encoder.enc.0.core.conv.0.bias"] = _w(d, std=0.02)
    out["encoder.enc.0.core.conv.2.weight"] = _w(d, d, 3, 3, std=1 / np.sqrt(9 * d))
    out["encoder.enc.0.core.conv.2.bias"] = _w(d, std=0.02)
    _linear("encoder.enc.0.core.out.0", d, d * 19, out)
    _linear("encoder.enc.1.embed.0", d, d, out)
    _ln("encoder.enc.1.embed.1", d, out)
    for i in range(s.enc_blocks):
        p = f"encoder.enc.1.encoders.{i}"
        for name in ("q", "k", "v", "out"):
            _linear(f"{p}.self_attn.linear_{name}", d, d, out)
        _linear(f"{p}.self_attn.linear_pos", d, d, out, bias=False)
        out[f"{p}.self_attn.pos_bias_u"] = _w(s.enc_heads, d // s.enc_heads)
        out[f"{p}.self_attn.pos_bias_v"] = _w(s.enc_heads, d // s.enc_heads)
        _linear(f"{p}.feed_forward.w_1", s.enc_ff, d, out)
        _linear(f"{p}.feed_forward.w_2", d, s.enc_ff, out)
        _ln(f"{p}.norm1", d, out)
        _ln(f"{p}.norm2", d, out)
    _ln("encoder.enc.1.after_norm", d, out)
    out["adpter.conv1d2.weight"] = _w(2 * d, d, 5, std=1 / np.sqrt(5 * d))
    out["adpter.conv1d2.bias"] = _w(2 * d, std=0.02)
    _ln("adpter.bn2", 2 * d, out)
    _linear("adpter.project", s.llm_hidden, 2 * d, out)
    out["prompt_embeddings.weight"] = _w(25, s.llm_hidden, std=0.02)
    out["task_embeddings.weight"] = _w(20, s.llm_hidden, std=0.02)
    out["predictor_head.weight"] = _w(4, s.llm_hidden, std=0.01)
    out["predictor_head.bias"] = torch.tensor([0.0, 5.0, 0.0, 9.0]).to(torch.bfloat16)  # p1 > 0.5 over 3 of 4
    out["llm_decoder.model.norm.weight"] = torch.ones(s.llm_hidden, dtype=torch.bfloat16)
    out["llm_decoder.lm_head.weight"] = _w(8, s.llm_hidden)
    return out


def decoder_state(s: FakeSizes) -> "OrderedDict[str, torch.Tensor]":
    """``decoder/final.pt``: embedding, 3 stacks of HF Llama layers, norm, ``out_fnn``."""
    d, f, v, out = s.dec_d, s.dec_ffn, s.n_codes + 4, OrderedDict()
    out["embedding.weight"] = _w(v, d, std=0.5)
    stacks = {"layers_pre_nn": s.dec_blocks // 2, "layers": s.dec_blocks, "layers_prefix": s.dec_blocks}
    for stack, n in stacks.items():
        for i in range(n):
            p = f"{stack}.{i}"
            for name in ("q", "k", "v", "o"):
                _linear(f"{p}.self_attn.{name}_proj", d, d, out, bias=False)
            _linear(f"{p}.mlp.gate_proj", f, d, out, bias=False)
            _linear(f"{p}.mlp.up_proj", f, d, out, bias=False)
            _linear(f"{p}.mlp.down_proj", d, f, out, bias=False)
            out[f"{p}.input_layernorm.weight"] = torch.ones(d, dtype=torch.bfloat16)
            out[f"{p}.post_attention_layernorm.weight"] = torch.ones(d, dtype=torch.bfloat16)
    out["norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
    _linear("out_fnn", v, d, out)
    return out


def _wn_conv(prefix: str, o: int, i: int, k: int, out: dict, transposed: bool = False) -> None:
    v = torch.randn(i, o, k) if transposed else torch.randn(o, i, k)
    out[f"{prefix}.weight_g"] = torch.rand(v.shape[0], 1, 1) * 0.5 + 0.1
    out[f"{prefix}.weight_v"] = v
    out[f"{prefix}.bias"] = torch.randn(o) * 0.02


def codec_file(s: FakeSizes, model_json: dict) -> dict:
    """``codec/final.pt``: ``{"generator", "quantizer", "encoder"}``, the generator weight-normalised."""
    gen: dict = OrderedDict()
    c = s.codec_channels
    _wn_conv("conv_pre", c, s.code_dim, 7, gen)
    for i, (u, k) in enumerate(zip(model_json["upsample_rates"], model_json["upsample_kernel_sizes"])):
        cin, cout = c // 2 ** i, c // 2 ** (i + 1)
        _wn_conv(f"ups.{i}", cout, cin, k, gen, transposed=True)
        for j, rk in enumerate(model_json["resblock_kernel_sizes"]):
            for m in range(3):
                for conv in ("convs1", "convs2"):
                    _wn_conv(f"resblocks.{3 * i + j}.{conv}.{m}", cout, cout, rk, gen)
    _wn_conv("conv_post", 1, c // 2 ** len(model_json["upsample_rates"]), 7, gen)
    quant = OrderedDict({"quantizer_modules.0.embedding.weight": torch.randn(s.n_codes, s.code_dim) * 0.5})
    for g in range(8):
        quant[f"quantizer_modules_globaltokens.{g}.embedding.weight"] = torch.randn(s.n_codes, s.global_code_dim)
    enc = OrderedDict({"conv_pre.weight_g": torch.rand(32, 1, 1), "conv_pre.weight_v": torch.randn(32, 1, 7)})
    return {"generator": gen, "quantizer": quant, "encoder": enc}


def train_yaml(s: FakeSizes) -> dict:
    """``audiollm/train.yaml`` with the release's structure and keys (reduced widths)."""
    d = s.enc_d
    return {
        "encoder_conf": {
            "overview_conf": {"encoder-input-dim": 80, "encoder-layer-config": "subsampling-transformer",
                              "encoder-output-dim": d},
            "para_conf": {
                "subsampling": {"subsampling-dropout-rate": 0.1, "subsampling-input-dim": 80,
                                "subsampling-output-dim": d, "subsampling-rate": 4},
                "transformer": {"transformer-attention-dim": d, "transformer-attention-dropout-rate": 0.0,
                                "transformer-attention-heads": s.enc_heads, "transformer-chunk_size": 4,
                                "transformer-concat-after": False, "transformer-dropout-rate": 0.1,
                                "transformer-dynamic-chunks": False, "transformer-input-dim": d,
                                "transformer-input-layer": "linear", "transformer-left_chunks": 16,
                                "transformer-linear-units": s.enc_ff, "transformer-normalize-before": True,
                                "transformer-num-blocks": s.enc_blocks, "transformer-output-dim": d,
                                "transformer-pos-enc-class": "rel-enc", "transformer-positional-dropout-rate": 0.1,
                                "transformer-positionwise-layer-type": "linear"}}},
        "input_dim": 80, "is_json_cmvn": True, "output_dim": 5538,
        "model_conf": {
            "activation_func": "gelu", "add_audio_bos_eos": True, "add_prompt_before": True,
            "adpter_type": "subsampling",
            "chat_template": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                             "<audio><|im_end|>\n<|im_start|>assistant\n",
            "chunk_size": 2, "enc_out_dim": d, "freeze_adpter": True, "freeze_encoder": True, "freeze_llm": True,
            "kernel_size": 5, "llm_embed_dim": s.llm_hidden, "llm_head_num": s.llm_heads, "llm_path": None,
            "norm": "layer", "num_key_value_heads": s.llm_kv_heads, "predict_usr_state": 4, "prompt_finetune": True,
            "prompt_num": 25, "task_num": 20, "task_type": "prompt_finetune"},
        "dataset_conf": {"tokenize_conf": {"eod_id": 151645}, "tokenize_type": "Qwen"},
    }


def decoder_json(s: FakeSizes) -> list:
    """``decoder/model.json``: ``[idim, odim, args]``."""
    return [s.dec_d, s.n_codes, {
        "encoder_input_dim": s.dec_d, "encoder_output_dim": s.dec_d, "encoder_layer_config": "transformer",
        "idim": s.dec_d, "odim": s.n_codes, "kv_cache_prefix_finetune": 1, "transformer_attention_dim": s.dec_d,
        "transformer_attention_heads": s.dec_heads, "transformer_linear_units": s.dec_ffn,
        "transformer_num_blocks": s.dec_blocks, "transformer_dropout_rate": 0.1,
        "transformer_attention_dropout_rate": 0.1, "encoder_drop_rate": 0.1, "train_dtype": "bfloat16"}]


def codec_json(s: FakeSizes) -> dict:
    """``codec/model.json`` (the release's keys; channels reduced)."""
    return {"resblock": "1", "upsample_rates": [8, 5, 5, 3], "upsample_kernel_sizes": [16, 11, 11, 5],
            "upsample_initial_channel": s.codec_channels, "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "sampling_rate": 24000,
            "n_code_groups": 1, "residul_layer": 1, "n_codes": s.n_codes, "global_code_num": 8,
            "global_feature_conv": [128, 64, 128, 3, 1], "global_tokens": [473, 975, 419, 219, 565, 121, 550, 616],
            "hop_size": 240, "num_mels": 80}


SERVER_JSON = {"decoder_first_chunk_size": 20, "decoder_chunk_size": 40, "decoder_chunk_overlap_size": 10,
               "decoder_top_k": 2, "decoder_penalty_window_size": -1, "decoder_penalty": 1.1, "decoder_N": 2401,
               "decoder_seg_threshold_first_pack": 0.1, "decoder_seg_threshold": 0.015}


def write_fake_release(root: str | Path, sizes: FakeSizes | None = None, seed: int = 0) -> Path:
    """Write the whole fake ``checkpoints/`` folder; returns its path."""
    s = sizes or FakeSizes()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    root = Path(root)
    for sub in ("audiollm", "decoder", "codec"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    feats = rng.normal(10.0, 3.0, size=(500, 80))  # log-fbank-like statistics
    stats = {"mean_stat": feats.sum(0).tolist(), "var_stat": (feats ** 2).sum(0).tolist(), "frame_num": 500}
    (root / "audiollm/global_cmvn").write_text(json.dumps(stats))
    mean = feats.mean(0)
    istd = 1 / np.sqrt(np.maximum((feats ** 2).mean(0) - mean ** 2, 1e-20))
    with open(root / "audiollm/train.yaml", "w") as f:
        yaml.safe_dump(train_yaml(s), f, sort_keys=True)
    torch.save(audiollm_state(s, mean.astype(np.float32), istd.astype(np.float32)), root / "audiollm/final.pt")
    (root / "decoder/model.json").write_text(json.dumps(decoder_json(s), indent=4))
    torch.save({"model": decoder_state(s)}, root / "decoder/final.pt")
    cj = codec_json(s)
    (root / "codec/model.json").write_text(json.dumps(cj, indent=4))
    torch.save(codec_file(s, cj), root / "codec/final.pt")
    (root / "server.json").write_text(json.dumps(SERVER_JSON, indent=4))
    return root

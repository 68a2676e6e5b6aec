"""Reading the upstream release's ``checkpoints/`` folder and translating its configs into ours.

Layout (``reference/freeze_omni_facts.md`` §4)::

    checkpoints/
      server.json                 decoder streaming parameters
      audiollm/train.yaml         encoder / adapter / LLM-interface config
      audiollm/global_cmvn        JSON CMVN statistics
      audiollm/final.pt           encoder + adapter + prompt/task embeddings + state head (pickled OrderedDict)
      decoder/model.json          [idim, odim, {args}]
      decoder/final.pt            speech decoder (bare state dict, or {"model": state dict})
      codec/model.json            TiCodec hyper-parameters
      codec/final.pt              {"generator": ..., "quantizer": ..., "encoder": ...}

Every function here is pure translation with explicit checks: a config value we cannot reproduce raises
:class:`UpstreamError` naming the file and key, rather than converting into a model that behaves differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from freeze_omni.audio.cmvn import GlobalCMVN
from freeze_omni.codec.ticodec import TiCodecConfig
from freeze_omni.decoder.model import DecoderConfig
from freeze_omni.encoder.encoder import EncoderConfig
from freeze_omni.llm.chat import UPSTREAM_SYSTEM_PROMPT
from freeze_omni.llm.model import EMBEDS_PER_CHUNK, BridgeConfig
from freeze_omni.settings import PipelineSettings

FILES = ("server.json", "audiollm/train.yaml", "audiollm/global_cmvn", "audiollm/final.pt", "decoder/model.json",
         "decoder/final.pt", "codec/model.json", "codec/final.pt")

UPSTREAM_SAMPLING = {"temperature": 0.8, "top_k": 20, "top_p": 0.8, "max_new_tokens": 500}
"""Answer sampling of the shipped server script (facts §1.5; not stored in the checkpoint)."""
UPSTREAM_DECODER_MAX_TOKENS = 1000  # AR steps per segment (facts §1.7)


class UpstreamError(ValueError):
    """The upstream folder is incomplete, or holds something this converter cannot reproduce."""


@dataclass
class Release:
    """The parsed configuration files of an upstream ``checkpoints/`` folder."""

    root: Path
    train: dict[str, Any]
    decoder_json: list[Any]
    codec_json: dict[str, Any]
    server: dict[str, Any]
    cmvn: GlobalCMVN

    def path(self, name: str) -> Path:
        return self.root / name


def open_release(root: str | Path) -> Release:
    """Check that every file of the layout exists (all missing ones are named at once) and parse the configs."""
    root = Path(root)
    if not root.is_dir():
        raise UpstreamError(f"{root}: not a folder (expected the upstream `checkpoints/` folder)")
    absent = [f for f in FILES if not (root / f).is_file()]
    if absent:
        raise UpstreamError(f"{root}: not an upstream Freeze-Omni checkpoints folder; missing {absent}")
    try:
        with open(root / "audiollm/train.yaml") as f:
            train = yaml.safe_load(f) or {}
        decoder_json = json.loads((root / "decoder/model.json").read_text())
        codec_json = json.loads((root / "codec/model.json").read_text())
        server = json.loads((root / "server.json").read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UpstreamError(f"{root}: cannot parse a config file: {e}") from e
    if not (isinstance(decoder_json, list) and len(decoder_json) == 3 and isinstance(decoder_json[2], dict)):
        raise UpstreamError(f"{root}/decoder/model.json: expected [idim, odim, {{args}}]")
    try:
        cmvn = GlobalCMVN.load(root / "audiollm/global_cmvn")
    except ValueError as e:
        raise UpstreamError(str(e)) from e
    return Release(root, train, decoder_json, codec_json, server, cmvn)


def load_pt(path: Path) -> dict[str, Any]:
    """A released ``.pt`` file (a pickled dict of tensors), loaded safely: ``weights_only=True`` on the CPU."""
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # unpickling errors come in many types
        raise UpstreamError(f"{path}: cannot load with torch.load(weights_only=True): {e}") from e
    if not isinstance(obj, dict):
        raise UpstreamError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _get(d: dict[str, Any], where: str, *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise UpstreamError(f"{where}: missing key {'.'.join(keys)}")
        cur = cur[k]
    return cur


def _require(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise UpstreamError(f"{where}: {what} (not supported by this converter)")


# ---------------------------------------------------------------------------------------------- audiollm
def encoder_config(train: dict[str, Any]) -> EncoderConfig:
    """``encoder_conf`` of ``train.yaml`` -> our upstream-family :class:`EncoderConfig`, with the streaming
    position lag of the released code switched on (``upstream_pos_lag``, facts §1.3)."""
    w = "audiollm/train.yaml encoder_conf"
    ov = _get(train, w, "encoder_conf", "overview_conf")
    sub = _get(train, w, "encoder_conf", "para_conf", "subsampling")
    tr = _get(train, w, "encoder_conf", "para_conf", "transformer")
    _require(ov.get("encoder-layer-config") == "subsampling-transformer", w,
             f"encoder-layer-config {ov.get('encoder-layer-config')!r}")
    _require(int(sub.get("subsampling-rate", 4)) == 4, w, "subsampling-rate != 4")
    _require(tr.get("transformer-pos-enc-class", "rel-enc") == "rel-enc", w, "pos-enc-class other than rel-enc")
    _require(tr.get("transformer-normalize-before", True) is True, w, "normalize-before false")
    _require(tr.get("transformer-concat-after", False) is False, w, "concat-after true")
    _require(tr.get("transformer-input-layer", "linear") == "linear", w, "input-layer other than linear")
    _require(tr.get("transformer-positionwise-layer-type", "linear") == "linear", w,
             "positionwise-layer-type other than linear")
    d = int(tr["transformer-attention-dim"])
    dims = (sub.get("subsampling-output-dim", d), tr.get("transformer-input-dim", d),
            tr.get("transformer-output-dim", d), ov.get("encoder-output-dim", d))
    _require(all(int(x) == d for x in dims), w, f"dimensions {dims} differ from attention-dim {d}")
    return EncoderConfig(family="upstream", input_dim=int(ov.get("encoder-input-dim", 80)), d_model=d,
                         n_heads=int(tr["transformer-attention-heads"]), d_ff=int(tr["transformer-linear-units"]),
                         n_layers=int(tr["transformer-num-blocks"]), chunk_size=int(tr["transformer-chunk_size"]),
                         left_chunks=int(tr["transformer-left_chunks"]),
                         dropout=float(tr.get("transformer-dropout-rate", 0.1)),
                         attention_dropout=float(tr.get("transformer-attention-dropout-rate", 0.0)),
                         upstream_pos_lag=True)


def bridge_config(train: dict[str, Any]) -> BridgeConfig:
    """``model_conf`` of ``train.yaml`` -> :class:`BridgeConfig` (adapter with upstream's 4-frame cache, 4 state
    outputs)."""
    w = "audiollm/train.yaml model_conf"
    mc = _get(train, w, "model_conf")
    _require(mc.get("adpter_type") == "subsampling", w, f"adpter_type {mc.get('adpter_type')!r}")
    _require(mc.get("activation_func", "gelu") == "gelu", w, f"activation_func {mc.get('activation_func')!r}")
    _require(mc.get("norm", "layer") == "layer", w, f"norm {mc.get('norm')!r}")
    enc, llm = int(mc["enc_out_dim"]), int(mc["llm_embed_dim"])
    _require(4 * enc >= llm, w, "4 * enc_out_dim < llm_embed_dim (the two-conv adapter branch)")
    _require(int(mc.get("chunk_size", EMBEDS_PER_CHUNK)) == EMBEDS_PER_CHUNK, w,
             f"chunk_size {mc.get('chunk_size')} LLM positions per chunk")
    _require(bool(mc.get("add_prompt_before", True)) and bool(mc.get("prompt_finetune", True)), w,
             "prompt embeddings not placed before the audio")
    n_states = int(mc.get("predict_usr_state", 0))
    _require(n_states >= 3, w, f"predict_usr_state {n_states} (needs a state head with >= 3 outputs)")
    return BridgeConfig(adapter_kernel=int(mc.get("kernel_size", 5)), adapter_stride=2, upstream_left_pad=True,
                        prompt_num=int(mc.get("prompt_num", 25)), task_num=int(mc.get("task_num", 20)),
                        n_states=n_states)


def system_prompt(train: dict[str, Any]) -> str:
    """The role text inside ``model_conf.chat_template`` (``"You are a helpful assistant."`` upstream)."""
    tpl = str((train.get("model_conf") or {}).get("chat_template") or "")
    head = "<|im_start|>system\n"
    if head in tpl and "<|im_end|>" in tpl[tpl.index(head):]:
        start = tpl.index(head) + len(head)
        return tpl[start:tpl.index("<|im_end|>", start)].strip()
    return UPSTREAM_SYSTEM_PROMPT


def check_llm(train: dict[str, Any], llm_config: dict[str, Any], llm_dir: Path) -> int:
    """Check that the ``--llm`` folder's ``config.json`` has the width and heads the checkpoint was trained on;
    returns the hidden size."""
    mc = train.get("model_conf") or {}
    want = {"hidden_size": mc.get("llm_embed_dim"), "num_attention_heads": mc.get("llm_head_num"),
            "num_key_value_heads": mc.get("num_key_value_heads")}
    bad = {k: (llm_config.get(k), v) for k, v in want.items() if v is not None and llm_config.get(k) != int(v)}
    if bad:
        raise UpstreamError(f"{llm_dir}: this LLM does not match audiollm/train.yaml "
                            + ", ".join(f"{k} {got} (expected {exp})" for k, (got, exp) in bad.items())
                            + "; upstream needs Qwen2-7B-Instruct")
    return int(llm_config["hidden_size"])


# ---------------------------------------------------------------------------------------------- decoder
def decoder_config(decoder_json: list[Any], llm_hidden: int) -> DecoderConfig:
    """``decoder/model.json`` -> :class:`DecoderConfig`: shared layers = ``transformer_num_blocks``, pre-network =
    half of them, prefix decoder = all of them when ``kv_cache_prefix_finetune`` is 1; LLM vectors are split into
    ``llm_hidden / idim`` decoder positions (no projection)."""
    w = "decoder/model.json"
    idim, odim, a = decoder_json
    _require(a.get("encoder_layer_config", "transformer") == "transformer", w, "encoder_layer_config")
    d = int(a.get("transformer_attention_dim", idim))
    _require(d == int(idim) == int(a.get("encoder_input_dim", idim)), w, f"idim {idim} != attention dim {d}")
    _require(llm_hidden % d == 0, w, f"LLM width {llm_hidden} is not a multiple of idim {d}")
    blocks = int(a["transformer_num_blocks"])
    _require(blocks >= 2, w, "transformer_num_blocks < 2 (no pre-network layer)")
    return DecoderConfig(llm_hidden=llm_hidden, d_model=d, n_heads=int(a["transformer_attention_heads"]),
                         ffn=int(a["transformer_linear_units"]), n_layers=blocks, n_pre=blocks // 2,
                         n_prefix=blocks, codebook_size=int(odim), llm_map="split",
                         dropout=float(a.get("transformer_dropout_rate", 0.1)),
                         use_prefix=int(a.get("kv_cache_prefix_finetune", 0)) == 1, use_pre_nn=True)


# ---------------------------------------------------------------------------------------------- codec
def codec_config(codec_json: dict[str, Any], quantizer: dict[str, Any]) -> TiCodecConfig:
    """``codec/model.json`` -> :class:`TiCodecConfig`; the code and global-code widths are read from the
    quantizer tables' shapes (512 and 16 upstream)."""
    code = quantizer.get("quantizer_modules.0.embedding.weight")
    glob = quantizer.get("quantizer_modules_globaltokens.0.embedding.weight")
    try:
        return TiCodecConfig.from_model_json(codec_json, code_dim=int(code.shape[1]) if code is not None else 512,
                                             global_code_dim=int(glob.shape[1]) if glob is not None else None)
    except (KeyError, ValueError) as e:
        raise UpstreamError(f"codec/model.json: {e}") from e


# ---------------------------------------------------------------------------------------------- server.json
def pipeline_settings(server: dict[str, Any], sample_rate: int) -> PipelineSettings:
    """``server.json`` (+ the shipped scripts' constants) -> our :class:`PipelineSettings`.

    Decoder: top-k from ``decoder_top_k``, no temperature, at most 1000 tokens per segment whatever its length.
    Codec windows: ``decoder_first_chunk_size`` / ``decoder_chunk_size`` new tokens with
    ``decoder_chunk_overlap_size`` tokens of context; splicing window ``decoder_N`` samples and thresholds
    ``decoder_seg_threshold_first_pack`` / ``decoder_seg_threshold``. Text: upstream's segmentation thresholds and
    normalisation. One deliberate difference: special decoder ids (BOS/SOS/PAD) are never sampled
    (``filter_special``); upstream does not filter them, but its codec cannot decode them either.
    """
    w = "server.json"
    if int(server.get("decoder_penalty_window_size", -1)) > 0:
        raise UpstreamError(f"{w}: decoder_penalty_window_size > 0 (repetition penalty) is not implemented")
    n = int(server.get("decoder_N", 2401))
    return PipelineSettings(
        sampling=dict(UPSTREAM_SAMPLING),
        generation={"top_k": int(server.get("decoder_top_k", 2)), "max_tokens": UPSTREAM_DECODER_MAX_TOKENS,
                    "min_tokens": UPSTREAM_DECODER_MAX_TOKENS, "filter_special": True},
        streaming={"first_chunk": int(server.get("decoder_first_chunk_size", 20)),
                   "chunk": int(server.get("decoder_chunk_size", 40)),
                   "context": int(server.get("decoder_chunk_overlap_size", 10)), "splice": True,
                   "first_threshold": float(server.get("decoder_seg_threshold_first_pack", 0.1)),
                   "threshold": float(server.get("decoder_seg_threshold", 0.015)),
                   "splice_window_ms": (n - 1) * 1000.0 / sample_rate},
        segmenter={"min_tokens": 4, "comma_after": 20, "first_allows_comma": True, "first_max_tokens": 0},
        tts_lang="upstream")

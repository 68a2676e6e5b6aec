"""Upstream release -> our model bundle (``freeze-omni convert``).

:func:`load_upstream` reads the ``checkpoints/`` folder and the ``--llm`` folder's ``config.json``, builds our
modules' expected tensor names and shapes on the meta device (no memory), maps every released tensor onto them
(:mod:`freeze_omni.upstream.mapping`) and returns the component state dicts, the bundle configuration and a
:class:`~freeze_omni.upstream.mapping.MappingReport`. :func:`convert` refuses to write anything unless the report
is clean (zero missing, unexpected or mismatched tensors), then writes a normal bundle: ``encoder``, ``bridge``,
``decoder``, ``codec`` safetensors (bf16 by default, the release's own precision; CMVN statistics stay fp32) and
``bundle.yaml`` with every upstream setting (encoder with ``upstream_pos_lag``, bridge with
``upstream_left_pad`` and 4 state outputs, Qwen2 chat framing and system prompt, decoder split mapping, TiCodec
config with the fixed global tokens, the pipeline settings from ``server.json`` (``sampling``, ``generation``,
``streaming``, ``segmenter``, ``tts_lang``: :mod:`freeze_omni.settings`), and the raw upstream
configs under ``upstream:`` for the record). The LLM is referenced by path, never copied. The converted bundle
then loads and runs through the same code as our own bundles.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from freeze_omni.bundle import save_component, write_bundle_config
from freeze_omni.codec.ticodec import TiCodec, fold_weight_norm
from freeze_omni.decoder.model import SpeechDecoder
from freeze_omni.encoder.encoder import SpeechEncoder
from freeze_omni.llm.adapter import Adapter
from freeze_omni.llm.bridge import Bridge
from freeze_omni.upstream import mapping
from freeze_omni.upstream.release import (UpstreamError, bridge_config, check_llm, codec_config, decoder_config,
                                          encoder_config, load_pt, open_release, pipeline_settings, system_prompt)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
KEEP_FP32 = {"encoder": ("front.cmvn_mean", "front.cmvn_istd")}
FILES = {"encoder": "audiollm/final.pt", "bridge": "audiollm/final.pt", "decoder": "decoder/final.pt",
         "codec": "codec/final.pt"}


@dataclass
class Converted:
    """An upstream release mapped onto our components (not yet written)."""

    config: dict[str, Any]
    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    report: mapping.MappingReport = field(default_factory=mapping.MappingReport)


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Size]:
    return {prefix + k: v.shape for k, v in module.state_dict().items()}


def _llm_config(llm_dir: Path) -> dict[str, Any]:
    path = llm_dir / "config.json"
    if not path.is_file():
        raise UpstreamError(f"--llm {llm_dir}: no config.json (expected a local Qwen2-7B-Instruct folder)")
    cfg = json.loads(path.read_text())
    return cfg.get("text_config", cfg)


def load_upstream(root: str | Path, llm_dir: str | Path) -> Converted:
    """Read and map an upstream ``checkpoints/`` folder (see the module docstring); raises
    :class:`UpstreamError` for an incomplete folder or a config this code cannot reproduce."""
    rel = open_release(root)
    llm_dir = Path(llm_dir).expanduser().resolve()
    llm_hidden = check_llm(rel.train, _llm_config(llm_dir), llm_dir)
    enc_cfg, br_cfg = encoder_config(rel.train), bridge_config(rel.train)
    if int(rel.train["model_conf"]["enc_out_dim"]) != enc_cfg.d_model:
        raise UpstreamError("audiollm/train.yaml: model_conf.enc_out_dim differs from the encoder width")
    dec_cfg = decoder_config(rel.decoder_json, llm_hidden)

    codec_file = load_pt(rel.path("codec/final.pt"))
    for part in ("generator", "quantizer"):
        if not isinstance(codec_file.get(part), dict):
            raise UpstreamError(f"{rel.path('codec/final.pt')}: no {part!r} state dict (keys {sorted(codec_file)})")
    codec_cfg = codec_config(rel.codec_json, codec_file["quantizer"])

    with torch.device("meta"):  # names and shapes only
        expected = {"encoder": _shapes(SpeechEncoder(enc_cfg)),
                    "bridge": {**_shapes(Adapter(enc_cfg.d_model, llm_hidden, 2, br_cfg.adapter_kernel,
                                                 upstream_left_pad=True), "adapter."),
                               **_shapes(Bridge(llm_hidden, br_cfg.prompt_num, br_cfg.task_num, br_cfg.n_states),
                                         "bridge.")},
                    "decoder": _shapes(SpeechDecoder(dec_cfg)),
                    "codec": _shapes(TiCodec(codec_cfg))}

    report, out = mapping.MappingReport(), {}
    mapping.map_file(load_pt(rel.path("audiollm/final.pt")), "audiollm/final.pt", mapping.AUDIOLLM_RULES,
                     expected, report, out)
    dec = load_pt(rel.path("decoder/final.pt"))
    dec = dec["model"] if isinstance(dec.get("model"), dict) else dec
    mapping.map_file(dec, "decoder/final.pt", mapping.DECODER_RULES, expected, report, out)
    codec_flat = {f"{part}.{k}": v for part in ("generator", "quantizer")
                  for k, v in fold_weight_norm(codec_file[part]).items()}
    mapping.map_file(codec_flat, "codec/final.pt", mapping.CODEC_RULES, expected, report, out)
    if isinstance(codec_file.get("encoder"), dict):
        report.ignored["codec/final.pt"] = report.ignored.get("codec/final.pt", 0) + len(codec_file["encoder"])
    for extra in sorted(set(codec_file) - {"generator", "quantizer", "encoder"}):
        report.unexpected.append(f"codec/final.pt:{extra}")
    rules = {"encoder": mapping.AUDIOLLM_RULES, "bridge": mapping.AUDIOLLM_RULES,
             "decoder": mapping.DECODER_RULES, "codec": mapping.CODEC_RULES}
    mapping.finish(expected, out, {c: (FILES[c], rules[c]) for c in expected}, report)
    _fill_cmvn(out.setdefault("encoder", {}), rel.cmvn, report)

    config = {
        "encoder": dataclasses.asdict(enc_cfg),
        "bridge": dataclasses.asdict(br_cfg),
        "llm": {"ref": str(llm_dir), "system_prompt": system_prompt(rel.train), "framing": "qwen2_upstream",
                "hidden_size": llm_hidden, "fingerprint": None},
        "decoder": dec_cfg.to_dict(),
        "codec": codec_cfg.to_dict(),
        **pipeline_settings(rel.server, codec_cfg.sampling_rate).to_sections(),
        "upstream": {"source": str(Path(root).resolve()), "server": rel.server,
                     "model_conf": rel.train.get("model_conf"), "encoder_conf": rel.train.get("encoder_conf"),
                     "decoder_args": rel.decoder_json[2], "codec": rel.codec_json},
    }
    return Converted(config, out, report)


def _fill_cmvn(encoder: dict[str, torch.Tensor], cmvn: Any, report: mapping.MappingReport) -> None:
    """CMVN buffers from ``audiollm/global_cmvn`` when the checkpoint lacks them; note a disagreement."""
    from_file = {"front.cmvn_mean": torch.from_numpy(cmvn.mean), "front.cmvn_istd": torch.from_numpy(cmvn.istd)}
    for k, v in from_file.items():
        if k not in encoder:
            encoder[k] = v
        elif not torch.allclose(encoder[k].float(), v, rtol=1e-3, atol=1e-3):
            report.notes.append(f"{k}: audiollm/final.pt and audiollm/global_cmvn differ; using final.pt "
                                "(as upstream)")


def write_bundle(conv: Converted, out: str | Path, dtype: str = "bf16") -> dict[str, Any]:
    """Write a converted release as a bundle folder; returns the bundle config."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out = Path(out)
    comps = {name: save_component(out, name, state, DTYPES[dtype], keep_fp32=KEEP_FP32.get(name, ()))
             for name, state in conv.components.items()}
    return write_bundle_config(out, {**conv.config, "components": comps})


def convert(root: str | Path, llm_dir: str | Path, out: str | Path, dtype: str = "bf16"
            ) -> tuple[mapping.MappingReport, dict[str, Any] | None]:
    """Convert and write, or write nothing when any tensor does not fit: ``(report, bundle config or None)``."""
    conv = load_upstream(root, llm_dir)
    if not conv.report.ok:
        return conv.report, None
    return conv.report, write_bundle(conv, out, dtype)

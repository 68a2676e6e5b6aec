"""Output stages 2 (`freeze-omni train decoder`) and 3 (`freeze-omni train prefix`): the speech decoder.

* ``decoder`` (stage 2): pre-network + shared NAR/AR layers (+ embedding, norm, output layer, text projection) learn
  text -> codec tokens; the text is tokenised and embedded by the frozen LLM's own embedding table (upstream), or,
  with ``decoder: {text_input: phonemes}``, turned into espeak-ng phonemes with their own embedding; no prefix.
* ``prefix`` (stage 3): only the NAR prefix decoder (+ its projection) trains, fed with the LLM final hidden states
  of answers the frozen LLM wrote, spoken in the assistant voice. Everything else is frozen and kept in eval mode,
  the shared input dropout included (the prefix layers keep their attention dropout); upstream leaves
  ``layers_pre_nn`` trainable too: ``train_pre_nn: true``.

Codec tokens (and, for ``prefix``, the LLM hidden states) are computed once and cached beside the manifest
(:mod:`freeze_omni.train.decoder_data`). At every checkpoint the bundle gets ``decoder.safetensors`` and a
``decoder:`` section, plus the codec and the ``llm`` reference when the init bundle lacks them.

Config (YAML)::

    init_bundle: exp/tiny-en/codec/bundle   # copied into the export; holds the codec (stage 3: the stage-2 bundle)
    codec_bundle: ...                      # optional: take the codec from here instead
    llm: smollm2-135m-instruct             # default: the bundle's, else the built-in
    system_prompt: "..."                   # default: the bundle's (stage 3 frames the answers with it)
    decoder: {preset: tiny_en}             # stage 2: preset + overrides; stage 3: overrides of the bundle's config
    guided_attention: {weight: 1.0, sigma: 0.2, layers: [0, 1], heads: 2}   # optional (model.GuidedAttention)
    code_noise: 0.0                        # stage 2: share of the fed code history replaced by random codes
    train_pre_nn: false                    # stage 3 only
    data: {train: M.jsonl, eval: E.jsonl, eval_limit: 200, max_seconds: 12}
    train: {...}                           # TrainConfig
    export: {bundle: exp/tiny-en/decoder/bundle}
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from freeze_omni.bundle import Bundle, save_component, write_bundle_config
from freeze_omni.decoder.model import DecoderConfig, GuidedAttention, SpeechDecoder, build_decoder_config
from freeze_omni.decoder.segmenter import normalize_tts

log = logging.getLogger(__name__)
PREFIX_PARTS = ("layers_prefix.", "prefix_proj.")


class DecoderStage(nn.Module):
    """The decoder plus the frozen LLM that embeds the text; ``forward(batch)`` -> the decoder's loss dict.

    Args:
        decoder: the speech decoder.
        llm: the frozen LLM (its weights stay out of ``parameters()`` and checkpoints).
        stage: ``"decoder"`` (all but the prefix decoder trains) or ``"prefix"`` (only the prefix decoder).
        train_pre_nn: stage 3: also train the pre-network (upstream's code does).
    """

    def __init__(self, decoder: SpeechDecoder, llm: nn.Module, stage: str, train_pre_nn: bool = False,
                 guide: GuidedAttention | None = None, code_noise: float = 0.0) -> None:
        super().__init__()
        self.decoder, self.llm, self.stage, self.guide, self.code_noise = decoder, llm, stage, guide, code_noise
        if stage not in ("decoder", "prefix"):
            raise ValueError(f"stage must be 'decoder' or 'prefix', got {stage!r}")
        if stage == "decoder":
            def trained(name: str) -> bool:
                return not name.startswith(PREFIX_PARTS)
        else:
            parts = PREFIX_PARTS + (("layers_pre_nn.",) if train_pre_nn else ())
            # Only the K/V of the last prefix layer are used: its queries, output, MLP and second norm are dead
            # weight (kept for upstream's layout), frozen so that DDP finds no unused parameter.
            last = f"layers_prefix.{len(decoder.layers_prefix) - 1}."
            dead = tuple(last + x for x in ("self_attn.q_proj.", "self_attn.o_proj.", "post_attention_layernorm.",
                                            "mlp."))

            def trained(name: str) -> bool:
                return name.startswith(parts) and not name.startswith(dead)
        for name, p in decoder.named_parameters():
            p.requires_grad_(trained(name))

    def train(self, mode: bool = True) -> "DecoderStage":
        super().train(mode)
        if self.stage == "prefix":  # frozen parts (and the shared input dropout) as at inference
            for mod in self.decoder.children():
                if not any(p.requires_grad for p in mod.parameters()):
                    mod.eval()
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.training and self.code_noise > 0:  # history with wrong tokens, as free generation meets it
            codes = batch["codes"]
            wrong = torch.rand(codes.shape, device=codes.device) < self.code_noise
            noise = torch.randint_like(codes, self.decoder.cfg.codebook_size)
            batch = {**batch, "input_codes": torch.where(wrong, noise, codes)}
        if self.decoder.cfg.text_input == "phonemes":  # text_ids are phoneme ids
            return self.decoder(batch, self.guide)
        with torch.no_grad():
            text_embeds = self.llm.embed(batch["text_ids"])  # [B, L, H], frozen table
        return self.decoder({**batch, "text_embeds": text_embeds}, self.guide)


class DecoderDataset(torch.utils.data.Dataset):
    """Items ``{"text_ids", "codes"[, "hidden"]}`` (rows whose audio failed or is too long are dropped)."""

    def __init__(self, rows: list[dict], items: list[Optional[dict]], tokenize: Any, text_key: str,
                 max_codes: Optional[int] = None) -> None:
        self.items = []
        for row, item in zip(rows, items):
            if item is None or (max_codes and len(item["codes"]) > max_codes):
                continue
            ids = tokenize(normalize_tts(row[text_key]))
            if ids and len(item["codes"]) and ("hidden" not in item or len(item["hidden"])):
                self.items.append({"text_ids": ids, **item})
        if not self.items:
            raise ValueError("no usable rows (all audio unreadable, too long, or texts empty)")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class DecoderCollate:
    """Pads text ids (0), codes (PAD) and hidden states (0); adds lengths and ``audio_seconds``."""

    def __init__(self, pad_id: int, frame_rate: int, use_hidden: bool) -> None:
        self.pad_id, self.frame_rate, self.use_hidden = pad_id, frame_rate, use_hidden

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        pad = nn.utils.rnn.pad_sequence
        batch = {
            "text_ids": pad([torch.tensor(it["text_ids"]) for it in items], batch_first=True),
            "text_lens": torch.tensor([len(it["text_ids"]) for it in items]),
            "codes": pad([it["codes"].long() for it in items], batch_first=True, padding_value=self.pad_id),
            "code_lens": torch.tensor([len(it["codes"]) for it in items]),
            "audio_seconds": sum(len(it["codes"]) for it in items) / self.frame_rate,
        }
        if self.use_hidden:
            batch["prefix"] = pad([it["hidden"].float() for it in items], batch_first=True)
            batch["prefix_lens"] = torch.tensor([len(it["hidden"]) for it in items])
        return batch


def export_decoder(decoder: SpeechDecoder, bundle_dir: str | Path, init: Bundle, codec_src: Bundle,
                   llm_section: dict[str, Any]) -> None:
    """Write ``decoder.safetensors`` + the ``decoder:`` section into ``bundle_dir`` (started, once, as a copy of
    ``init``; the codec and ``llm`` section added when missing)."""
    dst = Path(bundle_dir)
    if not (dst / "bundle.yaml").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        for fname in init.config.get("components", {}).values():
            shutil.copy2(init.path / fname, dst / fname)
        write_bundle_config(dst, {k: v for k, v in init.config.items() if k != "format"})
    out = Bundle(dst)
    updates: dict[str, Any] = {"components": {}}
    if not out.has("codec"):
        fname = codec_src.config["components"]["codec"]
        shutil.copy2(codec_src.path / fname, dst / fname)
        updates["components"]["codec"] = fname
        updates["codec"] = codec_src.config["codec"]
    if not out.config.get("llm"):
        updates["llm"] = llm_section
    updates["components"]["decoder"] = save_component(dst, "decoder", decoder.state_dict())
    updates["decoder"] = decoder.cfg.to_dict()
    write_bundle_config(dst, updates)


def load_stage_decoder(config: dict, stage: str, init: Bundle, llm_hidden: int, codebook_size: int
                       ) -> SpeechDecoder:
    """Stage 2: a fresh decoder from ``config["decoder"]``. Stage 3: the init bundle's decoder with a prefix decoder
    added (``config["decoder"]`` overrides, e.g. dropout)."""
    if stage == "decoder":
        cfg = build_decoder_config(config.get("decoder"), llm_hidden, codebook_size)
        cfg.use_prefix = False
        return SpeechDecoder(DecoderConfig.from_dict(cfg.to_dict()))
    if not init.has("decoder"):
        raise ValueError(f"{init.path}: stage 'prefix' needs a bundle with a trained decoder (run stage 'decoder')")
    cfg = DecoderConfig.from_dict({**init.config["decoder"], **(config.get("decoder") or {}), "use_prefix": True})
    if cfg.llm_hidden != llm_hidden:
        raise ValueError(f"the bundle's decoder expects LLM width {cfg.llm_hidden}, the LLM has {llm_hidden}")
    decoder = SpeechDecoder(cfg)
    res = decoder.load_state_dict(init.tensors("decoder"), strict=False)
    missing = [k for k in res.missing_keys if not k.startswith(PREFIX_PARTS)]
    if missing or res.unexpected_keys:
        raise ValueError(f"{init.path}: decoder weights do not fit: missing {missing}, "
                         f"unexpected {list(res.unexpected_keys)}")
    return decoder


def _make_eval_fn(dataset: DecoderDataset, collate: DecoderCollate, batch_size: int):
    def eval_fn(model: DecoderStage, step: int) -> dict[str, float]:
        device = next(model.decoder.parameters()).device
        sums: dict[str, float] = {}
        n = 0
        for i in range(0, len(dataset), batch_size):
            batch = collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            out = model(batch)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        return {k: v / max(n, 1) for k, v in sums.items()}

    return eval_fn


def _run(config: dict, resume: bool, stage: str) -> int:
    from freeze_omni.codec.model import Codec
    from freeze_omni.data.manifest import read_manifest
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import llm_settings
    from freeze_omni.train import TrainConfig, Trainer
    from freeze_omni.decoder.generator import answer_hidden, text_tokenizer
    from freeze_omni.train.decoder_data import codec_items

    tcfg = TrainConfig.from_dict(config["train"])
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    # 1. Bundles, frozen LLM, codec.
    init = Bundle(config["init_bundle"])
    codec_src = Bundle(config.get("codec_bundle", config["init_bundle"]))
    if not codec_src.has("codec"):
        raise ValueError(f"{codec_src.path}: no codec in the bundle (train output stage 1, or set codec_bundle)")
    ref, system = llm_settings(init)
    ref, system = config.get("llm", ref), config.get("system_prompt", system)
    if init.config.get("llm") and init.config["llm"].get("ref") not in (None, ref):
        raise ValueError(f"{init.path} was built for LLM {init.config['llm']['ref']!r}, not {ref!r}")
    llm = FrozenLLM.load(ref)
    fp_before = llm.fingerprint()
    codec = Codec.from_bundle(codec_src)
    # 2. Decoder and what trains.
    decoder = load_stage_decoder(config, stage, init, llm.hidden_size, codec.codebook_size)
    if decoder.cfg.codebook_size != codec.codebook_size:
        raise ValueError(f"decoder codebook {decoder.cfg.codebook_size} != codec codebook {codec.codebook_size}")
    model = DecoderStage(decoder, llm, stage, bool(config.get("train_pre_nn", False)),
                         GuidedAttention.from_dict(config.get("guided_attention")),
                         float(config.get("code_noise", 0.0)))
    log.info("stage %s: %.2f M trainable of %.2f M decoder parameters", stage,
             sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, decoder.num_parameters() / 1e6)
    # 3. Data: codec tokens (+ hidden states) cached beside the manifests.
    data = config["data"]
    max_codes = int(data["max_seconds"] * codec.frame_rate) if data.get("max_seconds") else None
    hidden_fn = (lambda row: answer_hidden(llm, system, row.get("question", ""), row["answer"],
                                           row.get("answer_before", ""))) if stage == "prefix" else None
    extra = {"llm": fp_before, "system": system} if stage == "prefix" else None
    kind, text_key = ("prefix", "answer") if stage == "prefix" else ("codes", "text")

    tokenize = text_tokenizer(decoder.cfg, llm)

    def dataset(path: str, limit: Optional[int] = None) -> DecoderDataset:
        rows = read_manifest(path)[:limit]
        items = codec_items(rows, codec, path, kind, hidden_fn, extra)
        return DecoderDataset(rows, items, tokenize, text_key, max_codes)

    train_set = dataset(data["train"])
    collate = DecoderCollate(decoder.cfg.pad_id, codec.frame_rate, use_hidden=stage == "prefix")
    eval_fn = None
    if data.get("eval"):
        eval_fn = _make_eval_fn(dataset(data["eval"], int(data.get("eval_limit", 200))), collate, tcfg.batch_size)
    # 4. Train; export the bundle at every checkpoint.
    bundle_dir = config.get("export", {}).get("bundle", str(Path(tcfg.out_dir) / "bundle"))
    llm_section = {"ref": ref, "system_prompt": system, "hidden_size": llm.hidden_size, "fingerprint": fp_before}

    def on_checkpoint(path: str, step: int) -> None:
        if llm.fingerprint() != fp_before:
            raise RuntimeError("the frozen LLM changed during training")
        export_decoder(decoder, bundle_dir, init, codec_src, llm_section)

    result = Trainer(model, tcfg, train_set, collate, eval_fn=eval_fn, on_checkpoint=on_checkpoint).fit(resume)
    log.info("stage %s finished at step %d (bundle: %s)", stage, result.step, bundle_dir)
    return 0


def run_decoder(config: dict, resume: bool) -> int:
    return _run(config, resume, "decoder")


def run_prefix(config: dict, resume: bool) -> int:
    return _run(config, resume, "prefix")

"""Output stage 1 (`freeze-omni train codec`): the single-codebook speech codec on the assistant voice.

Random ``segment_seconds`` crops of the assistant-voice utterances, with YIN F0 / voicing targets computed on the
fly (:mod:`freeze_omni.codec.f0`), train :class:`freeze_omni.codec.model.Codec` (spectral + F0 + VQ losses, plus
an optional multi-period discriminator). The codec is exported into a bundle folder at every checkpoint.

Config (YAML)::

    codec: {preset: default, ...overrides}       # or a full CodecConfig dict (freeze_omni.codec.config)
    init: null                                   # a bundle folder whose codec weights start the run
    freeze: []                                   # codec parts that do not train, e.g. [encoder, quantizer]:
                                                 # with init, a decoder-side fine-tune (say, adding the
                                                 # discriminator) that keeps every token id, so a speech
                                                 # decoder trained on the old tokens stays valid
    segment_seconds: 1.0
    adversarial: {enabled: false, weight: 1.0, feature_matching: 2.0, periods: [2, 3, 5, 7, 11], channels: 16}
    data: {train: M.jsonl, eval: M2.jsonl, eval_limit: 8, samples: 2}   # rows with "audio"
    train: {out_dir: exp/codec, max_steps: 20000, lr: 1e-3, ...}       # freeze_omni.train.TrainConfig
    export: {bundle: exp/codec/bundle}           # written at every checkpoint
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from freeze_omni.bundle import save_component, write_bundle_config
from freeze_omni.codec.config import CodecConfig, build_codec_config
from freeze_omni.codec.discriminator import MultiPeriodDiscriminator, adversarial_losses
from freeze_omni.codec.f0 import yin
from freeze_omni.codec.model import Codec, resynthesize

log = logging.getLogger(__name__)


FREEZABLE = ("encoder", "quantizer")


class CodecStage(nn.Module):
    """The codec plus, optionally, a discriminator; ``forward(batch)`` returns the loss dict of one step.

    ``freeze`` names codec parts (of :data:`FREEZABLE`) that neither train nor change in training mode (no
    dead-code restarts): with both frozen, ``codec.encode`` gives the same tokens before and after the run.
    """

    def __init__(self, codec: Codec, disc: Optional[MultiPeriodDiscriminator] = None, w_adv: float = 1.0,
                 w_fm: float = 2.0, freeze: tuple[str, ...] = ()) -> None:
        super().__init__()
        unknown = sorted(set(freeze) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"codec freeze: unknown part(s) {unknown}; choose from {list(FREEZABLE)}")
        self.codec, self.disc, self.w_adv, self.w_fm = codec, disc, w_adv, w_fm
        self.frozen = tuple(freeze)
        for name in self.frozen:
            getattr(codec, name).requires_grad_(False)

    def train(self, mode: bool = True) -> "CodecStage":
        super().train(mode)
        for name in self.frozen:
            getattr(self.codec, name).eval()
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # 1. Reconstruction, spectral / F0 / VQ losses.
        out, wave_hat = self.codec.compute(batch)
        # 2. Adversarial terms (each side's gradient reaches only that side).
        if self.disc is not None:
            adv = adversarial_losses(self.disc, batch["wave"], wave_hat)
            out.update(adv)
            out["loss"] = out["loss"] + self.w_adv * adv["adv"] + self.w_fm * adv["fm"] + adv["disc"]
        return out


class CodecCollate:
    """Utterances -> random fixed-length crops with F0 / voicing targets.

    Crops start at a random sample (torch's RNG, so the trainer's RNG restore makes resumed runs identical);
    shorter utterances are zero-padded at the end.

    Returns:
        ``{"wave": [B, T], "f0": [B, F], "voiced": [B, F], "audio_seconds": float}`` with ``T`` =
        ``segment_tokens * hop`` and ``F = T / control_hop``; None if no item is usable.
    """

    def __init__(self, cfg: CodecConfig, segment_seconds: float = 1.0) -> None:
        self.cfg = cfg
        self.length = max(1, round(segment_seconds * cfg.frame_rate)) * cfg.hop

    def __call__(self, items: list[dict]) -> Optional[dict[str, Any]]:
        cfg, L = self.cfg, self.length
        waves, f0s, voiced, seconds = [], [], [], 0.0
        for it in items:
            w = np.asarray(it["wave"], dtype=np.float32)
            if len(w) == 0 or not np.isfinite(w).all():
                continue
            start = int(torch.randint(0, len(w) - L + 1, ()).item()) if len(w) > L else 0
            seg = np.zeros(L, np.float32)
            piece = w[start:start + L]
            seg[: len(piece)] = piece
            f0, v = yin(seg, cfg.sample_rate, cfg.control_hop, fmin=cfg.f0_min, fmax=cfg.f0_max)
            waves.append(seg)
            f0s.append(f0)
            voiced.append(v)
            seconds += len(piece) / cfg.sample_rate
        if not waves:
            return None
        return {"wave": torch.from_numpy(np.stack(waves)), "f0": torch.from_numpy(np.stack(f0s)),
                "voiced": torch.from_numpy(np.stack(voiced)), "audio_seconds": seconds}


def export_bundle(codec: Codec, bundle_dir: str | Path) -> None:
    """Write ``codec.safetensors`` (fp16) and the ``codec:`` section of ``bundle.yaml``."""
    fname = save_component(bundle_dir, "codec", codec.state_dict())
    write_bundle_config(bundle_dir, {"codec": codec.cfg.to_dict(), "components": {"codec": fname}})


def _make_eval_fn(manifest: str, limit: int, n_samples: int, sample_dir: Path, sample_rate: int):
    """Resynthesis quality on held-out utterances: log-mel L1, spectral loss, code use; writes a few wavs."""
    from freeze_omni.audio.io import AudioError, load_audio, save_wav
    from freeze_omni.data.manifest import read_manifest

    waves = []
    for row in read_manifest(manifest)[:limit]:
        try:
            waves.append(load_audio(row["audio"], sample_rate))
        except (AudioError, KeyError):
            continue

    def eval_fn(stage: CodecStage, step: int) -> dict[str, float]:
        codec = stage.codec
        mel, stft, codes = [], [], []
        for i, w in enumerate(waves):
            x = torch.from_numpy(w).unsqueeze(0).to(codec.noise_table.device)
            codes.append(codec.encode(x).flatten().cpu())
            y = torch.from_numpy(resynthesize(codec, w)).unsqueeze(0).to(x.device)
            mel.append(float(codec.mel_loss(y, x)))
            stft.append(float(codec.stft_loss(y, x)))
            if i < n_samples:
                d = sample_dir / f"step_{step:08d}"
                d.mkdir(parents=True, exist_ok=True)
                save_wav(d / f"{i}_orig.wav", w, sample_rate)
                save_wav(d / f"{i}_resynth.wav", y[0].cpu().numpy(), sample_rate)
        counts = torch.bincount(torch.cat(codes), minlength=codec.codebook_size).float() if codes else None
        out = {"mel_l1": float(np.mean(mel)) if mel else float("nan"), "stft": float(np.mean(stft)) if stft else
               float("nan")}
        if counts is not None:
            p = counts / counts.sum()
            out["perplexity"] = float(torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum()))
            out["codes_used"] = float((counts > 0).sum())
        return out

    return eval_fn


def run(config: dict, resume: bool) -> int:
    from freeze_omni.data.dataset import SpeechDataset
    from freeze_omni.train import TrainConfig, Trainer

    tcfg = TrainConfig.from_dict(config["train"])
    # 1. The codec (optionally starting from an exported bundle) and the optional discriminator.
    cfg = build_codec_config(config.get("codec"))
    codec = Codec(cfg)
    if config.get("init"):
        codec.load_state_dict(Codec.from_bundle(config["init"]).state_dict(), strict=True)
        log.info("codec initialised from %s", config["init"])
    adv = config.get("adversarial") or {}
    disc = None
    if adv.get("enabled", False):
        disc = MultiPeriodDiscriminator(tuple(adv.get("periods", (2, 3, 5, 7, 11))), int(adv.get("channels", 16)))
    freeze = tuple(config.get("freeze") or ())
    if freeze and not config.get("init"):
        raise ValueError("codec freeze needs init: a trained codec bundle whose frozen parts are kept")
    stage = CodecStage(codec, disc, float(adv.get("weight", 1.0)), float(adv.get("feature_matching", 2.0)), freeze)
    # 2. Data: random crops of the assistant voice with F0 targets.
    data = config["data"]
    dataset = SpeechDataset(data["train"], sample_rate=cfg.sample_rate)
    collate = CodecCollate(cfg, float(config.get("segment_seconds", 1.0)))
    eval_fn = None
    if data.get("eval"):
        eval_fn = _make_eval_fn(data["eval"], int(data.get("eval_limit", 8)), int(data.get("samples", 2)),
                                Path(tcfg.out_dir) / "samples", cfg.sample_rate)
    # 3. Train, exporting the bundle at every checkpoint.
    bundle_dir = config.get("export", {}).get("bundle", str(Path(tcfg.out_dir) / "bundle"))

    def on_checkpoint(path: str, step: int) -> None:
        export_bundle(codec, bundle_dir)

    result = Trainer(stage, tcfg, dataset, collate, eval_fn=eval_fn, on_checkpoint=on_checkpoint).fit(resume=resume)
    log.info("stage codec finished at step %d (bundle: %s)", result.step, bundle_dir)
    return 0

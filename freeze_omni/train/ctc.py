"""Input stage 1 (`freeze-omni train ctc`): the streaming speech encoder with a character CTC head.

The default recipe starts from Whisper's pretrained encoder and adapts it to 160 ms streaming (causal convs,
chunk masks, caches). CTC alone on synthetic voices erodes what the pretrained encoder knows about real voices,
so the student is also pulled towards the frozen, full-attention original encoder's outputs (feature
distillation, ``distill.weight``). Word error rates on voices kept out of training are measured at every
evaluation.

Config (YAML)::

    encoder: {init: "whisper:tiny.en", chunk_size: 8, left_chunks: 16, dropout: 0.1}   # or a full EncoderConfig
    init_bundle: models/tiny-en                 # optional: start from a bundle's encoder + CTC head (a fresh
                                                # machine continuing the shipped model; --resume wins when a
                                                # checkpoint exists)
    chunk_policy: {mode: dynamic, static_prob: 0.6, full_prob: 0.2, max_chunk: 25}
    distill: {weight: 10.0}                     # x mean (1 - cosine); 0 disables the teacher
    whisper_decoder: {weight: 1.0, name: tiny.en}   # optional: x the frozen Whisper text decoder's transcript CE
                                                # over the streamed states (freeze_omni.encoder.whisper_decoder)
    freeze: {front: false, layers: 0}           # keep the conv front / the first N blocks fixed
    data: {train: M.jsonl, eval: {seen: M1.jsonl, unseen: M2.jsonl}, eval_limit: 60, max_seconds: 15}
    augment: {p_speed: 0.5, ...}                # freeze_omni.data.augment.Augmenter fields
    spec_augment: {n_freq_masks: 2, F_width: 10, n_time_masks: 2, T_width: 20}
    train: {out_dir: exp/ctc, max_steps: 4000, lr: 3e-4, ...}   # freeze_omni.train.TrainConfig
    export: {bundle: exp/ctc/bundle}            # written at every checkpoint
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freeze_omni.audio.features import extract
from freeze_omni.bundle import Bundle, encoder_config_dict, encoder_config_from_dict, save_component, write_bundle_config
from freeze_omni.data.augment import Augmenter, spec_augment
from freeze_omni.encoder.ctc import CharTokenizer, CTCHead
from freeze_omni.encoder.encoder import SpeechEncoder
from freeze_omni.encoder.masks import ChunkPolicy, pad_mask
from freeze_omni.encoder.whisper_decoder import BEAM, WhisperDecoder, WhisperTokenizer, load_whisper_decoder
from freeze_omni.encoder.whisper_init import load_whisper_encoder

log = logging.getLogger(__name__)


class CTCStage(nn.Module):
    """Student encoder + CTC head, with an optional frozen full-attention teacher for feature distillation."""

    def __init__(self, encoder: SpeechEncoder, head: CTCHead, policy: ChunkPolicy,
                 teacher: Optional[SpeechEncoder] = None, distill_weight: float = 0.0,
                 text_decoder: Optional[WhisperDecoder] = None, decoder_weight: float = 0.0,
                 prompt_len: int = 2) -> None:
        super().__init__()
        self.encoder, self.head, self.policy = encoder, head, policy
        self.teacher = teacher
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.distill_weight = distill_weight
        # frozen and large (its token table): kept out of the module tree, so out of checkpoints and optimiser
        self._text_decoder = (text_decoder,)
        self.decoder_weight, self.prompt_len = decoder_weight, prompt_len

    def train(self, mode: bool = True) -> "CTCStage":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # no dropout in the teacher, ever
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # 1. Student under this batch's attention context.
        chunk, left = self.policy.sample()
        out, out_len = self.encoder(batch["feats_aug"], batch["feat_lens"], chunk, left)
        # 2. CTC branch.
        log_probs = self.head(out)
        ctc = F.ctc_loss(log_probs.transpose(0, 1).float(), batch["targets"], out_len, batch["target_lens"],
                         blank=0, reduction="mean", zero_infinity=True)  # per target token, batch mean
        losses = {"ctc": ctc}
        loss = ctc
        # 3. Distillation towards the frozen full-attention teacher (on the un-masked features).
        if self.teacher is not None and self.distill_weight > 0:
            with torch.no_grad():
                t_out, _ = self.teacher(batch["feats"], batch["feat_lens"], None)
            n = min(t_out.shape[1], out.shape[1])
            valid = pad_mask(out_len, out.shape[1])[:, :n].float()
            cos = F.cosine_similarity(out[:, :n].float(), t_out[:, :n].float(), dim=-1)
            distill = ((1.0 - cos) * valid).sum() / valid.sum().clamp(min=1.0)
            losses["distill"] = distill
            loss = loss + self.distill_weight * distill
        # 4. The frozen Whisper text decoder reading the streamed states (second-pass transcript).
        dec = self._text_decoder[0]
        if dec is not None and self.decoder_weight > 0 and "text_tokens" in batch:
            text_ce = dec.loss(out, out_len, batch["text_tokens"], self.prompt_len)
            losses["text_ce"] = text_ce
            loss = loss + self.decoder_weight * text_ce
        losses["loss"] = loss
        losses["full_attention"] = torch.tensor(float(chunk is None))
        return losses


class CTCCollate:
    """Waveforms -> augmented features, padded; text -> CTC targets. Randomness comes from torch's RNG (so the
    trainer's RNG restore makes resumed runs identical)."""

    def __init__(self, tokenizer: CharTokenizer, frontend: str, augmenter: Optional[Augmenter],
                 spec_aug: Optional[dict], max_seconds: Optional[float] = None,
                 text_tokenizer: Optional[WhisperTokenizer] = None) -> None:
        self.tok, self.frontend, self.aug, self.spec_aug = tokenizer, frontend, augmenter, spec_aug
        self.text_tok = text_tokenizer  # Whisper's BPE: targets of the text decoder
        self.max_samples = int(max_seconds * 16000) if max_seconds else None

    def __call__(self, items: list[dict]) -> Optional[dict[str, Any]]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        feats, feats_aug, targets, texts, seconds = [], [], [], [], 0.0
        for it in items:
            wave = it["wave"]
            if self.max_samples and len(wave) > self.max_samples:
                continue
            ids = self.tok.encode(it["text"])
            if not ids:
                continue
            if self.aug is not None:
                wave = self.aug(wave, rng)
            f = extract(wave, self.frontend)
            fa = spec_augment(f, rng=rng, **self.spec_aug) if self.spec_aug else f
            if f.shape[0] // 2 < len(ids):  # CTC cannot emit more labels than frames
                continue
            feats.append(torch.from_numpy(f))
            feats_aug.append(torch.from_numpy(np.ascontiguousarray(fa)))
            targets.append(torch.tensor(ids, dtype=torch.long))
            if self.text_tok is not None:
                texts.append(torch.tensor(self.text_tok.targets(it["text"]), dtype=torch.long))
            seconds += len(wave) / 16000
        if not feats:
            return None
        extra = {"text_tokens": nn.utils.rnn.pad_sequence(texts, batch_first=True, padding_value=-100)} if texts else {}
        return {**extra,
            "feats": nn.utils.rnn.pad_sequence(feats, batch_first=True),
            "feats_aug": nn.utils.rnn.pad_sequence(feats_aug, batch_first=True),
            "feat_lens": torch.tensor([f.shape[0] for f in feats]),
            "targets": torch.cat(targets),
            "target_lens": torch.tensor([len(t) for t in targets]),
            "audio_seconds": seconds,
        }


def build_encoder(spec: dict) -> SpeechEncoder:
    """``{init: "whisper:tiny.en", ...overrides}`` (pretrained) or a plain EncoderConfig dict (random init)."""
    spec = dict(spec)
    init = spec.pop("init", None)
    if init is None:
        return SpeechEncoder(encoder_config_from_dict(spec))
    kind, _, name = init.partition(":")
    if kind != "whisper":
        raise ValueError(f"unknown encoder init {init!r}; expected 'whisper:tiny.en' or 'whisper:base'")
    return load_whisper_encoder(name, **spec)


def export_bundle(stage: CTCStage, tokenizer: CharTokenizer, bundle_dir: str | Path,
                  second_pass: Optional[str] = None) -> None:
    """Write the student encoder + CTC head into a model bundle (fp16 safetensors + bundle.yaml); ``second_pass``
    (e.g. ``whisper:tiny.en``, when the encoder was trained for it) becomes the bundle's ``asr.second_pass``."""
    enc_file = save_component(bundle_dir, "encoder", stage.encoder.state_dict())
    ctc_file = save_component(bundle_dir, "ctc", stage.head.state_dict())
    cfg = dataclasses.replace(stage.encoder.cfg, dropout=0.0, attention_dropout=0.0)
    write_bundle_config(bundle_dir, {
        "sample_rate": 16000,
        "frontend": cfg.frontend,
        "encoder": encoder_config_dict(cfg),
        "ctc": {"chars": tokenizer.chars},
        "components": {"encoder": enc_file, "ctc": ctc_file},
        **({"asr": {"second_pass": second_pass, "beam": BEAM}} if second_pass else {}),
    })


def _make_eval_fn(eval_sets: dict[str, str], limit: int, tokenizer: CharTokenizer,
                  text_decoder: Optional[WhisperDecoder] = None, text_tok: Optional[WhisperTokenizer] = None):
    from freeze_omni.audio.io import AudioError, load_audio
    from freeze_omni.data.manifest import read_manifest
    from freeze_omni.data.text import normalize_text
    from freeze_omni.encoder.asr import SecondPass, SpeechRecognizer
    from freeze_omni.eval.asr import error_rates

    sets = {}
    for name, path in eval_sets.items():
        rows = []
        for r in read_manifest(path)[:limit]:
            try:
                rows.append((load_audio(r["audio"]), normalize_text(r["text"])))
            except AudioError:
                continue
        sets[name] = rows

    def eval_fn(model: CTCStage, step: int) -> dict[str, float]:
        rec = SpeechRecognizer(model.encoder, model.head, tokenizer)
        second = SecondPass(text_decoder, text_tok, beam=1) if text_decoder is not None else None  # greedy: quick
        rec2 = SpeechRecognizer(model.encoder, model.head, tokenizer, second_pass=second) if second else None
        out = {}
        for name, rows in sets.items():
            refs = [r for _, r in rows]
            out[f"wer_{name}"] = error_rates(refs, [rec.transcribe(w, "streaming") for w, _ in rows])[0]
            if rec2 is not None:
                hyps = [normalize_text(rec2.transcribe(w, "streaming")) for w, _ in rows]
                out[f"wer2_{name}"] = error_rates(refs, hyps)[0]
        return out

    return eval_fn


def run(config: dict, resume: bool) -> int:
    from freeze_omni.data.dataset import SpeechDataset
    from freeze_omni.train import TrainConfig, Trainer

    tcfg = TrainConfig.from_dict(config["train"])
    tok = CharTokenizer()
    encoder = build_encoder(config.get("encoder", {"init": "whisper:tiny.en"}))
    head = CTCHead(encoder.output_dim, tok.vocab_size)
    if config.get("init_bundle"):
        init = Bundle(config["init_bundle"])
        encoder.load_state_dict(init.tensors("encoder"))
        head.load_state_dict(init.tensors("ctc"))
        log.info("encoder and CTC head start from %s", init.path)
    pol = ChunkPolicy(**{"chunk_size": encoder.cfg.chunk_size, "left_chunks": encoder.cfg.left_chunks,
                         **config.get("chunk_policy", {})})
    distill = float(config.get("distill", {}).get("weight", 0.0))
    teacher = None
    if distill > 0:
        teacher_name = config.get("distill", {}).get("teacher", config["encoder"].get("init", "whisper:tiny.en"))
        teacher = load_whisper_encoder(teacher_name.partition(":")[2], causal_convs=False, dropout=0.0)
    freeze = config.get("freeze", {})
    if freeze.get("front"):
        encoder.front.requires_grad_(False)
    for layer in list(encoder.encoders)[: int(freeze.get("layers", 0))]:
        layer.requires_grad_(False)
    wd = config.get("whisper_decoder") or {}
    text_decoder, text_tok = (load_whisper_decoder(wd.get("name", "tiny.en")) if float(wd.get("weight", 0)) > 0
                              else (None, None))
    stage = CTCStage(encoder, head, pol, teacher, distill, text_decoder, float(wd.get("weight", 0.0)),
                     len(text_tok.prompt) if text_tok else 2)

    data = config["data"]
    dataset = SpeechDataset(data["train"], max_duration=data.get("max_seconds"))
    aug = Augmenter(**config["augment"]) if config.get("augment") else None
    collate = CTCCollate(tok, encoder.cfg.frontend, aug, config.get("spec_augment"), data.get("max_seconds"),
                         text_tok)
    eval_fn = (_make_eval_fn(data.get("eval", {}), int(data.get("eval_limit", 60)), tok, text_decoder, text_tok)
               if data.get("eval") else None)
    bundle_dir = config.get("export", {}).get("bundle", str(Path(tcfg.out_dir) / "bundle"))

    def on_checkpoint(path: str, step: int) -> None:
        export_bundle(stage, tok, bundle_dir, f"whisper:{wd.get('name', 'tiny.en')}" if text_decoder else None)

    trainer = Trainer(stage, tcfg, dataset, collate,
                      eval_fn=eval_fn, on_checkpoint=on_checkpoint)
    result = trainer.fit(resume=resume)
    log.info("stage ctc finished at step %d (bundle: %s)", result.step, bundle_dir)
    return 0

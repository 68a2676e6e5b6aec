"""Input stages 2 and 3: connect the streaming encoder to the frozen LLM.

* ``align`` (stage 2): encoder + adapter + task embeddings learn to make the frozen LLM write the transcript of
  what was said (ASR manifests). Sequence: ``[system] [user_prefix] [task x n] [audio] [assistant_prefix]
  [transcript + eot]``.
* ``qa`` (stage 3): prompt embeddings + state head (encoder and adapter optionally) on spoken multi-round Q&A
  whose answers the frozen LLM itself wrote from the text question, so that it answers the spoken question as it
  answers the text; plus "do not answer" material (state 2). State labels, per 160 ms chunk: 0 while the user
  speaks, 1 (2 for state-2 material) from the chunk holding the end of speech on.

Config (YAML)::

    init_bundle: exp/tiny-en/ctc/bundle    # encoder from stage 1 (stage 3: the stage-2 bundle)
    llm: smollm2-135m-instruct             # default: the bundle's, else the built-in
    system_prompt: "..."                   # default: the bundle's, else DEFAULT_SYSTEM_PROMPT
    bridge: {adapter_kernel: 5, prompt_num: 25, transcribe_tokens: 4}
    train_encoder: true                    # stage 3 default false
    ctc_weight: 0.3                        # align: keep the bundle's CTC head in step with the encoder (0: off)
    token_ctc_weight: 0.5                  # CTC of the adapter outputs over the LLM's token embeddings (0: off;
                                           # freeze_omni.train.token_ctc), on transcripts / spoken questions
    token_ctc_negatives: 2048
    llm_weight: 1.0                        # the LLM's CE (+ state CE); 0: token CTC alone, no LLM pass (fast: a
                                           # warm start for the adapter before the LLM's own loss)
    train_adapter: true                    # stage 3 default false
    data: {train: M.jsonl, state2: S.jsonl, state2_frac: 0.2, max_seconds: 10, silence_chunks: [0, 3]}
    augment: {...}                         # freeze_omni.data.augment.Augmenter fields
    state_weight: 1.0
    train: {...}                           # TrainConfig
    export: {bundle: exp/tiny-en/qa/bundle}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from freeze_omni.audio.features import extract
from freeze_omni.audio.io import AudioError, load_audio
from freeze_omni.bundle import Bundle, save_component, write_bundle_config
from freeze_omni.data.augment import Augmenter
from freeze_omni.llm.bridge import Task, UserState
from freeze_omni.llm.model import EMBEDS_PER_CHUNK, IGNORE_INDEX, Segment, SpeechLLM, whole_chunks

log = logging.getLogger(__name__)
CHUNK_SECONDS = 0.16
SR = 16000


def chunk_states(n_chunks: int, speech_end_s: float, final: int) -> list[int]:
    """Labels per 160 ms chunk: 0 before the chunk holding ``speech_end_s``, ``final`` from it on."""
    end_chunk = min(n_chunks - 1, int(speech_end_s / CHUNK_SECONDS))
    return [int(UserState.LISTEN)] * end_chunk + [final] * (n_chunks - end_chunk)


class StageModel(nn.Module):
    """Wraps a :class:`SpeechLLM` for the trainer: batch -> sequences -> loss dict."""

    def __init__(self, model: SpeechLLM, system: str, train_encoder: bool, train_adapter: bool,
                 state_weight: float = 1.0, ctc_head: Optional[nn.Module] = None, ctc_weight: float = 0.0,
                 ctc_tokenizer: Any = None, token_ctc: Optional[nn.Module] = None,
                 token_ctc_weight: float = 0.0, llm_weight: float = 1.0) -> None:
        super().__init__()
        self.model, self.system = model, system
        self.train_encoder, self.train_adapter, self.state_weight = train_encoder, train_adapter, state_weight
        model.encoder.requires_grad_(train_encoder)
        model.adapter.requires_grad_(train_adapter)
        # An encoder that trains moves away from the stage-1 CTC head; a CTC term keeps the head usable.
        self.ctc_head = ctc_head if (ctc_head is not None and ctc_weight > 0 and train_encoder) else None
        self.ctc_weight = ctc_weight
        self.ctc_tokenizer = ctc_tokenizer if self.ctc_head is not None else None
        # Adapter outputs read through the LLM's token embeddings (needs a trainable adapter or encoder).
        use = token_ctc is not None and token_ctc_weight > 0 and (train_adapter or train_encoder)
        self.token_ctc, self.token_ctc_weight = (token_ctc, token_ctc_weight) if use else (None, 0.0)
        if llm_weight <= 0 and self.token_ctc is None:
            raise ValueError("llm_weight 0 leaves nothing to learn without the token CTC (token_ctc_weight > 0)")
        self.llm_weight = llm_weight

    def train(self, mode: bool = True) -> "StageModel":
        super().train(mode)
        if not self.train_encoder:
            self.model.encoder.eval()
        if not self.train_adapter:
            self.model.adapter.eval()
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        m = self.model
        # 1. Every utterance of the batch through encoder + adapter (streaming chunk mask).
        with torch.set_grad_enabled(self.training and (self.train_encoder or self.train_adapter)):
            ec = m.encoder.cfg
            enc, enc_len = m.encoder(batch["feats"], batch["feat_lens"], ec.chunk_size, ec.left_chunks)
            audio, a_len = m.adapter(enc, enc_len)
        losses: dict[str, torch.Tensor] = {"loss": audio.new_zeros(())}
        if self.llm_weight > 0:
            losses = self._llm_losses(batch, audio, a_len)
        if self.ctc_head is not None and "ctc_targets" in batch:
            t = batch["ctc_targets"]
            ctc = nn.functional.ctc_loss(self.ctc_head(enc).transpose(0, 1).float(), t["ids"], enc_len, t["lens"],
                                         blank=0, reduction="mean", zero_infinity=True)
            losses["ctc"] = ctc
            losses["loss"] = losses["loss"] + self.ctc_weight * ctc
        if self.token_ctc is not None and "token_targets" in batch:
            tctc, tacc = self.token_ctc(audio, a_len, batch["token_targets"])
            losses["token_ctc"], losses["token_ctc_acc"] = tctc, tacc
            losses["loss"] = losses["loss"] + self.token_ctc_weight * tctc
        return losses

    def _llm_losses(self, batch: dict[str, Any], audio: torch.Tensor, a_len: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen LLM's CE on answers / transcripts and the state CE, weighted by ``llm_weight``."""
        m = self.model
        # 2. One segment list per example, exactly as the live dialogue feeds the LLM.
        seqs = []
        for ex in batch["examples"]:
            segs = [m.system_segment(self.system)]
            answered = False
            for turn in ex["turns"]:
                a = audio[turn["utt"], : int(a_len[turn["utt"]])]
                segs += m.user_segments(a, turn.get("states"), Task(turn["task"]) if turn.get("task") else None,
                                        after_answer=answered)
                answered = turn.get("answer_ids") is not None
                if answered:
                    segs += m.answer_segments(turn["answer_ids"])
            seqs.append(segs)
        # 3. LLM CE on answers / transcripts + state CE at chunk ends.
        losses = m.loss(seqs, self.state_weight)
        losses["loss"] = self.llm_weight * losses["loss"]
        return losses


class BridgeCollate:
    """Loads and augments audio, pads silence around turns, computes features, state labels and target ids."""

    def __init__(self, model: SpeechLLM, stage: str, augmenter: Optional[Augmenter], silence_chunks=(0, 3),
                 lead_seconds: float = 0.3, ctc_tokenizer: Any = None, token_targets: bool = False) -> None:
        self.model, self.stage, self.aug, self.ctc_tokenizer = model, stage, augmenter, ctc_tokenizer
        self.token_targets = token_targets  # LLM token ids of what each utterance says (token CTC)
        self.silence_chunks, self.lead_seconds = tuple(silence_chunks), lead_seconds
        self.chunk_frames = model.encoder.cfg.chunk_frames

    def _utt(self, wave: np.ndarray, rng: np.random.Generator, feats: list, final: Optional[int]) -> dict:
        from freeze_omni.data.qa import speech_end

        if self.aug is not None:
            wave = self.aug(wave, rng)
        end = speech_end(wave, SR)
        lead = int(rng.uniform(0, self.lead_seconds) * SR)
        tail = int(rng.integers(self.silence_chunks[0], self.silence_chunks[1] + 1) * CHUNK_SECONDS * SR)
        wave = np.concatenate([np.zeros(lead, np.float32), wave, np.zeros(tail, np.float32)])
        f = whole_chunks(extract(wave, self.model.encoder.cfg.frontend), self.chunk_frames)
        n_chunks = f.shape[0] // self.chunk_frames
        feats.append(torch.from_numpy(np.ascontiguousarray(f)))
        turn = {"utt": len(feats) - 1}
        if final is not None:
            turn["states"] = chunk_states(n_chunks, lead / SR + end, final)
        return turn

    def __call__(self, items: list[dict]) -> Optional[dict[str, Any]]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        feats: list[torch.Tensor] = []
        examples = []
        said: list[str] = []  # per utterance, in feats order: its transcript ("" for state-2 material)
        seconds = 0.0
        for it in items:
            if self.stage == "align":
                turn = self._utt(it["wave"], rng, feats, final=None)
                turn["task"] = int(Task.TRANSCRIBE)
                turn["answer_ids"] = self.model.llm.tokenize(it["text"].strip())
                examples.append({"turns": [turn]})
                said.append(it["text"])
            elif it.get("kind") == "state2":
                examples.append({"turns": [self._utt(it["wave"], rng, feats, final=int(UserState.IGNORE))]})
                said.append("")
            else:
                turns = []
                for t in it["turns"]:
                    turn = self._utt(t["wave"], rng, feats, final=int(UserState.RESPOND))
                    turn["answer_ids"] = self.model.llm.tokenize(t["answer"].strip())
                    turns.append(turn)
                    said.append(t.get("question") or "")
                examples.append({"turns": turns})
            seconds += sum(len(t["wave"]) for t in it.get("turns", [it])) / SR
        if not examples:
            return None
        out = {"feats": nn.utils.rnn.pad_sequence(feats, batch_first=True),
               "feat_lens": torch.tensor([f.shape[0] for f in feats]),
               "examples": examples, "audio_seconds": seconds}
        if self.token_targets:
            out["token_targets"] = [self.model.llm.tokenize(t.strip()) if t.strip() else [] for t in said]
        if self.stage == "align" and self.ctc_tokenizer is not None:
            ids = [self.ctc_tokenizer.encode(it["text"]) for it in items]
            out["ctc_targets"] = {"ids": torch.tensor([i for x in ids for i in x], dtype=torch.long),
                                  "lens": torch.tensor([len(x) for x in ids])}
        return out


class DialogueDataset(torch.utils.data.Dataset):
    """Q&A dialogues (``{"turns": [{"audio", "answer"}]}``) and state-2 clips (``{"audio"}``) with audio loaded;
    an item whose audio cannot be read is ``None`` (skipped and counted by the trainer)."""

    def __init__(self, rows: list[dict], max_seconds: Optional[float] = None) -> None:
        self.rows, self.max_samples = rows, int(max_seconds * SR) if max_seconds else None
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, path: str) -> Optional[np.ndarray]:
        try:
            w = load_audio(path)
        except AudioError as e:
            self.skipped += 1
            log.warning("skipping unreadable audio: %s", e)
            return None
        return None if self.max_samples and len(w) > self.max_samples else w

    def __getitem__(self, i: int) -> Optional[dict]:
        row = self.rows[i]
        if "turns" in row:
            turns = []
            for t in row["turns"]:
                w = self._load(t["audio"])
                if w is None:
                    return None
                turns.append({"wave": w, "answer": t["answer"], "question": t.get("question")})
            return {"kind": "qa", "turns": turns}
        w = self._load(row["audio"])
        return None if w is None else {"kind": "state2", "wave": w}


def build_stage(config: dict, stage: str) -> tuple[StageModel, str, str]:
    """The SpeechLLM to train, from ``init_bundle`` (+ overrides); returns (stage model, llm ref, system)."""
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import bridge_config_from_dict, llm_settings
    from freeze_omni.llm.loader import _load_bridge

    b = Bundle(config["init_bundle"])
    ref, system = llm_settings(b)
    ref = config.get("llm", ref)
    system = config.get("system_prompt", system)
    llm = FrozenLLM.load(ref)
    bcfg = bridge_config_from_dict({**(b.config.get("bridge") or {}), **config.get("bridge", {})})
    encoder = b.load_encoder()
    if "encoder_dropout" in config:
        for mod in encoder.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = float(config["encoder_dropout"])
    model = SpeechLLM(encoder, llm, bcfg)
    if b.has("bridge"):
        _load_bridge(model, b.tensors("bridge"))
    default_train = stage == "align"
    ctc_head, ctc_tok = None, None
    if stage == "align" and float(config.get("ctc_weight", 0.0)) > 0 and b.has("ctc"):
        from freeze_omni.encoder.ctc import CharTokenizer, CTCHead

        ctc_tok = CharTokenizer(b.config["ctc"]["chars"])
        ctc_head = CTCHead(encoder.output_dim, ctc_tok.vocab_size)
        ctc_head.load_state_dict(b.tensors("ctc"))
    token_ctc = None
    if float(config.get("token_ctc_weight", 0.0)) > 0:
        from freeze_omni.train.token_ctc import TokenCTC

        token_ctc = TokenCTC(llm.input_embedding_table(), int(config.get("token_ctc_negatives", 2048)))
        if b.has("token_ctc"):  # an earlier stage's blank and scale: the adapter's outputs were fitted to them
            token_ctc.load_state_dict(b.tensors("token_ctc"))
    sm = StageModel(model, system, bool(config.get("train_encoder", default_train)),
                    bool(config.get("train_adapter", default_train)), float(config.get("state_weight", 1.0)),
                    ctc_head, float(config.get("ctc_weight", 0.0)), ctc_tok, token_ctc,
                    float(config.get("token_ctc_weight", 0.0)), float(config.get("llm_weight", 1.0)))
    if stage == "qa":  # stage 3 never changes the task embeddings (stage-2 instructions)
        model.bridge.task_embeddings.requires_grad_(False)
    else:  # stage 2 trains no prompt embeddings / state head
        model.bridge.prompt_embeddings.requires_grad_(False)
        model.bridge.predictor_head.requires_grad_(False)
    return sm, ref, system


def _run(config: dict, resume: bool, stage: str) -> int:
    from freeze_omni.data.manifest import read_manifest
    from freeze_omni.llm.loader import save_speech_llm
    from freeze_omni.train import TrainConfig, Trainer

    tcfg = TrainConfig.from_dict(config["train"])
    sm, ref, system = build_stage(config, stage)
    fp_before = sm.model.llm.fingerprint()
    data = config["data"]
    if stage == "align":
        from freeze_omni.data.dataset import SpeechDataset

        dataset = SpeechDataset(data["train"], max_duration=data.get("max_seconds"))
    else:
        rows = read_manifest(data["train"])
        if data.get("state2"):
            s2 = read_manifest(data["state2"])
            want = int(len(rows) * float(data.get("state2_frac", 0.2)))
            rows += [s2[i % len(s2)] for i in range(want)] if s2 else []
        dataset = DialogueDataset(rows, data.get("max_seconds"))
    aug = Augmenter(**config["augment"]) if config.get("augment") else None
    collate = BridgeCollate(sm.model, stage, aug, data.get("silence_chunks", (0, 3)),
                            ctc_tokenizer=sm.ctc_tokenizer, token_targets=sm.token_ctc is not None)
    bundle_dir = config.get("export", {}).get("bundle", str(Path(tcfg.out_dir) / "bundle"))
    init = Bundle(config["init_bundle"])

    def on_checkpoint(path: str, step: int) -> None:
        if sm.model.llm.fingerprint() != fp_before:
            raise RuntimeError("the frozen LLM changed during training")
        _copy_components(init, bundle_dir)
        save_speech_llm(sm.model, bundle_dir, ref, system, save_encoder=sm.train_encoder)
        if sm.ctc_head is not None:
            save_component(bundle_dir, "ctc", sm.ctc_head.state_dict())
        if sm.token_ctc is not None:  # training aid only (blank + scale), for the next stage to go on with
            write_bundle_config(bundle_dir, {"components": {
                "token_ctc": save_component(bundle_dir, "token_ctc", sm.token_ctc.state_dict(),
                                            keep_fp32=("blank", "log_scale"))}})

    Trainer(sm, tcfg, dataset, collate, on_checkpoint=on_checkpoint).fit(resume=resume)
    return 0


def _copy_components(src: Bundle, dst: str | Path) -> None:
    """Start the exported bundle from the input bundle's files (encoder, CTC head...) and config."""
    import shutil

    dst = Path(dst)
    if (dst / "bundle.yaml").is_file():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name, fname in src.config.get("components", {}).items():
        shutil.copy2(src.path / fname, dst / fname)
    write_bundle_config(dst, {k: v for k, v in src.config.items() if k != "format"})


def run_align(config: dict, resume: bool) -> int:
    return _run(config, resume, "align")


def run_qa(config: dict, resume: bool) -> int:
    return _run(config, resume, "qa")

"""`freeze-omni eval tts --manifest M.jsonl [--resynth] [--ablation] [--limit N]`: intelligibility of the output side.

Every row's ``text`` is spoken by the bundle's speech decoder + codec through the live machinery
(:func:`freeze_omni.dialogue.answer.speak_text`: segments, decoder, codec windows; codec tokens sampled with the
configured top-k, seeded per row), transcribed by an independent recogniser (faster-whisper, Whisper tiny.en:
:mod:`freeze_omni.eval.recognizer`), and both sides are normalised with
:func:`freeze_omni.data.text.normalize_text` before CER/WER. A row's optional ``question`` frames the
teacher-forced LLM pass that gives the prefix decoder its hidden states.

Also reported:

* ``reference_cer`` / ``reference_wer``: the recogniser on the manifest's own audio (rows with ``audio``): the
  ceiling that the recogniser allows on this material.
* ``--resynth``: ``resynth_cer`` / ``resynth_wer``: the codec alone (encode + decode of the manifest audio).
* ``--ablation``: the paper's table (facts §5.2): CER per AR top-k 1..5, with and without the prefix decoder (a
  stage-3 decoder run without hidden states is exactly its stage-2 decoder, everything else having been frozen),
  and with/without the pre-network where a decoder without one is given (``--ablation-bundle DIR``, a bundle
  trained with ``use_pre_nn: false``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Optional

from tqdm import tqdm

from freeze_omni.audio.io import AudioError, load_audio
from freeze_omni.data.manifest import read_manifest
from freeze_omni.data.text import normalize_text
from freeze_omni.eval.asr import error_rates
from freeze_omni.eval.table import print_table

ABLATION_TOP_K = (1, 2, 3, 4, 5)


def _rates(refs: list[str], hyps: list[str]) -> dict[str, Optional[float]]:
    wer, cer = error_rates(refs, hyps)
    return {"cer": None if cer != cer else round(cer, 2), "wer": None if wer != wer else round(wer, 2)}


def speak_rows(speech: Any, rows: list[dict], system: str, asr: Any, seed: int = 0, desc: str = "tts",
               progress: bool = True) -> tuple[list[str], list[dict]]:
    """Speak every row's text and transcribe it: ``(hypotheses, per-row items)``."""
    from freeze_omni.dialogue.answer import speak_text

    hyps, items = [], []
    for i, row in enumerate(tqdm(rows, desc=desc, unit="utt", disable=not progress)):
        t0 = time.perf_counter()
        ans = speak_text(speech, row["text"], system, row.get("question", ""), seed=seed + i)
        elapsed = time.perf_counter() - t0
        hyp = asr.transcribe(ans.audio, speech.sample_rate)
        hyps.append(normalize_text(hyp))
        items.append({"id": row.get("id"), "text": row["text"], "hyp": hyp, "segments": len(ans.segments),
                      "seconds": round(len(ans.audio) / speech.sample_rate, 3), "compute": round(elapsed, 3)})
    return hyps, items


def _reference(rows: list[dict], asr: Any, codec: Any = None) -> tuple[list[str], list[str], int]:
    """Recogniser on the rows' own audio (or on its codec resynthesis): ``(refs, hyps, unreadable)``."""
    from freeze_omni.codec.model import resynthesize

    refs, hyps, bad = [], [], 0
    for row in rows:
        if not row.get("audio"):
            continue
        try:
            rate = codec.sample_rate if codec is not None else 16000
            wave = load_audio(row["audio"], rate)
        except AudioError:
            bad += 1
            continue
        if codec is not None:
            wave = resynthesize(codec, wave)
        refs.append(normalize_text(row["text"]))
        hyps.append(normalize_text(asr.transcribe(wave, rate)))
    return refs, hyps, bad


def ablation(speech: Any, extra: list[Any], rows: list[dict], system: str, asr: Any, seed: int,
             progress: bool = True) -> dict[str, Any]:
    """The paper's ablation table: CER (and WER) per top-k for each (prefix, pre-network) variant."""
    refs = [normalize_text(r["text"]) for r in rows]
    variants = []
    for sp in [speech, *extra]:
        pre = sp.decoder.cfg.use_pre_nn
        if sp.decoder.cfg.use_prefix:
            variants.append((True, pre, sp.with_options(use_prefix=True)))
        variants.append((False, pre, sp.with_options(use_prefix=False)))
    out_rows = []
    for prefix, pre, sp in sorted(variants, key=lambda v: (v[0], v[1])):  # the paper's row order
        cer, wer = [], []
        for k in ABLATION_TOP_K:
            hyps, _ = speak_rows(sp.with_options(top_k=k), rows, system, asr, seed,
                                 desc=f"ablation prefix={int(prefix)} pre={int(pre)} k={k}", progress=progress)
            r = _rates(refs, hyps)
            cer.append(r["cer"])
            wer.append(r["wer"])
        out_rows.append({"prefix": prefix, "pre_network": pre, "cer": cer, "wer": wer})
    return {"top_k": list(ABLATION_TOP_K), "rows": out_rows, "n": len(rows)}


def _ablation_label(row: dict) -> str:
    return f"{'with' if row['prefix'] else 'w/o'} prefix, {'with' if row['pre_network'] else 'w/o'} pre-network"


def _evaluate_codec(bundle: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``--resynth`` on a bundle with a codec and no speech decoder: the recogniser on the manifest audio and on
    its codec resynthesis."""
    from freeze_omni.codec.ticodec import load_codec
    from freeze_omni.eval.recognizer import Transcriber

    rows = [r for r in read_manifest(args.manifest)[: args.limit] if str(r.get("text", "")).strip()]
    asr = Transcriber(threads=getattr(args, "threads", None) or 1)
    return {"codec_only": True, **_reference_rates(rows, asr, load_codec(bundle))}


def _reference_rates(rows: list[dict], asr: Any, codec: Any = None) -> dict[str, Any]:
    """The recogniser on the rows' own audio (``reference_*``) and, given a codec, on its resynthesis
    (``resynth_*``)."""
    r_refs, r_hyps, bad = _reference(rows, asr)
    out: dict[str, Any] = {"n_reference": len(r_refs)}
    out.update({f"reference_{k}": v for k, v in _rates(r_refs, r_hyps).items()})
    if bad:
        out["unreadable_audio"] = bad
    if codec is not None:
        s_refs, s_hyps, _ = _reference(rows, asr, codec)
        out.update({f"resynth_{k}": v for k, v in _rates(s_refs, s_hyps).items()})
    return out


def evaluate_tts(args: argparse.Namespace) -> dict[str, Any]:
    from freeze_omni.bundle import Bundle
    from freeze_omni.dialogue.speech import SpeechOutput, has_speech, require_speech
    from freeze_omni.eval.recognizer import Transcriber
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import llm_settings

    bundle = Bundle(args.model)
    if getattr(args, "resynth", False) and bundle.has("codec") and not has_speech(bundle):
        return _evaluate_codec(bundle, args)  # a codec still in training: its resynthesis alone
    require_speech(bundle)
    ref, system = llm_settings(bundle)
    llm = FrozenLLM.load(ref)
    speech = SpeechOutput.from_bundle(bundle, llm, top_k=getattr(args, "top_k", None))
    rows = [r for r in read_manifest(args.manifest)[: args.limit] if str(r.get("text", "")).strip()]
    if not rows:
        raise ValueError(f"{args.manifest}: no rows with a text")
    asr = Transcriber(threads=getattr(args, "threads", None) or 1)
    seed = getattr(args, "seed", 0) or 0
    progress = not getattr(args, "json", False)
    refs = [normalize_text(r["text"]) for r in rows]
    t0 = time.perf_counter()
    hyps, items = speak_rows(speech, rows, system, asr, seed, progress=progress)
    result: dict[str, Any] = {"n": len(rows), **_rates(refs, hyps), "top_k": speech.generation.top_k,
                              "prefix": speech.needs_hidden, "pre_network": speech.decoder.cfg.use_pre_nn,
                              "audio_seconds": round(sum(i["seconds"] for i in items), 2),
                              "seconds": round(time.perf_counter() - t0, 2)}
    result.update(_reference_rates(rows, asr, speech.codec if getattr(args, "resynth", False) else None))
    if getattr(args, "ablation", False):
        extra = [SpeechOutput.from_bundle(b, llm) for b in (getattr(args, "ablation_bundle", None) or [])]
        table = ablation(speech, extra, rows, system, asr, seed, progress)
        result["ablation"] = table
        print_table(f"Output speech CER % vs AR top-k (n={len(rows)})", ["decoder"] + [f"k={k}" for k in
                    table["top_k"]], [[_ablation_label(r)] + r["cer"] for r in table["rows"]],
                    to_stderr=getattr(args, "json", False))
    if getattr(args, "out", None):
        with open(args.out, "w") as f:
            for item, h in zip(items, hyps):
                f.write(json.dumps({**item, "hyp_normalized": h}) + "\n")
    return result

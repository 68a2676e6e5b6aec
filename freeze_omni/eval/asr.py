"""`freeze-omni eval asr`: WER/CER of the streaming encoder's transcript (CTC, second pass, or through the bridge),
streaming and full attention; ``final_ms_*``: from the end of the audio to the final transcript."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import jiwer
import numpy as np
from tqdm import tqdm

from freeze_omni.audio.io import AudioError, load_audio
from freeze_omni.data.manifest import read_manifest
from freeze_omni.data.text import normalize_text
from freeze_omni.encoder.asr import SpeechRecognizer


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """(WER %, CER %) over a corpus; empty references are skipped."""
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return float("nan"), float("nan")
    r, h = zip(*pairs)
    return 100.0 * jiwer.wer(list(r), list(h)), 100.0 * jiwer.cer(list(r), list(h))


def evaluate(args: argparse.Namespace) -> dict:
    decoder = getattr(args, "decoder", "auto")
    modes = ["streaming", "full"] if args.mode == "both" else [args.mode]
    if decoder in ("llm", "adapter"):
        from freeze_omni.llm.transcribe import AdapterTranscriber, LLMTranscriber

        rec = (LLMTranscriber if decoder == "llm" else AdapterTranscriber).from_bundle(args.model)
        modes = ["streaming"]  # the bridge was trained on the streaming encoder only
    else:
        rec = SpeechRecognizer.from_bundle(args.model, decoder=decoder)
    rows = read_manifest(args.manifest)[: args.limit]
    refs: list[str] = []
    hyps: dict[str, list[str]] = {m: [] for m in modes}
    by_speaker: dict[str, list[int]] = defaultdict(list)
    final_s: list[float] = []  # streaming: end of audio -> final transcript
    skipped = 0
    out = open(args.out, "w") if args.out else None
    for row in tqdm(rows, desc="eval asr", unit="utt"):
        try:
            wave = load_audio(row["audio"])
        except AudioError:
            skipped += 1
            continue
        ref = normalize_text(row["text"])
        item = {"id": row.get("id"), "speaker": row.get("speaker"), "ref": ref}
        for m in modes:
            item[m] = normalize_text(rec.transcribe(wave, mode=m))
            hyps[m].append(item[m])
            if m == "streaming" and getattr(rec, "final_seconds", None) is not None:
                final_s.append(rec.final_seconds)
        by_speaker[str(row.get("speaker"))].append(len(refs))
        refs.append(ref)
        if out:
            out.write(json.dumps(item) + "\n")
    if out:
        out.close()
    result: dict = {"n": len(refs), "skipped": skipped, "decoder": decoder if decoder in ("llm", "adapter") else
                    "whisper" if rec.second_pass is not None else
                    "greedy" if rec.beam is None else ("beam+lm" if rec.lm is not None else "beam")}
    for m in modes:
        wer, cer = error_rates(refs, hyps[m])
        suffix = "" if m == "streaming" or len(modes) == 1 else "_full"
        result[f"wer{suffix}"], result[f"cer{suffix}"] = round(wer, 2), round(cer, 2)
    if len(modes) == 2 and result["wer_full"] > 0:
        result["streaming_cost"] = round(result["wer"] / result["wer_full"], 3)
    if final_s:  # what the user waits for after the audio ends (the second pass, when there is one)
        result["final_ms_p50"] = round(1000 * float(np.percentile(final_s, 50)), 1)
        result["final_ms_p90"] = round(1000 * float(np.percentile(final_s, 90)), 1)
    result["per_speaker_wer"] = {
        spk: round(error_rates([refs[i] for i in idx], [hyps[modes[0]][i] for i in idx])[0], 2)
        for spk, idx in sorted(by_speaker.items())}
    return result

"""`freeze-omni transcribe AUDIO`: transcript from the streaming encoder (CTC, and Whisper's decoder as a second pass)."""

from __future__ import annotations

import argparse
import time

from freeze_omni.cli import add_common, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("transcribe", help="transcript of an audio file from the streaming encoder (CTC; second pass when the bundle has one)"))
    p.add_argument("audio", help="audio file (any rate/channels; resampled to 16 kHz mono)")
    p.add_argument("--full-attention", action="store_true",
                   help="run the encoder over the whole utterance instead of 160 ms chunks")
    add_decoder_arg(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=_transcribe)


def add_decoder_arg(p: argparse.ArgumentParser, llm: bool = False) -> None:
    """``--decoder``; ``llm``: also ``llm`` (the frozen LLM writes the transcript through the bridge, stage 2's
    task) and ``adapter`` (the adapter's outputs read through the token CTC)."""
    p.add_argument("--decoder", choices=("auto", "greedy", "beam", "whisper") + (("llm", "adapter") if llm else ()),
                   default="auto",
                   help="CTC decoding: greedy, prefix beam search (+ the bundle's word LM); whisper: greedy CTC "
                        "partials, then Whisper's pretrained text decoder over the streamed encoder states at the "
                        "end (second pass); auto = the bundle's second pass if it names one, else beam + LM when "
                        "the bundle has an LM (default: auto)" +
                        ("; llm: no CTC, the frozen LLM writes the transcript from the bridge (input stage 2's "
                         "task; streaming only); adapter: the adapter's outputs read as the LLM's tokens (bundles "
                         "trained with the token CTC)" if llm else ""))


def _transcribe(args: argparse.Namespace) -> int:
    import torch

    from freeze_omni.audio.io import load_audio
    from freeze_omni.encoder.asr import SpeechRecognizer

    if args.threads:
        torch.set_num_threads(args.threads)
    rec = SpeechRecognizer.from_bundle(args.model, decoder=args.decoder)
    wave = load_audio(args.audio)
    t0 = time.perf_counter()
    text = rec.transcribe(wave, mode="full" if args.full_attention else "streaming")
    dt = time.perf_counter() - t0
    emit(args, {"text": text, "duration": round(len(wave) / 16000, 3), "rtf": round(dt / (len(wave) / 16000), 4)},
         human=lambda r: r["text"])
    return 0

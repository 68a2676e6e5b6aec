"""`freeze-omni speak TEXT --out WAV`: the speech decoder and codec alone (DESIGN.md §4).

The text is treated as an assistant answer: cut into segments as a live answer would be, each segment normalised,
re-tokenised and embedded by the frozen LLM, decoded to codec tokens and streamed through the codec's windowed
decoder segment by segment. When the bundle's decoder has a prefix decoder (output stage 3), the LLM is run
teacher-forced over the text as the answer to ``--question`` to get the hidden states that would have produced it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from freeze_omni.cli import add_common, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("speak", help="speak TEXT with the speech decoder + codec (no listening)"))
    p.add_argument("text", help="the text to speak")
    p.add_argument("--out", required=True, help="output wav file")
    p.add_argument("--top-k", type=int, default=2, help="AR top-k sampling of codec tokens (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--question", default="", help="question the text answers (prefix decoder input; default none)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=_speak)


def _speak(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from freeze_omni.audio.io import save_wav
    from freeze_omni.bundle import Bundle, BundleError
    from freeze_omni.codec.model import Codec
    from freeze_omni.codec.streaming import StreamingCodecDecoder
    from freeze_omni.decoder.generator import GenerationConfig, SpeechGenerator, answer_hidden
    from freeze_omni.decoder.model import SpeechDecoder
    from freeze_omni.decoder.segmenter import segment_answer
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import llm_settings

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = Bundle(args.model)
    for part, stage in (("decoder", "decoder"), ("codec", "codec")):
        if not bundle.has(part):
            raise BundleError(f"{bundle.path}: the bundle has no {part} (run `freeze-omni train {stage}`)")
    ref, system = llm_settings(bundle)
    llm = FrozenLLM.load(ref)
    decoder, codec = SpeechDecoder.from_bundle(bundle), Codec.from_bundle(bundle)
    if decoder.cfg.llm_hidden != llm.hidden_size:
        raise ValueError(f"the decoder expects LLM width {decoder.cfg.llm_hidden}; {ref!r} has {llm.hidden_size}")
    if decoder.cfg.codebook_size != codec.codebook_size:
        raise ValueError(f"decoder codebook {decoder.cfg.codebook_size} != codec codebook {codec.codebook_size}")
    gen = SpeechGenerator(decoder, llm, GenerationConfig(top_k=args.top_k), seed=args.seed)

    t0 = time.perf_counter()
    text = args.text.strip()
    ids = llm.tokenize(text)
    hidden = answer_hidden(llm, system, args.question, text) if decoder.cfg.use_prefix else None
    stream = StreamingCodecDecoder(codec)
    pieces: list[np.ndarray] = []
    first_audio = None
    n_tokens = 0
    spoken = []
    for seg in segment_answer(ids, llm.decode, hidden):
        tts = seg.tts_text
        if not tts:
            continue
        spoken.append(tts)
        for tok in gen.iter_tokens(tts, seg.hidden):
            n_tokens += 1
            pieces.append(stream.push([tok]))
            if first_audio is None and len(pieces[-1]):
                first_audio = time.perf_counter() - t0
        pieces.append(stream.flush())
        if first_audio is None and len(pieces[-1]):
            first_audio = time.perf_counter() - t0
    wave = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_wav(out, wave, codec.sample_rate)
    seconds = len(wave) / codec.sample_rate
    emit(args, {"audio": str(out), "sample_rate": codec.sample_rate, "seconds": round(seconds, 3),
                "rtf": round(elapsed / seconds, 3) if seconds else None, "segments": spoken, "tokens": n_tokens,
                "first_audio_ms": round(first_audio * 1000, 1) if first_audio is not None else None,
                "prefix": hidden is not None},
         human=lambda r: f"{r['audio']}: {r['seconds']} s at {r['sample_rate']} Hz (rtf {r['rtf']})")
    return 0

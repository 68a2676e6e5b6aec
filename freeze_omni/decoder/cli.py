"""`freeze-omni speak TEXT --out WAV`: the speech decoder and codec alone (DESIGN.md §4).

The text is treated as an assistant answer and spoken by the same machinery as a live answer
(:class:`freeze_omni.dialogue.answer.AnswerStream` over the written text): cut into segments, each segment
normalised, re-tokenised and embedded by the frozen LLM, decoded to codec tokens and streamed through the codec's
windowed decoder segment by segment. When the bundle's decoder has a prefix decoder (output stage 3), the LLM is run
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
    p.add_argument("--top-k", type=int, default=None,
                   help="AR top-k sampling of codec tokens (default: the bundle's, else 2 as upstream)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--question", default="", help="question the text answers (prefix decoder input; default none)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=_speak)


def _speak(args: argparse.Namespace) -> int:
    import torch

    from freeze_omni.audio.io import save_wav
    from freeze_omni.bundle import Bundle
    from freeze_omni.dialogue.answer import speak_text
    from freeze_omni.dialogue.speech import SpeechOutput, require_speech
    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.loader import llm_settings

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = Bundle(args.model)
    require_speech(bundle)
    ref, system = llm_settings(bundle)
    speech = SpeechOutput.from_bundle(bundle, FrozenLLM.load(ref), top_k=args.top_k)
    t0 = time.perf_counter()
    ans = speak_text(speech, args.text, system, args.question, seed=args.seed, t0=t0)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_wav(out, ans.audio, speech.sample_rate)
    seconds = len(ans.audio) / speech.sample_rate
    emit(args, {"audio": str(out), "sample_rate": speech.sample_rate, "seconds": round(seconds, 3),
                "rtf": round(elapsed / seconds, 3) if seconds else None, "segments": ans.segments,
                "tokens": sum(len(t) for t in ans.speech_tokens),
                "first_audio_ms": ans.latency_ms.get("first_audio"), "prefix": speech.needs_hidden},
         human=lambda r: f"{r['audio']}: {r['seconds']} s at {r['sample_rate']} Hz (rtf {r['rtf']})")
    return 0

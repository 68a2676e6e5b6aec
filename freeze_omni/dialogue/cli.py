"""`freeze-omni chat AUDIO`: one spoken turn through the live path, answered by the frozen LLM."""

from __future__ import annotations

import argparse

from freeze_omni.cli import add_common, emit
from freeze_omni.llm.cli import add_sampling_args, sampling_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("chat", help="answer a spoken question (audio file fed in 160 ms chunks)"))
    p.add_argument("audio")
    p.add_argument("--system", default=None, help="system prompt (default: the bundle's)")
    p.add_argument("--out", default=None, help="write the spoken answer here (needs the speech decoder)")
    p.add_argument("--no-state-head", action="store_true", help="ignore the state head; answer at end of file")
    p.add_argument("--threads", type=int, default=None)
    add_sampling_args(p)
    p.set_defaults(func=_chat)


def _chat(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import numpy as np
    import torch

    from freeze_omni.audio.io import load_audio, save_wav
    from freeze_omni.bundle import Bundle
    from freeze_omni.dialogue.speech import SpeechOutput, require_speech
    from freeze_omni.dialogue.turn import run_turn
    from freeze_omni.llm.loader import load_speech_llm
    from freeze_omni.llm.model import Listener

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = Bundle(args.model)
    if args.out:
        require_speech(bundle)  # fail before loading anything
    model, system = load_speech_llm(args.model)
    speech = SpeechOutput.from_bundle(bundle, model.llm) if args.out else None
    listener = Listener(model, args.system or system)
    wave = load_audio(args.audio)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    session = listener.new_session()
    result, _ = run_turn(listener, session, wave, sampling_from_args(args), not args.no_state_head, gen,
                         speech=speech, speech_seed=args.seed)
    elapsed = time.perf_counter() - t0
    audio_path, audio = None, None
    if speech is not None:  # an ignored turn writes an empty wav: the file is always there
        audio = result.audio if result.audio is not None else np.zeros(0, np.float32)
        audio_path = Path(args.out)
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        save_wav(audio_path, audio, speech.sample_rate)
    fed = min(len(wave), result.chunks * 2560) / 16000 or len(wave) / 16000
    lat = result.latency_ms
    out = {"answer": result.answer, "decision": result.decision,
           "audio": str(audio_path) if audio_path is not None else None,
           "sample_rate": speech.sample_rate if speech is not None else None,
           "latency_ms": {"first_text": lat.get("first_text"), "first_audio": lat.get("first_audio"),
                          **{k: v for k, v in lat.items() if k not in ("first_text", "first_audio")}},
           "rtf": round(result.listen_seconds / fed, 4), "decision_chunk": result.decision_chunk,
           "seconds": round(elapsed, 3)}
    if audio_path is not None:
        out["audio_seconds"] = round(len(audio) / speech.sample_rate, 3)
        out["segments"] = result.segments
    emit(args, out, human=lambda r: f"[{r['decision']}] {r['answer']}" + (f"\n-> {r['audio']}" if r["audio"] else ""))
    return 0

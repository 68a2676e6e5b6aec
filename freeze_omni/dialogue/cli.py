"""`freeze-omni chat AUDIO`: one spoken turn through the live path, answered by the frozen LLM."""

from __future__ import annotations

import argparse

from freeze_omni.cli import add_common, emit


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--greedy", action="store_true", help="greedy decoding (deterministic)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--top-p", type=float, default=0.8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("chat", help="answer a spoken question (audio file fed in 160 ms chunks)"))
    p.add_argument("audio")
    p.add_argument("--system", default=None, help="system prompt (default: the bundle's)")
    p.add_argument("--out", default=None, help="write the spoken answer here (needs the speech decoder)")
    p.add_argument("--no-state-head", action="store_true", help="ignore the state head; answer at end of file")
    p.add_argument("--threads", type=int, default=None)
    add_sampling_args(p)
    p.set_defaults(func=_chat)


def sampling_from_args(args: argparse.Namespace):
    from freeze_omni.llm.sampling import SamplingConfig

    return SamplingConfig(greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens)


def _chat(args: argparse.Namespace) -> int:
    import time

    import torch

    from freeze_omni.audio.io import load_audio
    from freeze_omni.dialogue.turn import run_turn
    from freeze_omni.llm.loader import load_speech_llm
    from freeze_omni.llm.model import Listener

    if args.threads:
        torch.set_num_threads(args.threads)
    model, system = load_speech_llm(args.model)
    listener = Listener(model, args.system or system)
    wave = load_audio(args.audio)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    session = listener.new_session()
    result, _ = run_turn(listener, session, wave, sampling_from_args(args), not args.no_state_head, gen)
    elapsed = time.perf_counter() - t0
    fed = min(len(wave), result.chunks * 2560) / 16000 or len(wave) / 16000
    out = {"answer": result.answer, "decision": result.decision, "audio": None, "sample_rate": None,
           "latency_ms": {"first_text": result.latency_ms.get("first_text"), "first_audio": None},
           "rtf": round(result.listen_seconds / fed, 4), "decision_chunk": result.decision_chunk,
           "seconds": round(elapsed, 3)}
    emit(args, out, human=lambda r: f"[{r['decision']}] {r['answer']}")
    return 0

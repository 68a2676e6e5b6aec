"""`freeze-omni eval NAME --manifest M.jsonl` and `freeze-omni bench NAME`.

Each name maps to a ``module:function`` taking the parsed args and returning a result dict; the function is
imported only when that name runs.
"""

from __future__ import annotations

import argparse
import importlib

from freeze_omni.cli import add_common, emit

EVALS = {
    "asr": "freeze_omni.eval.asr:evaluate",
    "qa": "freeze_omni.eval.qa:evaluate_qa",
    "state": "freeze_omni.eval.qa:evaluate_state",
    "tts": "freeze_omni.eval.tts:evaluate_tts",
}
BENCHES = {
    "concurrency": "freeze_omni.eval.concurrency:bench_concurrency",
    "encoder": "freeze_omni.eval.bench:bench_encoder",
    "latency": "freeze_omni.eval.bench:bench_latency",
}


def _resolve(spec: str):
    mod, fn = spec.split(":")
    return getattr(importlib.import_module(mod), fn)


def register(sub: argparse._SubParsersAction) -> None:
    from freeze_omni.encoder.cli import add_decoder_arg

    p = add_common(sub.add_parser("eval", help="measure a model on a manifest"))
    p.add_argument("name", choices=sorted(EVALS))
    p.add_argument("--manifest", required=True, help="JSON Lines manifest")
    p.add_argument("--limit", type=int, default=None, help="first N rows only")
    p.add_argument("--mode", choices=["streaming", "full", "both"], default="both",
                   help="asr: streaming (160 ms chunks), full attention, or both")
    p.add_argument("--out", default=None, help="write per-item results (JSON Lines) here")
    add_decoder_arg(p, llm=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resynth", action="store_true", help="tts: also the codec alone (encode + decode the audio)")
    p.add_argument("--ablation", action="store_true",
                   help="tts: the paper's table (with/without prefix, pre-network; top-k 1..5)")
    p.add_argument("--ablation-bundle", action="append", default=[], metavar="DIR",
                   help="tts --ablation: another bundle's decoder as extra rows (e.g. trained without pre-network)")
    p.add_argument("--top-k", type=int, default=None, help="tts: AR top-k of codec tokens (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0, help="tts: sampling seed (row i uses seed + i)")
    p.set_defaults(func=lambda a: _run(a, EVALS))

    b = add_common(sub.add_parser("bench", help="performance benchmarks (ratios and per-item times)"))
    b.add_argument("name", choices=sorted(BENCHES))
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--chunks", type=int, default=100, help="chunks timed per configuration")
    b.add_argument("--no-upstream", action="store_true", help="skip the upstream-size encoder")
    b.add_argument("--manifest", default=None,
                   help="latency: spoken questions (Q&A dialogues or rows with audio; default: 20 made with espeak)")
    b.add_argument("--questions", type=int, default=20, help="latency: spoken questions answered (default: 20)")
    b.add_argument("--max-new-tokens", type=int, default=64, help="latency: answer length limit (default: 64)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--int8", action="store_true",
                   help="latency, concurrency: the LLM's inference steps with weight-only int8 copies (serve --int8)")
    from freeze_omni.eval.concurrency import add_args as concurrency_args

    concurrency_args(b)
    b.set_defaults(func=lambda a: _run(a, BENCHES))


def _run(args: argparse.Namespace, table: dict) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = _resolve(table[args.name])(args)
    emit(args, result)
    return 0

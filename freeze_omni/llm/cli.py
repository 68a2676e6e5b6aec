"""`freeze-omni ask TEXT`: the frozen LLM answering typed text (the text-modality baseline, DESIGN.md §4).

Same LLM, system prompt and sampling as `freeze-omni chat`; `--greedy` (or `--temperature 0`) makes it
deterministic so spoken and typed answers can be compared answer for answer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from freeze_omni.cli import add_common, emit
from freeze_omni.llm import DEFAULT_LLM, DEFAULT_SYSTEM_PROMPT


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("ask", help="the frozen LLM answering typed text (text-modality baseline)"))
    p.add_argument("text", help="the question")
    p.add_argument("--system", default=None, help="system prompt (default: the bundle's)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 means greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=20, help="default: %(default)s")
    p.add_argument("--top-p", type=float, default=0.8, help="default: %(default)s")
    p.add_argument("--max-new-tokens", type=int, default=128, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=_ask)


def llm_settings(bundle_dir: str | Path) -> dict[str, Any]:
    """The bundle's ``llm`` section ``{ref, system_prompt}``, with defaults for whatever is missing (also when
    the bundle has no ``bundle.yaml`` yet)."""
    import yaml

    path = Path(bundle_dir) / "bundle.yaml"
    cfg: dict[str, Any] = {}
    if path.is_file():
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    llm = cfg.get("llm") or {}
    return {"ref": llm.get("ref") or DEFAULT_LLM, "system_prompt": llm.get("system_prompt") or DEFAULT_SYSTEM_PROMPT}


def _ask(args: argparse.Namespace) -> int:
    import torch

    from freeze_omni.llm.backbone import FrozenLLM
    from freeze_omni.llm.sampling import SamplingConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = llm_settings(args.model)
    system = args.system if args.system is not None else settings["system_prompt"]
    sampling = SamplingConfig(greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens)
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    t0 = time.perf_counter()
    llm = FrozenLLM.load(settings["ref"])
    t1 = time.perf_counter()
    answer = llm.answer_text([args.text], system, sampling, generator=generator)[0]
    t2 = time.perf_counter()
    emit(args, {"answer": answer, "llm": settings["ref"], "load_s": round(t1 - t0, 2),
                "generate_s": round(t2 - t1, 2)}, human=lambda r: r["answer"])
    return 0

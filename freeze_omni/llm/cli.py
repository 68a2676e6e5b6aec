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
from freeze_omni.llm import llm_reference


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The answer-sampling flags shared by `ask` and `chat` (unset ones come from the bundle)."""
    p.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic)")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 means greedy (default: the bundle's sampling section, else 0.7)")
    p.add_argument("--top-k", type=int, default=None, help="default: the bundle's, else 20")
    p.add_argument("--top-p", type=float, default=None, help="default: the bundle's, else 0.8")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the bundle's, else 128")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (default: %(default)s)")


def sampling_from_args(args: argparse.Namespace):
    """The answer's :class:`~freeze_omni.llm.sampling.SamplingConfig`: the bundle's ``sampling`` section,
    overridden by the flags given."""
    from freeze_omni.settings import PipelineSettings

    given = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "max_new_tokens")
             if getattr(args, k) is not None}
    cfg = bundle_config(args.model)
    return PipelineSettings.from_config(cfg).sampling_config(greedy=args.greedy, **given)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("ask", help="the frozen LLM answering typed text (text-modality baseline)"))
    p.add_argument("text", help="the question")
    p.add_argument("--system", default=None, help="system prompt (default: the bundle's)")
    add_sampling_args(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=_ask)


def bundle_config(bundle_dir: str | Path) -> dict[str, Any]:
    """A bundle's ``bundle.yaml`` as a dict (empty when the folder has none yet)."""
    import yaml

    path = Path(bundle_dir) / "bundle.yaml"
    if not path.is_file():
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _ask(args: argparse.Namespace) -> int:
    import torch

    from freeze_omni.llm.backbone import FrozenLLM

    if args.threads:
        torch.set_num_threads(args.threads)
    ref, system = llm_reference(bundle_config(args.model))
    system = args.system if args.system is not None else system
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    llm = FrozenLLM.load(ref)
    t1 = time.perf_counter()
    answer = llm.answer_text([args.text], system, sampling_from_args(args), generator=generator)[0]
    t2 = time.perf_counter()
    emit(args, {"answer": answer, "llm": ref, "load_s": round(t1 - t0, 2), "generate_s": round(t2 - t1, 2)},
         human=lambda r: r["answer"])
    return 0

"""`freeze-omni convert UPSTREAM_CHECKPOINTS --llm LLM_DIR --out BUNDLE`: the upstream release as our bundle.

Prints (``--json``: one JSON line) ``missing``, ``unexpected`` and ``mismatched`` tensors in upstream names (all
empty on success), ``ignored`` counts per file, ``notes`` and the written ``bundle``; exits 1 and writes nothing
when any tensor does not fit.
"""

from __future__ import annotations

import argparse
import sys

from freeze_omni.cli import add_common, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = add_common(sub.add_parser("convert", help="convert the upstream Freeze-Omni checkpoints into a bundle"))
    p.add_argument("checkpoints", help="the upstream `checkpoints/` folder (audiollm/, decoder/, codec/, server.json)")
    p.add_argument("--llm", required=True, help="local Qwen2-7B-Instruct folder (referenced by the bundle)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16",
                   help="weights precision in the bundle (default: %(default)s, the release's own)")
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from freeze_omni.upstream.convert import convert

    report, cfg = convert(args.checkpoints, args.llm, args.out, args.dtype)
    result = {**report.to_dict(), "bundle": args.out if cfg is not None else None,
              "components": (cfg or {}).get("components")}
    emit(args, result, human=lambda r: (f"wrote {r['bundle']} ({', '.join(r['components'])})" if r["bundle"]
                                        else "nothing written"))
    if cfg is None:
        print(f"freeze-omni convert: error: the upstream weights do not fit: {report.message()}", file=sys.stderr)
        return 1
    return 0

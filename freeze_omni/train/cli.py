"""`freeze-omni train STAGE --config C.yaml [--resume] [--set key=value ...]`.

Each stage is a module function ``run(config: dict, resume: bool) -> int`` named in `STAGES` and imported
only when chosen, so this file (and ``freeze-omni --help``) never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any, Callable

from freeze_omni.cli import add_common, emit

# stage name -> "module:function"; the function is ``run(config: dict, resume: bool) -> int``.
STAGES: dict[str, str] = {
    "ctc": "freeze_omni.train.ctc:run",
    "align": "freeze_omni.train.bridge_stages:run_align",
    "qa": "freeze_omni.train.bridge_stages:run_qa",
    "decoder": "freeze_omni.train.decoder:run_decoder",
    "prefix": "freeze_omni.train.decoder:run_prefix",
    "codec": "freeze_omni.train.codec:run",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command to the top-level subparsers."""
    p = sub.add_parser("train", help="train one stage from a YAML config (torchrun-compatible)",
                       description="Train one stage from a YAML config. Under torchrun, every rank runs this "
                                   "command; --resume continues the latest checkpoint in the config's out_dir.")
    add_common(p)
    p.add_argument("stage", choices=sorted(STAGES), help="which stage to train")
    p.add_argument("--config", required=True, help="YAML config file (see recipes/)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; dots reach into sections (train.lr=3e-4); repeatable")
    p.set_defaults(func=_train)


def resolve_stage(name: str) -> Callable[[dict, bool], int]:
    """Import the ``run`` function registered for stage ``name``; a clear ValueError if it cannot be."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {sorted(STAGES)}")
    spec = STAGES[name]
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"stage {name!r}: cannot import {module_name!r} ({spec}): {e}") from e
    fn = getattr(module, func_name or "run", None)
    if not callable(fn):
        raise ValueError(f"stage {name!r}: {module_name!r} has no function {func_name or 'run'!r} ({spec})")
    return fn


def load_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a YAML mapping and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    for item in overrides:
        apply_override(config, item)
    return config


def apply_override(config: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in ``config`` in place, creating missing sections."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    *parents, leaf = key.strip().split(".")
    node = config
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {item!r}: {'.'.join(parents[: i + 1])!r} is not a section")
    node[leaf] = _parse_value(raw, yaml)


def _parse_value(raw: str, yaml: Any) -> Any:
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; numbers are meant
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return value


def _train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    run = resolve_stage(args.stage)
    rc = int(run(config, args.resume) or 0)
    if args.json:
        emit(args, {"command": "train", "stage": args.stage, "rc": rc})
    return rc

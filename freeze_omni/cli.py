"""`freeze-omni …`: the command line (a contract, see DESIGN.md §4).

Every command takes ``--model DIR`` (default: the shipped bundle) and ``--json`` (print one JSON object on the
last line of stdout). Each command group lives next to the code it drives and registers itself here through a
``register(subparsers)`` function that builds its parser only; heavy imports (torch) happen inside the
handlers, so ``freeze-omni --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "tiny-en"


def add_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every command takes."""
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model bundle folder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line of stdout")
    return p


def emit(args: argparse.Namespace, result: dict[str, Any], human: Callable[[dict], str] | None = None) -> None:
    """Print a command's result: a JSON line with ``--json``, else a human-readable form."""
    if getattr(args, "json", False):
        print(json.dumps(result, ensure_ascii=False))
    elif human is not None:
        print(human(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


def build_parser() -> argparse.ArgumentParser:
    from freeze_omni.data import cli as data_cli
    from freeze_omni.train import cli as train_cli
    from freeze_omni.encoder import cli as encoder_cli
    from freeze_omni.eval import cli as eval_cli
    from freeze_omni.llm import cli as llm_cli
    from freeze_omni.dialogue import cli as dialogue_cli
    from freeze_omni.decoder import cli as decoder_cli
    from freeze_omni.server import cli as server_cli
    from freeze_omni.upstream import cli as upstream_cli

    p = argparse.ArgumentParser(prog="freeze-omni", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in (encoder_cli, llm_cli, dialogue_cli, decoder_cli, train_cli, eval_cli, data_cli, upstream_cli,
                server_cli):
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"freeze-omni {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

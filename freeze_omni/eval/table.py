"""Rich tables for evaluation and benchmark reports (to stderr under ``--json``, so stdout stays one JSON line)."""

from __future__ import annotations

import sys
from typing import Any, Sequence


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], to_stderr: bool = False) -> None:
    """Print ``rows`` under ``columns`` (None shows as "-", floats with 2 decimals)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*("-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    Console(file=sys.stderr if to_stderr else sys.stdout).print(table)

"""Lazy package exports: a package lists ``{name: submodule}`` and its names import on first use, so importing
the package (e.g. for the command line's parser) does not pull in torch."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The module-level ``__getattr__`` of ``package`` resolving ``exports`` (``name -> submodule``)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

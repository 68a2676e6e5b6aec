"""Loading the released upstream Freeze-Omni weights (``checkpoints/`` + a Qwen2-7B-Instruct folder).

``release`` reads the folder and translates its configs, ``mapping`` maps tensor names (and accounts for every
one), ``convert`` writes our bundle, ``cli`` is ``freeze-omni convert``, ``testing`` writes a fake release with
random weights for tests. A converted bundle runs through the same code as our own models; the upstream
behaviours live in its ``bundle.yaml`` as named settings (see the :mod:`freeze_omni.upstream.convert` docstring).
Names below resolve lazily.
"""

from __future__ import annotations

from freeze_omni._lazy import lazy_exports

_EXPORTS = {
    "UpstreamError": "release",
    "open_release": "release",
    "load_upstream": "convert",
    "convert": "convert",
    "write_bundle": "convert",
    "MappingReport": "mapping",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Offline data making: manifests, text normalization, voices and synthesis, a text corpus, augmentation, a
skip-tolerant speech dataset, and the stage-3 Q&A / state-label data (DESIGN.md §5).

Manifest and text helpers import eagerly; the rest (numpy/scipy/torch) loads on first use, so the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from freeze_omni.data.manifest import append_rows, read_manifest, write_manifest
from freeze_omni.data.text import normalize_text

_LAZY = {
    "Augmenter": "freeze_omni.data.augment",
    "SpeechDataset": "freeze_omni.data.dataset",
    "collate_skip_none": "freeze_omni.data.dataset",
    "build_corpus": "freeze_omni.data.corpus",
    "synthesize": "freeze_omni.data.synth",
    "list_voices": "freeze_omni.data.voices",
    "build_qa": "freeze_omni.data.qa",
    "chunk_labels": "freeze_omni.data.qa",
    "speech_end": "freeze_omni.data.qa",
    "turn_audio": "freeze_omni.data.qa",
    "read_qa_manifest": "freeze_omni.data.qa",
    "read_state2_manifest": "freeze_omni.data.qa",
}

__all__ = ["append_rows", "normalize_text", "read_manifest", "write_manifest", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

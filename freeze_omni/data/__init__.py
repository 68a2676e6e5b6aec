"""Offline data making: manifests, text normalization, voices and synthesis, a text corpus, augmentation, a
skip-tolerant speech dataset, and the stage-3 Q&A / state-label data (DESIGN.md §5).

Manifest and text helpers import eagerly; the rest (numpy/scipy/torch) loads on first use, so the CLI stays fast.
"""

from __future__ import annotations

from freeze_omni._lazy import lazy_exports
from freeze_omni.data.manifest import append_rows, read_manifest, write_manifest
from freeze_omni.data.text import normalize_text

_LAZY = {
    "Augmenter": "augment",
    "SpeechDataset": "dataset",
    "collate_skip_none": "dataset",
    "build_corpus": "corpus",
    "synthesize": "synth",
    "list_voices": "voices",
    "build_qa": "qa",
    "chunk_labels": "qa",
    "speech_end": "qa",
    "turn_audio": "qa",
    "read_qa_manifest": "qa",
    "read_state2_manifest": "qa",
}

__all__ = ["append_rows", "normalize_text", "read_manifest", "write_manifest", *_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)

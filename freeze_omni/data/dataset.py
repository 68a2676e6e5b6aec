"""A torch ``Dataset`` over an ASR/TTS manifest that skips unreadable audio instead of failing.

Items are ``{"id", "wave": float32 [T], "text", "speaker"}``, or ``None`` when the audio cannot be read
(missing, corrupt, empty). ``None`` items are counted in ``SpeechDataset.skipped`` and logged with
``logging.warning`` (DataLoader workers are separate processes, so that counter only sees its own process);
:func:`collate_skip_none` drops them and reports how many it dropped in each batch's ``num_skipped``, which
is the count to trust across workers.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from freeze_omni.audio.io import AudioError, load_audio
from freeze_omni.data.manifest import read_manifest

log = logging.getLogger(__name__)

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class SpeechDataset(Dataset):
    """Utterances of a manifest (path or rows with absolute ``audio`` paths), loaded at ``sample_rate``.

    Args:
        manifest: a ``.jsonl`` path or already-read rows.
        sample_rate: the rate waves are resampled to.
        max_duration: drop rows whose manifest ``duration`` (seconds) exceeds this (rows without one stay).
        augmenter: called as ``augmenter(wave, rng)``, e.g. :class:`freeze_omni.data.augment.Augmenter`.
        seed: with :meth:`set_epoch` and the index, seeds the augmentation generator, so an item is
            augmented the same way in any worker.
    """

    def __init__(self, manifest: Union[str, os.PathLike, Sequence[dict[str, Any]]], sample_rate: int = 16000,
                 max_duration: float | None = None, augmenter: Augment | None = None, seed: int = 0) -> None:
        rows = read_manifest(manifest) if isinstance(manifest, (str, os.PathLike)) else list(manifest)
        if max_duration is not None:
            rows = [r for r in rows if float(r.get("duration") or 0.0) <= max_duration]
        self.rows = rows
        self.sample_rate = sample_rate
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (call once per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, Any] | None:
        row = self.rows[idx]
        try:
            wave = load_audio(row["audio"], self.sample_rate)
        except (AudioError, KeyError) as e:
            self.skipped += 1
            log.warning("skipping %s: %s", row.get("id", idx), e)
            return None
        if self.augmenter is not None:
            wave = self.augmenter(wave, np.random.default_rng([self.seed, self.epoch, idx]))
        return {"id": row.get("id", str(idx)), "wave": np.asarray(wave, dtype=np.float32),
                "text": row.get("text", ""), "speaker": row.get("speaker", "")}


def collate_skip_none(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Drop ``None`` items and pad the rest.

    Returns:
        ``{"ids": list[str], "texts": list[str], "speakers": list[str], "wave": float32 [B, T_max]
        (zero-padded), "wave_lens": int64 [B], "num_skipped": int}``; ``B`` may be 0.
    """
    items = [b for b in batch if b is not None]
    lens = [len(b["wave"]) for b in items]
    wave = torch.zeros(len(items), max(lens, default=0))
    for i, b in enumerate(items):
        wave[i, : lens[i]] = torch.from_numpy(b["wave"])
    return {"ids": [b["id"] for b in items], "texts": [b["text"] for b in items],
            "speakers": [b["speaker"] for b in items], "wave": wave,
            "wave_lens": torch.tensor(lens, dtype=torch.long), "num_skipped": len(batch) - len(items)}

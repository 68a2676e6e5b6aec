"""How the shared trainer turns a dataset into batches: a deterministic, sharded epoch order, None-skipping
collation, and device transfer.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

import numpy as np
import torch


def epoch_batches(
    n_items: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1, shuffle: bool = True
) -> list[list[int]]:
    """This rank's batches of dataset indices for one epoch; a pure function of its arguments.

    Like DistributedSampler: one permutation per (seed, epoch), the uneven tail dropped so every rank gets
    ``n_items // world`` items, rank ``r`` takes every ``world``-th item from ``r``. The last batch may be short
    (equally short on every rank).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_items) if shuffle else np.arange(n_items)
    mine = order[: (n_items // world) * world][rank::world].tolist()
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


class SkipNone:
    """Drops None items (unreadable audio), then calls the stage's collate.

    Returns ``(n_items, audio_seconds, batch)``, or None for an empty batch (no item left, or the stage's
    collate returned None or an empty container). ``audio_seconds`` sums the batch's optional
    ``"audio_seconds"`` entry here, on the CPU, so the training loop never waits on the device for it.
    """

    def __init__(self, fn: Callable[[list], Any]) -> None:
        self.fn = fn

    def __call__(self, items: list) -> tuple[int, float, Any] | None:
        items = [x for x in items if x is not None]
        batch = self.fn(items) if items else None
        if batch is None or (isinstance(batch, (dict, list, tuple)) and len(batch) == 0):
            return None
        audio = batch.get("audio_seconds") if isinstance(batch, dict) else None
        return len(items), float(torch.as_tensor(audio).sum()) if audio is not None else 0.0, batch


def worker_init(_: int) -> None:
    # Ctrl-C and a group-wide SIGTERM (pkill -f, a job manager) are for the main process, which finishes its
    # step and checkpoints; a worker that died of them would take the run down with an error instead.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x

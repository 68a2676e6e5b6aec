"""Training: the loop shared by every stage (`Trainer`), its config, checkpoints, and the `train` command.

Exports resolve lazily so that ``freeze_omni.train.cli`` (and ``freeze-omni --help``) never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freeze_omni._lazy import lazy_exports

if TYPE_CHECKING:
    from freeze_omni.train.batches import epoch_batches
    from freeze_omni.train.checkpoint import latest_checkpoint, load_trainable, trainable_state_dict
    from freeze_omni.train.config import TrainConfig, lr_factor
    from freeze_omni.train.trainer import Trainer, TrainResult

_EXPORTS = {
    "TrainConfig": "config",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "lr_factor": "config",
    "epoch_batches": "batches",
    "load_trainable": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "trainable_state_dict": "checkpoint",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)

"""`TrainConfig`: the knobs of the shared training loop, with strict loading from YAML-shaped dicts.

Torch-free on purpose, so command-line code can validate a config without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

LR_SCHEDULES = ("cosine", "constant", "noam")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything the shared `Trainer` needs; stage-specific settings live elsewhere.

    Steps count optimizer updates; one update consumes ``grad_accum`` non-empty micro-batches of
    ``batch_size`` items per rank.
    """

    out_dir: str
    max_steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # one of LR_SCHEDULES; every schedule warms up linearly
    min_lr_ratio: float = 0.1  # cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # never applied to biases, norm weights or other 1-D parameters
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float | None = 1.0  # max global grad norm; None or 0 disables clipping
    grad_accum: int = 1
    batch_size: int = 8  # items per micro-batch, per rank
    num_workers: int = 0  # DataLoader workers; exact resume of random augmentation needs 0 (see Trainer)
    shuffle: bool = True
    precision: str = "fp32"  # one of PRECISIONS; bf16 runs the forward under torch.autocast
    log_every: int = 10
    ckpt_every: int = 1000  # 0: only at the end (and on SIGTERM/SIGINT)
    keep_last: int = 3  # checkpoints kept on disk; 0 keeps all
    eval_every: int = 0  # 0: never
    seed: int = 0
    threads: int | None = None  # torch.set_num_threads when set
    device: str | None = None  # default: cuda:LOCAL_RANK if available, else cpu
    find_unused_parameters: bool = False  # passed to DistributedDataParallel

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("max_steps", "grad_accum", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "num_workers", "ckpt_every", "keep_last", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a YAML section). Unknown keys and ill-typed values raise ValueError.

        Numbers written as strings (PyYAML reads ``1e-3`` as a string) are converted.
        """
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig key(s) {unknown}; known keys: {sorted(known)}")
        if "out_dir" not in d:
            raise ValueError("TrainConfig needs 'out_dir'")
        return cls(**{k: _coerce(k, hints[k], v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that `from_dict` reads back (betas as a list, YAML-friendly)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for 0-based optimizer step ``step``: linear warmup, then the schedule.

    ``noam`` is ``min(s / warmup, sqrt(warmup / s))`` with ``s = step + 1`` (peak ``lr`` at the end of warmup,
    then inverse square root); ``cosine`` decays to ``min_lr_ratio`` at ``max_steps``.
    """
    s, warm = step + 1, cfg.warmup_steps
    if cfg.lr_schedule == "noam":
        return min(s / max(warm, 1), math.sqrt(max(warm, 1) / s))
    if s <= warm:
        return s / warm
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (s - warm) / max(1, cfg.max_steps - warm))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against a field's type ``hint``, converting only lossless, obvious cases."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    bad = ValueError(f"TrainConfig.{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool):  # bool is an int subclass: never accept it for numbers
        raise bad
    if hint is int:
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise bad
    if hint is float:
        if isinstance(value, (int, float)):
            return float(value)
        if not isinstance(value, str):
            raise bad
        try:
            return float(value)
        except ValueError:
            raise bad from None
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    if typing.get_origin(hint) is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(typing.get_args(hint)):
            return tuple(_coerce(name, t, v) for t, v in zip(typing.get_args(hint), value))
        raise bad
    return value

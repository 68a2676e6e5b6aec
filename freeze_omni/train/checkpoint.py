"""Checkpoint files of the shared trainer: trainable-only weights, atomic writes, RNG states.

Layout under ``out_dir/ckpt/``::

    step_00001000.pt   one dict: step, epoch, batch_in_epoch, model (trainable tensors only),
                       optimizer, scheduler, rng (one entry per rank), world_size, config
    latest             text: the file name of the newest complete checkpoint

Every file is written to ``*.tmp`` and moved into place with `os.replace`, so a process killed mid-write
leaves at worst a stray ``*.tmp`` that readers ignore. The frozen parts of a model (the LLM) never enter a
checkpoint: they are rebuilt from their own source.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CKPT_SUBDIR = "ckpt"
LATEST = "latest"


def ckpt_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters with ``requires_grad`` plus the persistent buffers of modules that own such parameters.

    The buffers (e.g. BatchNorm running statistics next to a trainable weight) belong to the trained part;
    buffers of fully frozen modules (the LLM's) are left out, as are the frozen parameters.
    """
    state = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    for mod_name, mod in model.named_modules():
        if not any(p.requires_grad for p in mod.parameters(recurse=False)):
            continue
        for b_name, buf in mod.named_buffers(recurse=False):
            if buf is not None and b_name not in mod._non_persistent_buffers_set:
                state[f"{mod_name}.{b_name}" if mod_name else b_name] = buf.detach().cpu()
    return state


def latest_checkpoint(path: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``path`` (an ``out_dir``, its ``ckpt/`` folder, or a file).

    Follows the ``latest`` pointer; if it is missing or dangling, falls back to the highest ``step_*.pt``.
    Returns None when there is none.
    """
    p = Path(path)
    if p.is_file():
        return p
    d = p / CKPT_SUBDIR if (p / CKPT_SUBDIR).is_dir() else p
    ptr = d / LATEST
    if ptr.is_file():
        target = d / ptr.read_text().strip()
        if target.is_file():
            return target
    steps = sorted(d.glob("step_*.pt"))  # zero-padded names sort by step; never matches *.pt.tmp
    return steps[-1] if steps else None


def load_trainable(
    model: nn.Module, ckpt_path: str | os.PathLike, *, strict: bool = False
) -> tuple[list[str], list[str]]:
    """Copy the trained tensors of a trainer checkpoint into ``model`` (for later stages and export).

    Args:
        model: the module whose names match the checkpoint's (as the stage that wrote it saw them).
        ckpt_path: a ``step_*.pt`` file, or an ``out_dir`` / ``ckpt`` folder (its latest checkpoint).
        strict: raise ValueError when a checkpoint tensor has no home in ``model`` or a trainable parameter
            of ``model`` is not in the checkpoint.

    Returns:
        ``(missing, unexpected)``: trainable parameter names of ``model`` absent from the checkpoint, and
        checkpoint names absent from ``model``. Frozen parameters are never reported missing.
    """
    path = latest_checkpoint(ckpt_path)
    if path is None:
        raise FileNotFoundError(f"no checkpoint under {ckpt_path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    result = model.load_state_dict(state, strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in result.missing_keys if n in trainable]
    unexpected = list(result.unexpected_keys)
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: missing trainable {missing}, unexpected {unexpected}")
    return missing, unexpected


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to ``path.tmp``, fsync, then rename over ``path`` (atomic on POSIX)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prune_checkpoints(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest ``step_*.pt`` (0 keeps all) and stray ``*.tmp`` files."""
    for tmp in ckpt_dir.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    if keep_last > 0:
        for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep_last]:
            old.unlink(missing_ok=True)


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and current-CUDA-device generator states, in types that ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,  # this rank's device
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `get_rng_state`."""
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tuples(x: Any) -> Any:
    """Lists back to tuples (a pickled `random.getstate()` survives loading, but be safe)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x

"""Data of output stages 2 and 3: codec tokens (and LLM hidden states) computed once and cached next to the manifest.

* ``decoder`` rows ``{"text", "audio"}`` (assistant voice) -> ``{"codes"}``.
* ``prefix`` rows ``{"question", "answer", "audio"}`` (+ optional ``"answer_before"``: the answer text before
  this segment, when a row is one segment of a longer answer) -> ``{"codes", "hidden"}``: ``hidden [N, H]`` are the
  frozen LLM's final hidden states that produced each of the ``N`` answer tokens, from one teacher-forced pass over
  ``system prompt + question + answer_before + answer`` (no sampling).

The cache is ``<manifest stem>.<kind>-<key>.pt`` beside the manifest, ``key`` a hash of everything the items
depend on (codec weights and config; for ``prefix`` also the LLM fingerprint and the system prompt; the rows). It
is written every ``save_seconds`` while being built, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from freeze_omni.train.checkpoint import atomic_save

log = logging.getLogger(__name__)


def tensors_hash(state: dict[str, torch.Tensor], extra: Any = None) -> str:
    """A short hash of a state dict's names, shapes and bytes (and any JSON-able ``extra``)."""
    h = hashlib.blake2b(digest_size=8)
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cache_path(manifest: str | os.PathLike, kind: str, key: str) -> Path:
    m = Path(manifest)
    return m.parent / f"{m.stem}.{kind}-{key}.pt"


def build_cache(path: Path, n_rows: int, make: Callable[[int], Optional[dict]], key: str,
                save_seconds: float = 120.0, desc: str = "cache") -> list[Optional[dict]]:
    """Items ``make(i)`` for ``i < n_rows`` (None: unusable row), from ``path`` if complete, else resumed.

    Only rank 0 of a ``torchrun`` job builds; the other ranks wait for the complete file.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        while True:
            state = _load(path, key)
            if state is not None and state["complete"]:
                return state["items"]
            time.sleep(5.0)
    state = _load(path, key) or {"key": key, "items": [], "complete": False}
    items: list[Optional[dict]] = state["items"]
    if state["complete"] and len(items) == n_rows:
        return items
    if items:
        log.info("%s: resuming at row %d of %d (%s)", desc, len(items), n_rows, path)
    t_save = time.monotonic()
    from tqdm.auto import tqdm

    for i in tqdm(range(len(items), n_rows), initial=len(items), total=n_rows, desc=desc, dynamic_ncols=True):
        items.append(make(i))
        if time.monotonic() - t_save > save_seconds:
            atomic_save(state, path)
            t_save = time.monotonic()
    state["complete"] = True
    atomic_save(state, path)
    return items


def _load(path: Path, key: str) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file truncated by a crash outside atomic_save, or of another format
        log.warning("ignoring unreadable cache %s: %s", path, e)
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def codec_items(rows: list[dict], codec: Any, manifest: str | os.PathLike, kind: str = "codes",
                hidden_fn: Callable[[dict], torch.Tensor] | None = None, extra_key: Any = None,
                save_seconds: float = 120.0) -> list[Optional[dict]]:
    """Cached ``{"codes": int16 [N]}`` (+ ``"hidden": fp16 [M, H]`` from ``hidden_fn(row)``) for every row.

    Args:
        rows: manifest rows with absolute ``audio`` paths.
        codec: a :class:`freeze_omni.codec.Codec` in eval mode.
        manifest: the manifest path (the cache goes beside it).
        kind: cache name part (``"codes"``, ``"prefix"``).
        hidden_fn: row -> LLM hidden states, for ``prefix``.
        extra_key: anything else the items depend on (LLM fingerprint, system prompt).
    """
    from freeze_omni.audio.io import AudioError, load_audio

    fields = ("audio", "text", "question", "answer", "answer_before")
    key = tensors_hash(codec.state_dict(), {"codec": codec.cfg.to_dict(), "extra": extra_key, "kind": kind,
                                            "rows": [[r.get(f) for f in fields] for r in rows]})
    device = next(codec.parameters()).device

    @torch.no_grad()
    def make(i: int) -> Optional[dict]:
        row = rows[i]
        try:
            wave = load_audio(row["audio"], sample_rate=codec.sample_rate)
        except AudioError as e:
            log.warning("skipping unreadable audio: %s", e)
            return None
        codes = codec.encode(torch.from_numpy(wave).unsqueeze(0).to(device))[0]
        item = {"codes": codes.to(torch.int16).cpu()}
        if hidden_fn is not None:
            item["hidden"] = hidden_fn(row).to(torch.float16).cpu()
        return item

    return build_cache(cache_path(manifest, kind, key), len(rows), make, key, save_seconds, desc=f"{kind} cache")

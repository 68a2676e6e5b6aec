"""Global CMVN in the upstream JSON format: ``{"mean_stat": [D], "var_stat": [D], "frame_num": N}`` (sums)."""

from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np


class GlobalCMVN:
    """Accumulates feature statistics and turns them into ``mean`` / ``istd`` vectors.

    mean = mean_stat / frame_num; var = var_stat / frame_num - mean^2 floored at 1e-20; istd = 1 / sqrt(var),
    applied as ``(x - mean) * istd`` (upstream's rule).
    """

    def __init__(self, dim: int = 80) -> None:
        self.mean_stat = np.zeros(dim, dtype=np.float64)
        self.var_stat = np.zeros(dim, dtype=np.float64)
        self.frame_num = 0

    def accumulate(self, feats: np.ndarray) -> None:
        """Add ``[T, D]`` frames to the statistics."""
        feats = np.asarray(feats, dtype=np.float64)
        self.mean_stat += feats.sum(axis=0)
        self.var_stat += (feats**2).sum(axis=0)
        self.frame_num += feats.shape[0]

    @classmethod
    def from_features(cls, feats: Iterable[np.ndarray], dim: int = 80) -> "GlobalCMVN":
        cmvn = cls(dim)
        for f in feats:
            cmvn.accumulate(f)
        return cmvn

    @property
    def mean(self) -> np.ndarray:
        if self.frame_num == 0:
            raise ValueError("CMVN has no statistics")
        return (self.mean_stat / self.frame_num).astype(np.float32)

    @property
    def istd(self) -> np.ndarray:
        mean = self.mean_stat / self.frame_num
        var = np.maximum(self.var_stat / self.frame_num - mean**2, 1e-20)
        return (1.0 / np.sqrt(var)).astype(np.float32)

    def apply(self, feats: np.ndarray) -> np.ndarray:
        return ((feats - self.mean) * self.istd).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean_stat": self.mean_stat.tolist(), "var_stat": self.var_stat.tolist(),
                "frame_num": int(self.frame_num)}

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GlobalCMVN":
        with open(path) as f:
            d = json.load(f)
        missing = {"mean_stat", "var_stat", "frame_num"} - set(d)
        if missing:
            raise ValueError(f"{path}: not an upstream CMVN JSON file (missing {sorted(missing)})")
        cmvn = cls(len(d["mean_stat"]))
        cmvn.mean_stat = np.asarray(d["mean_stat"], dtype=np.float64)
        cmvn.var_stat = np.asarray(d["var_stat"], dtype=np.float64)
        cmvn.frame_num = int(d["frame_num"])
        return cmvn

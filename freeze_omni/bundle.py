"""Model bundles: a folder with ``bundle.yaml`` and one ``*.safetensors`` file per trained component.

``bundle.yaml`` holds the component configs, sample rate, front end and (from the bridge stage on) the chat
framing and LLM reference; later stages extend it, never rename its keys. The LLM is referenced, never copied.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml
from safetensors.torch import load_file, save_file

from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder

BUNDLE_FILE = "bundle.yaml"
FORMAT = "freeze-omni-bundle/1"


class BundleError(FileNotFoundError):
    """A bundle folder is missing, incomplete or of an unknown format."""


class Bundle:
    """An opened bundle folder (see module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        cfg_path = self.path / BUNDLE_FILE
        if not cfg_path.is_file():
            raise BundleError(f"{self.path}: not a model bundle (no {BUNDLE_FILE})")
        with open(cfg_path) as f:
            self.config: dict[str, Any] = yaml.safe_load(f) or {}
        if self.config.get("format") != FORMAT:
            raise BundleError(f"{cfg_path}: unknown bundle format {self.config.get('format')!r}")

    def has(self, component: str) -> bool:
        return component in self.config.get("components", {})

    def file(self, component: str) -> Path:
        """Path of a component's file (weights or otherwise), checked to exist."""
        files = self.config.get("components", {})
        if component not in files:
            raise BundleError(f"{self.path}: bundle has no {component!r} component")
        p = self.path / files[component]
        if not p.is_file():
            raise BundleError(f"{p}: missing component file")
        return p

    def tensors(self, component: str) -> dict[str, torch.Tensor]:
        """A component's tensors as float32."""
        return {k: v.float() for k, v in load_file(str(self.file(component))).items()}

    def encoder_config(self) -> EncoderConfig:
        return encoder_config_from_dict(self.config["encoder"])

    def load_encoder(self) -> SpeechEncoder:
        enc = SpeechEncoder(self.encoder_config())
        enc.load_state_dict(self.tensors("encoder"), strict=True)
        return enc.eval()


def encoder_config_from_dict(d: dict) -> EncoderConfig:
    known = {f.name for f in fields(EncoderConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown encoder config keys {sorted(unknown)}")
    return EncoderConfig(**d)


def save_component(bundle_dir: str | os.PathLike, name: str, state: dict[str, torch.Tensor],
                   dtype: torch.dtype = torch.float16, keep_fp32: Iterable[str] = ()) -> str:
    """Write ``name.safetensors`` (floating tensors cast to ``dtype``, those named in ``keep_fp32`` to float32)
    atomically; returns the file name."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    fname = f"{name}.safetensors"
    keep = set(keep_fp32)
    tensors = {k: (v.detach().to(torch.float32 if k in keep else dtype) if v.is_floating_point()
                   else v.detach()).contiguous().cpu()
               for k, v in state.items()}
    tmp = bundle_dir / f"{fname}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, bundle_dir / fname)
    return fname


def write_bundle_config(bundle_dir: str | os.PathLike, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into ``bundle.yaml`` (created if missing; ``components`` merged key by key)."""
    path = Path(bundle_dir) / BUNDLE_FILE
    cfg: dict[str, Any] = {"format": FORMAT}
    if path.is_file():
        with open(path) as f:
            cfg.update(yaml.safe_load(f) or {})
    comps = {**cfg.get("components", {}), **updates.get("components", {})}
    cfg.update({k: v for k, v in updates.items() if k != "components"})
    cfg["components"] = comps
    tmp = path.with_suffix(".yaml.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, path)
    return cfg


def encoder_config_dict(cfg: EncoderConfig) -> dict[str, Any]:
    return asdict(cfg)


def ship(src: str | os.PathLike, dst: str | os.PathLike, parts: tuple[str, ...],
         sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """Copy trained components ``parts`` of bundle ``src`` into bundle ``dst`` (created if missing), with the
    ``bundle.yaml`` sections that describe them (each part's own section, plus ``sections``). Refuses to mix
    components trained for different LLMs (``llm.ref``)."""
    import shutil

    s, dst = Bundle(src), Path(dst)
    have: dict[str, Any] = {}
    if (dst / BUNDLE_FILE).is_file():
        with open(dst / BUNDLE_FILE) as f:
            have = yaml.safe_load(f) or {}
    ref, shipped = (s.config.get("llm") or {}).get("ref"), (have.get("llm") or {}).get("ref")
    if ref and shipped and ref != shipped:
        raise BundleError(f"{src} was trained for LLM {ref!r}; {dst} uses {shipped!r}")
    dst.mkdir(parents=True, exist_ok=True)
    comps = s.config.get("components", {})
    for p in parts:
        if p not in comps:
            raise BundleError(f"{src}: no {p!r} component to ship")
        shutil.copy(s.path / comps[p], dst / comps[p])
    update = {k: s.config[k] for k in (*parts, *sections) if k in s.config}
    update["components"] = {p: comps[p] for p in parts}
    return write_bundle_config(dst, update)

"""Building and saving a `SpeechLLM` from/to a model bundle (encoder, bridge = adapter + embeddings + head)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch

from freeze_omni.bundle import Bundle, encoder_config_dict, save_component, write_bundle_config
from freeze_omni.llm import llm_reference
from freeze_omni.llm.backbone import FrozenLLM
from freeze_omni.llm.chat import ChatFraming
from freeze_omni.llm.model import BridgeConfig, SpeechLLM


def bridge_config_from_dict(d: Optional[dict]) -> BridgeConfig:
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(BridgeConfig)}
    if set(d) - known:
        raise ValueError(f"unknown bridge config keys {sorted(set(d) - known)}")
    return BridgeConfig(**d)


def llm_settings(bundle: Bundle) -> tuple[str, str]:
    """``(llm reference, system prompt)`` of a bundle (defaults: the built-in SmolLM2 and our voice prompt)."""
    return llm_reference(bundle.config)


FRAMINGS = {"chatml": ChatFraming.chatml, "qwen2_upstream": ChatFraming.qwen2_upstream}
"""Named chat framings a bundle may pin (``llm.framing``); absent: derived from the tokenizer's template."""


def llm_framing(bundle: Bundle) -> Optional[ChatFraming]:
    """The chat framing a bundle pins (``llm.framing``, e.g. ``qwen2_upstream`` for converted upstream bundles)."""
    name = (bundle.config.get("llm", {}) or {}).get("framing")
    if name is None:
        return None
    if name not in FRAMINGS:
        raise ValueError(f"{bundle.path}: unknown llm.framing {name!r}; known: {sorted(FRAMINGS)}")
    return FRAMINGS[name]()


def load_speech_llm(path: str | Path, llm: Optional[FrozenLLM] = None, require_bridge: bool = True
                    ) -> tuple[SpeechLLM, str]:
    """Open a bundle as a :class:`SpeechLLM` (eval mode) and its system prompt.

    ``llm`` reuses an already loaded backbone (it must be the one the bundle references). Without a trained
    bridge (``require_bridge=False``) the adapter and head start from random weights (training stage 2).
    """
    b = Bundle(path)
    ref, system = llm_settings(b)
    llm = llm or FrozenLLM.load(ref, framing=llm_framing(b))
    model = SpeechLLM(b.load_encoder(), llm, bridge_config_from_dict(b.config.get("bridge")))
    if b.has("bridge"):
        missing, unexpected = _load_bridge(model, b.tensors("bridge"))
        if missing or unexpected:
            raise ValueError(f"{path}: bridge weights do not fit: missing {missing}, unexpected {unexpected}")
    elif require_bridge:
        raise ValueError(f"{path}: the bundle has no trained bridge (run `freeze-omni train align` / `qa`)")
    return model.eval(), system


def _load_bridge(model: SpeechLLM, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = {**{f"adapter.{k}": v for k, v in model.adapter.state_dict().items()},
           **{f"bridge.{k}": v for k, v in model.bridge.state_dict().items()}}
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    model.adapter.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")}, strict=False)
    model.bridge.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("bridge.")}, strict=False)
    return missing, unexpected


def save_speech_llm(model: SpeechLLM, bundle_dir: str | Path, llm_ref: str, system_prompt: str,
                    save_encoder: bool = True) -> dict[str, Any]:
    """Write the bridge (and the encoder, when it was trained) into a bundle folder and update bundle.yaml."""
    state = {**{f"adapter.{k}": v for k, v in model.adapter.state_dict().items()},
             **{f"bridge.{k}": v for k, v in model.bridge.state_dict().items()}}
    comps = {"bridge": save_component(bundle_dir, "bridge", state)}
    updates: dict[str, Any] = {"bridge": dataclasses.asdict(model.cfg),
                               "llm": {"ref": llm_ref, "system_prompt": system_prompt,
                                       "hidden_size": model.llm.hidden_size,
                                       "fingerprint": model.llm.fingerprint()}}
    if save_encoder:
        comps["encoder"] = save_component(bundle_dir, "encoder", model.encoder.state_dict())
        cfg = dataclasses.replace(model.encoder.cfg, dropout=0.0, attention_dropout=0.0)
        updates["encoder"] = encoder_config_dict(cfg)
    updates["components"] = comps
    return write_bundle_config(bundle_dir, updates)

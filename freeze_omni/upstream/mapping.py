"""Tensor-name mapping from the upstream checkpoint files onto our modules, with an exact accounting.

Each released file maps by ordered prefix rules (the first matching upstream prefix is rewritten to ours); the
inverse rules name what is missing in upstream terms. Our module names already follow the released state dicts
almost everywhere; the differences are:

* ``audiollm/final.pt``: ``encoder.global_cmvn.mean`` / ``.istd`` -> encoder ``front.cmvn_mean`` / ``cmvn_istd``
  (optional [1]); ``encoder.enc.0.*`` -> encoder ``front.*`` (``core.conv.0``, ``core.conv.2``, ``core.out.0``);
  ``encoder.enc.1.embed.*`` -> encoder ``front.embed.*``; ``encoder.enc.1.*`` -> encoder ``*`` (``encoders.N.*``,
  ``after_norm``); ``adpter.*`` (sic) -> bridge ``adapter.*`` (``conv1d2``, ``bn2``, ``project``);
  ``predictor_head.*`` ``[4, H]`` -> bridge ``bridge.predictor_head.proj.*``; ``prompt_embeddings.*`` /
  ``task_embeddings.*`` -> bridge ``bridge.prompt_embeddings.*`` / ``bridge.task_embeddings.*``;
* ``decoder/final.pt`` (a bare state dict, or one under ``model``): the same HF Llama names;
* ``codec/final.pt``: ``generator.*`` (weight norm folded first) and ``quantizer.*``, the same names.

[1] taken from ``audiollm/global_cmvn`` when the file lacks them (upstream loads that file too; when both exist
the checkpoint's values win, as in upstream, whose checkpoint load comes after building the CMVN).

Ignored on purpose (reported as ``ignored``, never as unexpected): ``llm_decoder.*`` (the frozen LLM comes from
``--llm``), the codec's ``encoder`` (only needed to make training targets), non-persistent leftovers
(``*.num_batches_tracked``, ``*rotary_emb*.inv_freq``, positional tables ``*.pe``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

AUDIOLLM_RULES: list[tuple[str, str, str]] = [  # (upstream prefix, component, our prefix)
    ("encoder.global_cmvn.mean", "encoder", "front.cmvn_mean"),
    ("encoder.global_cmvn.istd", "encoder", "front.cmvn_istd"),
    ("encoder.enc.0.", "encoder", "front."),
    ("encoder.enc.1.embed.", "encoder", "front.embed."),
    ("encoder.enc.1.", "encoder", ""),
    ("adpter.", "bridge", "adapter."),
    ("predictor_head.", "bridge", "bridge.predictor_head.proj."),
    ("prompt_embeddings.", "bridge", "bridge.prompt_embeddings."),
    ("task_embeddings.", "bridge", "bridge.task_embeddings."),
]
DECODER_RULES = [("", "decoder", "")]
CODEC_RULES = [("generator.", "codec", "generator."), ("quantizer.", "codec", "quantizer.")]

OPTIONAL = {"encoder": {"front.cmvn_mean", "front.cmvn_istd"}}
"""Our keys that may be absent from the upstream files (filled from elsewhere), per component."""


def is_ignored(key: str) -> bool:
    """Upstream keys that are known and deliberately not converted (see the module docstring)."""
    last = key.rsplit(".", 1)[-1]
    return (key.startswith("llm_decoder.") or last == "num_batches_tracked"
            or (last == "inv_freq" and "rotary_emb" in key) or last == "pe")


@dataclass
class MappingReport:
    """What did not fit, in upstream names prefixed with their file (``audiollm/final.pt:adpter.bn2.bias``).

    ``ok`` iff ``missing``, ``unexpected`` and ``mismatched`` are all empty.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # file -> number of ignored tensors
    notes: list[str] = field(default_factory=list)
    shape_misfits: set[tuple[str, str]] = field(default_factory=set, repr=False)  # (component, our key)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict:
        return {"missing": self.missing, "unexpected": self.unexpected, "mismatched": self.mismatched,
                "ignored": self.ignored, "notes": self.notes}

    def message(self, limit: int = 20) -> str:
        """A readable summary for an error message."""
        parts = []
        for name in ("missing", "unexpected", "mismatched"):
            items = getattr(self, name)
            if items:
                more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
                parts.append(f"{len(items)} {name}: " + ", ".join(items[:limit]) + more)
        return "; ".join(parts) or "all tensors mapped"


def _to_ours(key: str, rules: list[tuple[str, str, str]]) -> tuple[str, str] | None:
    """``(component, our key)`` of an upstream key: the first rule whose prefix matches (a rule without a trailing
    dot matches one key exactly)."""
    for up, comp, ours in rules:
        if up == "" or up.endswith("."):
            if key.startswith(up):
                return comp, ours + key[len(up):]
        elif key == up:
            return comp, ours
    return None


def _to_upstream(comp: str, key: str, rules: list[tuple[str, str, str]]) -> str:
    """Inverse of :func:`_to_ours` for reporting (longest matching our-prefix wins)."""
    best = None
    for up, c, ours in rules:
        if c != comp:
            continue
        exact = not ours.endswith(".") and ours != ""
        if (exact and key == ours) or (not exact and key.startswith(ours)):
            if best is None or len(ours) > len(best[1]):
                best = (up, ours)
    if best is None:
        return key
    up, ours = best
    return up + key[len(ours):]


def map_file(tensors: dict[str, torch.Tensor], file: str, rules: list[tuple[str, str, str]],
             expected: dict[str, dict[str, torch.Size]], report: MappingReport,
             out: dict[str, dict[str, torch.Tensor]]) -> None:
    """Map one file's tensors into ``out[component][our key]`` and account for every name.

    Args:
        tensors: the file's (flattened) state dict, upstream names.
        file: its name for the report (``"audiollm/final.pt"``).
        rules: ``(upstream prefix, component, our prefix)``, first match wins.
        expected: per component our keys and shapes (from a model built on the meta device).
        report: filled with unexpected / mismatched / ignored names (missing ones: :func:`finish`).
        out: receives the mapped tensors.
    """
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            report.unexpected.append(f"{file}:{key} (not a tensor)")
            continue
        if is_ignored(key):
            report.ignored[file] = report.ignored.get(file, 0) + 1
            continue
        hit = _to_ours(key, rules)
        if hit is None or hit[1] not in expected.get(hit[0], {}):
            report.unexpected.append(f"{file}:{key}")
            continue
        comp, ours = hit
        want = expected[comp][ours]
        if tuple(t.shape) != tuple(want):
            report.mismatched.append(f"{file}:{key} shape {list(t.shape)}, expected {list(want)}")
            report.shape_misfits.add((comp, ours))
            continue
        out.setdefault(comp, {})[ours] = t


def finish(expected: dict[str, dict[str, torch.Size]], out: dict[str, dict[str, torch.Tensor]],
           sources: dict[str, tuple[str, list[tuple[str, str, str]]]], report: MappingReport,
           optional: dict[str, Iterable[str]] = OPTIONAL) -> None:
    """Report every expected key that no file provided (and that is not optional), in upstream names.

    ``sources``: component -> (file name, rules) used to name the missing key upstream's way.
    """
    for comp, keys in expected.items():
        have = out.get(comp, {})
        skip = set(optional.get(comp, ()))
        file, rules = sources[comp]
        for k in keys:
            if k in have or k in skip or (comp, k) in report.shape_misfits:
                continue
            name = _to_upstream(comp, k, rules)
            if comp == "codec" and name.startswith("generator.") and name.endswith(".weight"):
                name += " (weight_g + weight_v)"
            report.missing.append(f"{file}:{name}")

"""Ragged passes: many independent sequences (the sessions of a server) through one transformer forward.

A server holds one KV cache per session, all of different lengths. To read the weights once for all of them, a
pass packs only the *new* inputs of every row one after another into a single sequence ``[1, sum T_b, d]``; every
layer's projections and MLP run once over all of them, and only attention runs per row: row ``b`` appends its new
keys/values to its own cache and attends over that, causally among its new inputs (:func:`ragged_attention`).
Nothing is padded, and nothing is copied but the appended entries. Used by the frozen LLM (:meth:`freeze_omni.llm.backbone.FrozenLLM.forward_ragged`) and
the speech decoder (:meth:`freeze_omni.decoder.model.SpeechDecoder.step_ragged`).

The attention is a transformers attention function registered under :data:`RAGGED_ATTN`: a model switched to it
(:func:`use_ragged_attention`) runs plain SDPA for every ordinary call and the per-row path only when a pass hands
it a :class:`Ragged` (as the ``freeze_omni_ragged`` keyword, which transformers forwards to attention functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

RAGGED_ATTN = "freeze_omni_ragged"
RAGGED_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})
"""transformers model types whose attention is plain (no soft-capping, no sliding window by default)."""


@dataclass
class Ragged:
    """One ragged pass: each row's cache (anything with ``update(k, v, layer_idx) -> (all k, all v)``) and its
    number of new inputs (packed in row order)."""

    caches: list
    lengths: list[int]


def ragged_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, freeze_omni_ragged: Ragged | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Plain SDPA, except inside a ragged pass: the rows' inputs are packed one after another in a single
    sequence (``[1, heads, sum T_b, head_dim]``); each row appends its new keys/values to its own cache and attends
    over all of it (causal within its new inputs). Returns ``[1, sum T_b, heads, head_dim]`` as transformers'
    attention functions do."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if freeze_omni_ragged is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    out = torch.empty_like(query.transpose(1, 2))
    groups = query.shape[1] // key.shape[1]
    o = 0
    for cache, t in zip(freeze_omni_ragged.caches, freeze_omni_ragged.lengths):
        k, v = cache.update(key[:, :, o:o + t], value[:, :, o:o + t], module.layer_idx)
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask = None
        if t > 1:  # the new inputs are causal among themselves; everything before them is visible
            n = k.shape[2]
            mask = torch.ones(t, n, dtype=torch.bool, device=query.device).tril(n - t)
        a = F.scaled_dot_product_attention(query[:, :, o:o + t], k, v, attn_mask=mask, scale=kwargs.get("scaling"))
        out[:, o:o + t] = a.transpose(1, 2)
        o += t
    return out, None


def use_ragged_attention(config: Any) -> bool:
    """Switch a transformers config from SDPA to :func:`ragged_attention` (idempotent); False when it uses another
    attention implementation (left alone)."""
    if config._attn_implementation == RAGGED_ATTN:
        return True
    if config._attn_implementation != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(RAGGED_ATTN, ragged_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(RAGGED_ATTN, sdpa_mask)
    config._attn_implementation = RAGGED_ATTN
    return True

"""Ragged passes: many independent sequences (the sessions of a server) through one transformer forward.

A server holds one KV cache per session, all of different lengths. To read the weights once for all of them, a
pass packs only the *new* inputs of every row one after another into a single sequence ``[N = sum T_b, d]``; every
layer's projections and MLP run once over all of them, and only attention runs per row: row ``b`` appends its new
keys/values to its own cache and attends over that, causally among its new inputs. Nothing is padded, and nothing is
copied but the appended entries.

:func:`ragged_layers` runs the decoder layers of a transformers Llama, Qwen2, Qwen3 or Mistral model this way,
reading their weights but not calling their ``forward``: besides its arithmetic, an inference step of a small model
pays much per-operation overhead in the generic code (mask building, cache bookkeeping, grouped-query heads repeated
by a copy of the whole cache), so the lean path here is also how one row is stepped (SmolLM2-135M, 2 threads, ~400
positions: one 160 ms listening chunk 26.8 ms against 33.2 through the transformers forward; 8 sessions x 2 inputs
in one pass 71 ms against 110 through transformers' layers with a ragged attention function;
``benchmarks/ragged_pass.py``). It equals the transformers forward up to float rounding (tested). Used by the frozen
LLM (:meth:`freeze_omni.llm.backbone.FrozenLLM.forward_ragged`) and the speech decoder
(:meth:`freeze_omni.decoder.model.SpeechDecoder.step_ragged`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

RAGGED_LAYER_TYPES = frozenset({"LlamaDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer",
                                "MistralDecoderLayer"})
"""transformers decoder layers whose attention is plain (pre-norm, RoPE, optional q/k/v bias or q/k norms)."""


def ragged_capable(layers: Sequence[nn.Module]) -> bool:
    """Whether :func:`ragged_layers` reproduces these layers: a known kind, full attention (no sliding window)."""
    def full(layer: nn.Module) -> bool:
        attn = layer.self_attn
        window = getattr(attn, "sliding_window", None)
        if type(layer).__name__ == "MistralDecoderLayer":  # Mistral reads its window from the config
            window = getattr(attn.config, "sliding_window", None)
        return window is None and getattr(layer, "attention_type", "full_attention") == "full_attention"

    return all(type(layer).__name__ in RAGGED_LAYER_TYPES and full(layer) for layer in layers)


INT8 = "_freeze_omni_int8"
"""Attribute holding weight-only int8 copies: on a decoder layer, a dict of :func:`quantize_int8` copies
(``qkv``, ``o``, ``gate_up``, ``down``: projections that share an input are stacked into one product); on a
``Linear`` (an output head), its own copy."""

INT8_MAX_ROWS = 16
"""Above this many rows a float32 product is faster than the int8 kernel (which reads fewer bytes but computes
slowly): 2 cores, SmolLM2 shapes, int8 78 / 109 / 279 / 514 us at 1 / 4 / 16 / 32 rows, float32 167 / 227 / 490 /
489."""


def quantize_int8(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[int]]:
    """A weight-only int8 copy of ``linears`` (same input; their weights stacked into one matrix, so one product
    computes them all): ``(weight int8 [sum out, in], scales bf16 [sum out], bias or None, out sizes)``, symmetric,
    one scale per output channel. On a CPU with AVX-512 this reads 4x fewer bytes than float32 (SmolLM2-135M: ~3x
    faster matrix products at 2 rows, 2 threads); products are taken in bfloat16. The float weights stay."""
    w = torch.cat([m.weight.detach().float() for m in linears])
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    bias = None
    if any(m.bias is not None for m in linears):
        bias = torch.cat([m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features)
                          for m in linears])
    return ((w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous(), scale.to(torch.bfloat16),
            bias, [m.out_features for m in linears])


def quantize_layer_int8(layer: nn.Module) -> None:
    """Give a decoder layer accepted by :func:`ragged_capable` the int8 copies :func:`ragged_layers` then uses."""
    attn, mlp = layer.self_attn, layer.mlp
    setattr(layer, INT8, {"qkv": quantize_int8(attn.q_proj, attn.k_proj, attn.v_proj),
                          "o": quantize_int8(attn.o_proj), "gate_up": quantize_int8(mlp.gate_proj, mlp.up_proj),
                          "down": quantize_int8(mlp.down_proj)})


def project(x: torch.Tensor, linears: Sequence[nn.Linear], q8: tuple | None = None) -> list[torch.Tensor]:
    """Each of ``linears`` applied to ``x [N, in]``: one int8 product through their stacked copy ``q8`` when
    there is one and ``N`` is small (:data:`INT8_MAX_ROWS`), else their float weights."""
    if q8 is None or x.shape[0] > INT8_MAX_ROWS:
        return [F.linear(x, m.weight, m.bias) for m in linears]
    w8, scale, bias, sizes = q8
    y = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), w8, scale).to(x.dtype)
    if bias is not None:
        y = y + bias
    return list(y.split(sizes, dim=-1)) if len(sizes) > 1 else [y]


def _rms(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A transformers RMSNorm module applied as one fused op (same arithmetic: float32 statistics)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
    return norm.weight * F.rms_norm(x.float(), norm.weight.shape, None, norm.variance_epsilon).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x [N, heads, head_dim]`` with ``cos``/``sin [N, 1, head_dim]`` (rotate-half form)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


@torch.no_grad()
def ragged_layers(layers: Sequence[nn.Module], x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                  caches: Sequence[Any], lengths: Sequence[int]) -> torch.Tensor:
    """Run ``layers`` over packed rows.

    Args:
        layers: decoder layers accepted by :func:`ragged_capable`, in order.
        x: ``[N, d]`` the rows' new inputs one after another (``N = sum(lengths)``).
        position_embeddings: ``(cos, sin)`` ``[N, head_dim]`` at each input's position in its own row (from the
            model's rotary module).
        caches: one per row, anything with ``update(k, v, layer_idx) -> (all k, all v)`` over ``[1, kv_heads, T,
            head_dim]`` (a transformers ``DynamicCache``, the speech decoder's ``KVCache``); each grows by its row's
            inputs.
        lengths: inputs per row.

    Returns:
        ``[N, d]`` the last layer's output (before the final norm).
    """
    cos, sin = (t[:, None, :] for t in position_embeddings)
    spans, o = [], 0
    masks: dict[tuple[int, int], torch.Tensor] = {}
    for t in lengths:
        spans.append((o, t))
        o += t
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        h = _rms(layer.input_layernorm, x)
        q8 = getattr(layer, INT8, None) or {}
        q, k, v = (y.reshape(o, -1, hd) for y in project(h, (attn.q_proj, attn.k_proj, attn.v_proj), q8.get("qkv")))
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head before RoPE
            q, k = _rms(attn.q_norm, q), _rms(attn.k_norm, k)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        heads, kv_heads = q.shape[1], k.shape[1]
        groups = heads // kv_heads
        outs = []
        for (start, t), cache in zip(spans, caches):
            ks, vs = cache.update(k[start:start + t].transpose(0, 1)[None], v[start:start + t].transpose(0, 1)[None],
                                  attn.layer_idx)
            # the query heads of one key/value head become that head's extra query rows: no copy of the cache
            qs = q[start:start + t].view(t, kv_heads, groups, hd).permute(1, 2, 0, 3)
            qs = qs.reshape(1, kv_heads, groups * t, hd)
            mask = None
            if t > 1:  # causal among the new inputs; everything cached before them is visible
                n = ks.shape[2]
                mask = masks.get((t, n))
                if mask is None:
                    mask = torch.ones(t, n, dtype=torch.bool, device=x.device).tril(n - t).repeat(groups, 1)
                    masks[t, n] = mask
            a = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=attn.scaling)
            outs.append(a.view(kv_heads, groups, t, hd).permute(2, 0, 1, 3).reshape(t, heads * hd))
        a = outs[0] if len(outs) == 1 else torch.cat(outs)
        x = x + project(a, (attn.o_proj,), q8.get("o"))[0]
        h = _rms(layer.post_attention_layernorm, x)
        gate, up = project(h, (mlp.gate_proj, mlp.up_proj), q8.get("gate_up"))
        x = x + project(mlp.act_fn(gate) * up, (mlp.down_proj,), q8.get("down"))[0]
    return x

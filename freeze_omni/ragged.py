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

import functools
import warnings
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
"""Attribute holding int8 copies: on a decoder layer, a dict of :class:`Int8Linear` (``qkv``, ``o``, ``gate_up``,
``down``: projections that share an input are stacked into one product); on a ``Linear`` (an output head), its
own."""

INT8_MAX_ROWS = 16
"""Weight-only fallback kernel only: above this many rows a float32 product is faster than ``_weight_int8pack_mm``
(which reads fewer bytes but computes slowly): 2 cores, SmolLM2 shapes, int8 78 / 109 / 279 / 514 us at 1 / 4 / 16 /
32 rows, float32 167 / 227 / 490 / 489."""


def _int8_engine() -> str | None:
    """The quantized engine whose dynamic int8 linear this CPU runs (x86: fbgemm's VNNI/AVX-512 kernels)."""
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm"):
        if name in engines:
            return name
    return None


@functools.lru_cache(maxsize=1)
def int8_reduce_range() -> bool:
    """Whether dynamic int8 inputs must keep to 7 bits here. Without VNNI (AVX2, AVX-512 before Cascade Lake),
    fbgemm multiplies uint8 x int8 with ``vpmaddubsw``, which adds pairs of products in 16 bits: full 8-bit inputs
    saturate those sums (measured on an AVX2 EPYC: 15 % error on a product with outlier channels, 1.2 % at 7 bits).
    VNNI sums in 32 bits, so 8 bits are safe and more precise there. Unknown CPU: 7 bits."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return True
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


class Int8Linear:
    """An int8 copy of one or more ``Linear`` layers that share their input (weights stacked into one matrix, one
    symmetric scale per output channel; the float weights stay with the modules).

    Dynamic (the default where the CPU has fbgemm, i.e. x86): a product quantizes its input on the fly, one scale
    for all rows of the call, and multiplies int8 by int8 with int32 sums. On 2 cores, SmolLM2's stacked gate/up
    ``[3072, 576]`` takes 63 / 97 / 148 / 259 us at 1 / 8 / 16 / 32 rows against 280 / 713 / 661 / 922 in float32
    and 121 / 415 / 815 / 1579 through the weight-only kernel (``benchmarks/int8.py``). Given ``act_max``
    (each input channel's largest value on calibration text), the few channels where LLM activations are large are
    first divided down and their weights multiplied up by ``s_c = act_max_c^alpha / w_max_c^(1 - alpha)``
    (SmoothQuant), which one more elementwise product undoes nothing of: ``(x / s) (W s)^T = x W^T``. Because
    the input scale is shared by a call's rows, a row's result depends slightly on the rows beside it.

    Weight-only (``dynamic=False``, and where there is no fbgemm): ``_weight_int8pack_mm``, bfloat16 products,
    used up to :data:`INT8_MAX_ROWS` rows; each row's result is its own. A smaller change to the LLM, slower.
    """

    def __init__(self, *linears: nn.Linear, act_max: torch.Tensor | None = None, alpha: float = 0.5,
                 dynamic: bool | None = None) -> None:
        w = torch.cat([m.weight.detach().float() for m in linears])
        self.in_scale = None
        engine = _int8_engine()
        if dynamic is None:
            dynamic = engine is not None
        if dynamic and act_max is not None:
            # SmoothQuant: input channel c is divided by s_c and its weights multiplied by it, so a few channels
            # with large activations no longer set the one scale of the quantized input
            s = (act_max.float().clamp(min=1e-5) ** alpha / w.abs().amax(dim=0).clamp(min=1e-5) ** (1 - alpha))
            s = s.clamp(min=1e-2, max=1e2)
            w, self.in_scale = w * s, (1.0 / s).contiguous()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        bias = None
        if any(m.bias is not None for m in linears):
            bias = torch.cat([m.bias.detach().float() if m.bias is not None else w.new_zeros(m.out_features)
                              for m in linears])
        self.sizes = [m.out_features for m in linears]
        self.packed = None
        if dynamic:
            if engine is None:
                raise ValueError("dynamic int8 products need the x86/fbgemm quantized engine")
            torch.backends.quantized.engine = engine
            with warnings.catch_warnings():  # quantized tensors are deprecated as a user type, not as this kernel
                warnings.simplefilter("ignore")
                qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0,
                                                torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(qw, bias)
            self.w8 = self.scale = self.bias = None
        else:
            self.w8 = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
            self.scale, self.bias = scale.to(torch.bfloat16), bias

    def usable(self, rows: int) -> bool:
        """Whether a product over ``rows`` rows should use this copy (else the float weights are faster)."""
        return self.packed is not None or rows <= INT8_MAX_ROWS

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, in]`` (float32) -> ``[N, sum out]``."""
        if self.packed is not None:
            x = x.contiguous() if self.in_scale is None else x * self.in_scale
            return torch.ops.quantized.linear_dynamic(x, self.packed, int8_reduce_range())
        y = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.w8, self.scale).to(x.dtype)
        return y if self.bias is None else y + self.bias


INT8_PRODUCTS = {"qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")), "o": ("self_attn", ("o_proj",)),
                 "gate_up": ("mlp", ("gate_proj", "up_proj")), "down": ("mlp", ("down_proj",))}
"""The int8 products of a decoder layer: the submodule and its projections that share one input (stacked)."""


def dynamic_int8_available() -> bool:
    """Whether :class:`Int8Linear` defaults to dynamic products here (the CPU has fbgemm)."""
    return _int8_engine() is not None


def quantize_layer_int8(layer: nn.Module, act_max: dict[str, torch.Tensor] | None = None,
                        dynamic: bool | None = None) -> None:
    """Give a decoder layer accepted by :func:`ragged_capable` the int8 copies :func:`ragged_layers` then uses
    (``act_max``: per product of :data:`INT8_PRODUCTS`, its calibration input's largest value per channel)."""
    act = act_max or {}
    setattr(layer, INT8, {key: Int8Linear(*(getattr(getattr(layer, part), n) for n in names),
                                          act_max=act.get(key), dynamic=dynamic)
                          for key, (part, names) in INT8_PRODUCTS.items()})


def project(x: torch.Tensor, linears: Sequence[nn.Linear], q8: Int8Linear | None = None) -> list[torch.Tensor]:
    """Each of ``linears`` applied to ``x [N, in]``: one int8 product through their stacked copy ``q8`` when
    there is one (and it is the faster way for ``N`` rows), else their float weights."""
    if q8 is None or not q8.usable(x.shape[0]):
        return [F.linear(x, m.weight, m.bias) for m in linears]
    y = q8(x)
    return list(y.split(q8.sizes, dim=-1)) if len(q8.sizes) > 1 else [y]


Room = tuple[torch.Tensor, torch.Tensor]


def append_in_room(room: Room | None, keys: torch.Tensor | None, values: torch.Tensor | None, k: torch.Tensor,
                   v: torch.Tensor, block: int) -> tuple[Room, torch.Tensor, torch.Tensor]:
    """Append ``k``/``v [B, heads, t, head_dim]`` to a cache's ``keys``/``values`` (``[B, heads, n, head_dim]``,
    or None / empty) without copying them: they are views of ``room``, a larger buffer, and the new entries are
    written behind them. A new room (whole blocks of ``block`` positions, the old entries copied in) is made when
    there is none, when ``keys`` are not views of it any more (cloned, rebuilt), when it is full, or when it is an
    inference tensor outside inference mode. Returns ``(room, all keys, all values)``, the latter views of room."""
    n = 0 if keys is None or keys.dim() != 4 else keys.shape[2]
    t = k.shape[2]
    if (room is None or (keys is not None and room[0].data_ptr() != keys.data_ptr()) or room[0].shape[2] < n + t
            or room[0].shape[:2] != k.shape[:2]
            or (room[0].is_inference() and not torch.is_inference_mode_enabled())):  # not writable here
        cap = ((n + t) // block + 1) * block  # whole blocks: freed rooms fit the next ones
        b, h, _, d = k.shape
        room = (k.new_empty(b, h, cap, d), v.new_empty(b, h, cap, v.shape[3]))
        if n:
            room[0][:, :, :n], room[1][:, :, :n] = keys, values
    room[0][:, :, n:n + t], room[1][:, :, n:n + t] = k, v
    return room, room[0][:, :, :n + t], room[1][:, :, :n + t]


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

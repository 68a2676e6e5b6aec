"""A static-KV-cache Llama/Qwen2-shaped decoder stack in plain torch, and CUDA-graph replay of its steps.

The GPU path for per-token work: every shape is fixed (caches are preallocated ``[B, kv_heads, L, head_dim]``
per layer; attention reads the whole cache under a mask), so one decode step can be captured once as a CUDA graph
and replayed (:class:`Graphed`). Cache *slots* and RoPE *positions* are separate inputs, so the same stack serves
a causal LLM (slot == position) and Freeze-Omni's speech decoder, whose prefix decoder, semantic pass and AR
steps share one cache but count RoPE positions separately (``reference/freeze_omni_facts.md`` §1.7). Torch only
(no transformers), so it runs on a bare GPU machine; ``benchmarks/gpu_latency.py`` uses it with random weights in
the shapes of Qwen2-7B-Instruct and the upstream speech decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Shape:
    """A Llama/Qwen2-style stack."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    qkv_bias: bool
    rope_theta: float
    eps: float = 1e-6

    @classmethod
    def from_hf_config(cls, cfg) -> "Shape":
        """From a transformers ``LlamaConfig`` / ``Qwen2Config`` (Qwen2 has QKV biases, Llama none)."""
        theta = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
        return cls(vocab=cfg.vocab_size, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                   heads=cfg.num_attention_heads, kv_heads=cfg.num_key_value_heads or cfg.num_attention_heads,
                   ffn=cfg.intermediate_size,
                   qkv_bias=cfg.model_type == "qwen2" or bool(getattr(cfg, "attention_bias", False)),
                   rope_theta=float(theta or 10000.0), eps=cfg.rms_norm_eps)


QWEN2_7B = Shape(152064, 3584, 28, 28, 4, 18944, True, 1e6)
"""Qwen2-7B-Instruct (``config.json``: vocab 152064, hidden 3584, 28 layers, 28 heads / 4 KV heads, FFN 18944)."""
UPSTREAM_DECODER = Shape(1028, 896, 4, 14, 14, 4864, False, 1e4)
"""One stack of the upstream speech decoder (prefix 4, pre-network 2, shared 4 layers; facts §1.7)."""


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE of ``x [B, h, T, d]`` at positions ``pos [B, T]``."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = pos.float()[:, None, :, None] * inv  # [B, 1, T, d/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x.float().chunk(2, -1)
    return (x.float() * cos + torch.cat([-x2, x1], -1) * sin).to(x.dtype)


class Layer(nn.Module):
    """Pre-norm decoder layer: GQA attention over a static cache (or only the inputs) + SwiGLU MLP."""

    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.s, hd = s, s.hidden // s.heads
        self.q = nn.Linear(s.hidden, s.heads * hd, bias=s.qkv_bias)
        self.k = nn.Linear(s.hidden, s.kv_heads * hd, bias=s.qkv_bias)
        self.v = nn.Linear(s.hidden, s.kv_heads * hd, bias=s.qkv_bias)
        self.o = nn.Linear(s.heads * hd, s.hidden, bias=False)
        self.gate, self.up = nn.Linear(s.hidden, s.ffn, bias=False), nn.Linear(s.hidden, s.ffn, bias=False)
        self.down = nn.Linear(s.ffn, s.hidden, bias=False)
        self.n1, self.n2 = RMSNorm(s.hidden, s.eps), RMSNorm(s.hidden, s.eps)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, slot: torch.Tensor, limit: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """``x [B, T, D]``; RoPE ``pos``, cache ``slot`` and key ``limit`` (keys ``< limit`` visible) ``[B, T]``;
        ``kv``: this layer's cache ``([B, kv, L, hd]`` x 2) or None (attend among the inputs, all visible)."""
        s, (B, T, _) = self.s, x.shape
        hd, g = s.hidden // s.heads, s.heads // s.kv_heads
        h = self.n1(x)
        q = rope(self.q(h).view(B, T, s.heads, hd).transpose(1, 2), pos, s.rope_theta)
        k = rope(self.k(h).view(B, T, s.kv_heads, hd).transpose(1, 2), pos, s.rope_theta)
        v = self.v(h).view(B, T, s.kv_heads, hd).transpose(1, 2)
        if kv is None:
            keys, vals, mask = k, v, None
        else:
            idx = slot[:, None, :, None].expand(B, s.kv_heads, T, hd)
            kv[0].scatter_(2, idx, k)
            kv[1].scatter_(2, idx, v)
            keys, vals = kv
            mask = torch.arange(keys.shape[2], device=x.device)[None, None, None, :] < limit[:, None, :, None]
            mask = mask.repeat(1, 1, g, 1)  # [B, 1, g*T, L]
        q = q.reshape(B, s.kv_heads, g * T, hd)  # GQA without copying the cache
        a = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        x = x + self.o(a.view(B, s.heads, T, hd).transpose(1, 2).reshape(B, T, s.hidden))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Stack(nn.Module):
    def __init__(self, s: Shape, n_layers: int) -> None:
        super().__init__()
        self.s = s
        self.layers = nn.ModuleList(Layer(s) for _ in range(n_layers))

    def forward(self, x, pos, slot, limit, cache: list | None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, pos, slot, limit, None if cache is None else cache[i])
        return x

    def new_cache(self, batch: int, length: int, device, dtype) -> list:
        hd = self.s.hidden // self.s.heads
        return [tuple(torch.zeros(batch, self.s.kv_heads, length, hd, device=device, dtype=dtype) for _ in "kv")
                for _ in self.layers]


class LLM(nn.Module):
    """Embedding + stack + norm + LM head (the frozen backbone's shape)."""

    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.embed, self.body = nn.Embedding(s.vocab, s.hidden), Stack(s, s.layers)
        self.norm, self.head = RMSNorm(s.hidden, s.eps), nn.Linear(s.hidden, s.vocab, bias=False)

    def forward(self, x, pos, cache) -> torch.Tensor:
        """Causal (positions == cache slots): final hidden states ``[B, T, D]`` (after the final norm)."""
        return self.norm(self.body(x, pos, pos, pos + 1, cache))

    def step(self, tok, pos, cache) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row: ``(hidden [B, D], logits [B, V])``."""
        h = self(self.embed(tok), pos, cache)[:, -1]
        return h, self.head(h).float()


class Graphed:
    """``fn(*static_inputs)`` replayed as a CUDA graph (eager when ``enabled`` is False)."""

    def __init__(self, fn, inputs: list[torch.Tensor], enabled: bool) -> None:
        self.fn, self.inputs, self.graph = fn, inputs, None
        if enabled:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn(*inputs)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = fn(*inputs)

    def __call__(self, *values: torch.Tensor):
        for buf, val in zip(self.inputs, values):
            buf.copy_(val)
        if self.graph is None:
            return self.fn(*self.inputs)
        self.graph.replay()
        return self.out


def init_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Random weights fast (in place, on the module's device)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)
    return module


_HF_LAYER_NAMES = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
                   "self_attn.o_proj": "o", "mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down",
                   "input_layernorm": "n1", "post_attention_layernorm": "n2"}


def hf_state_dict_to_static(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers Llama/Qwen2 causal-LM state dict in :class:`LLM` names (``model.layers.3.self_attn.q_proj``
    -> ``body.layers.3.q``, ``model.embed_tokens`` -> ``embed``, ``model.norm`` -> ``norm``, ``lm_head`` ->
    ``head``). Raises ``KeyError`` on a name it does not know."""
    out = {}
    for key, t in state.items():
        if key.startswith("model.layers."):
            i, rest = key[len("model.layers."):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            out[f"body.layers.{i}.{_HF_LAYER_NAMES[module]}.{param}"] = t
        else:
            out[{"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "norm.weight",
                 "lm_head.weight": "head.weight"}[key]] = t
    return out


"""Cross-session batching of the listening path's encoder and adapter (STYLE.md §7 item 3).

Sessions are at different points of their turns, so their encoder caches hold different numbers of frames and
their positions differ. :func:`stack_encoder_caches` left-pads the per-layer keys/values to the longest and keeps
a validity mask; :func:`unstack_encoder_caches` is its exact inverse. :func:`encode_chunks` runs one 160 ms
chunk of each of ``B`` sessions through the encoder in one pass (per-row positions, padded keys masked out) and
equals ``B`` separate :meth:`~freeze_omni.encoder.encoder.SpeechEncoder.forward_chunk` calls;
:func:`adapt_chunks` does the same for the adapter, whose caches all have one shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freeze_omni.encoder.encoder import UPSTREAM_PE_WRAP, EncoderCache, SpeechEncoder
from freeze_omni.llm.adapter import Adapter


@dataclass
class StackedEncoderCache:
    """``B`` encoder caches as one batch.

    Attributes:
        conv: the convolution carries, concatenated along the batch.
        k, v: per layer ``[B, H, Tmax, d_k]``, row ``b`` left-padded with zeros to ``Tmax``.
        valid: ``[B, Tmax]`` True where a cached frame is real.
        offsets: ``[B]`` frame offset of each stream.
    """

    conv: list[torch.Tensor]
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    valid: torch.Tensor
    offsets: torch.Tensor


def stack_encoder_caches(caches: list[EncoderCache]) -> StackedEncoderCache:
    """``B`` caches (each of batch 1) -> one :class:`StackedEncoderCache`; inverse of
    :func:`unstack_encoder_caches`."""
    conv = [torch.cat(parts) for parts in zip(*(c.conv for c in caches))]
    lens = [c.k[0].shape[2] if c.k else 0 for c in caches]
    tmax = max(lens)
    device = conv[0].device
    valid = torch.zeros(len(caches), tmax, dtype=torch.bool, device=device)
    for b, n in enumerate(lens):
        valid[b, tmax - n:] = True
    n_layers = max(len(c.k) for c in caches)
    ks, vs = [], []
    for i in range(n_layers):
        ref = next(c.k[i] for c in caches if c.k)
        shape = (1, ref.shape[1], tmax, ref.shape[3])
        ks.append(torch.cat([_left_pad(c.k[i] if c.k else None, shape, ref) for c in caches]))
        vs.append(torch.cat([_left_pad(c.v[i] if c.v else None, shape, ref) for c in caches]))
    offsets = torch.tensor([c.offset for c in caches], device=device)
    return StackedEncoderCache(conv, ks, vs, valid, offsets)


def _left_pad(x: torch.Tensor | None, shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
    out = ref.new_zeros(shape)
    if x is not None and x.shape[2]:
        out[:, :, shape[2] - x.shape[2]:] = x
    return out


def unstack_encoder_caches(st: StackedEncoderCache) -> list[EncoderCache]:
    """One :class:`StackedEncoderCache` -> ``B`` caches of batch 1 (padding dropped)."""
    out = []
    for b in range(st.valid.shape[0]):
        n = int(st.valid[b].sum())
        t = st.valid.shape[1]
        k = [x[b:b + 1, :, t - n:] for x in st.k] if n else []
        v = [x[b:b + 1, :, t - n:] for x in st.v] if n else []
        out.append(EncoderCache(conv=[c[b:b + 1] for c in st.conv], k=k, v=v, offset=int(st.offsets[b])))
    return out


def encode_chunks(encoder: SpeechEncoder, feats: torch.Tensor, caches: list[EncoderCache]
                  ) -> tuple[torch.Tensor, list[EncoderCache]]:
    """One chunk of ``B`` streams at once.

    Args:
        encoder: the speech encoder (eval mode).
        feats: ``[B, n, 80]`` the next feature frames of each stream (same ``n`` for all).
        caches: each stream's cache (batch 1).

    Returns:
        ``(out [B, n / subsampling, D], new caches)``, equal to per-stream ``forward_chunk``.
    """
    cfg = encoder.cfg
    if feats.shape[1] % cfg.subsampling_rate:
        raise ValueError(f"chunk of {feats.shape[1]} frames is not a multiple of the subsampling rate")
    st = stack_encoder_caches(caches)
    x, conv = encoder.front(feats, st.conv)
    B, n, _ = x.shape
    tmax = st.valid.shape[1]
    if cfg.family == "whisper":
        pos = torch.stack([encoder._abs_positions(int(o), n, x.device) for o in st.offsets])  # [B, n]
        x = x + encoder.positions[pos]
    x = encoder.dropout(x)
    key_pos = None
    if cfg.family == "upstream":
        tc = st.valid.sum(1)  # [B]
        first = st.offsets - tc
        if cfg.upstream_pos_lag:
            first = (st.offsets % UPSTREAM_PE_WRAP - (cfg.cache_frames + cfg.chunk_size)).clamp(min=0)
        slots = torch.arange(tmax + n, device=x.device)
        kp = (first[:, None] + slots[None] - (tmax - tc)[:, None]).clamp(min=0)  # [B, Tmax + n]
        key_pos = encoder._key_pos(0, int(kp.max()) + 1, x.device)[kp]  # [B, Tmax + n, D]
    keys_valid = torch.cat([st.valid, st.valid.new_ones(B, n)], dim=1)  # [B, Tmax + n]
    mask = None if bool(keys_valid.all()) else keys_valid[:, None, :].expand(B, n, tmax + n)
    keep = cfg.cache_frames
    new_k, new_v = [], []
    for i, layer in enumerate(encoder.encoders):
        x, k, v = layer(x, mask, st.k[i] if tmax else None, st.v[i] if tmax else None, key_pos)
        new_k.append(k[:, :, -keep:])
        new_v.append(v[:, :, -keep:])
    new = StackedEncoderCache(conv, new_k, new_v, keys_valid[:, -keep:], st.offsets + n)
    return encoder.after_norm(x), unstack_encoder_caches(new)


def adapt_chunks(adapter: Adapter, enc: torch.Tensor, caches: list[torch.Tensor]
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``enc [B, n, D]`` with per-stream caches ``[1, left_pad, D]`` -> ``([B, n/s, H], new caches)``."""
    out, cache = adapter.forward_chunk(enc, torch.cat(caches))
    return out, [cache[b:b + 1] for b in range(cache.shape[0])]

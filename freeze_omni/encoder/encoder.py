"""Streaming speech encoders: the upstream Freeze-Omni family and a Whisper family, one chunked transformer.

Both map 80-bin features at 100 frames/s to encoder frames and run in two equivalent ways:

* ``forward(feats, lengths, chunk_size, left_chunks)``: a whole (padded) batch under a chunk mask (training,
  full-utterance decoding; ``chunk_size=None`` is full attention);
* ``forward_chunk(feats, cache)``: one chunk of a live stream, with every piece of state in an explicit
  :class:`EncoderCache` (convolution carry, per-layer keys/values of the last ``chunk_size * left_chunks``
  frames, frame offset), so any worker can run any user's next chunk.

Chunk by chunk equals the masked full-utterance pass (tests, to 1e-5).

Families:

* ``upstream``: Kaldi fbank + global CMVN, Conv2d x4 subsampling without padding (3 feature frames carried
  between chunks replace a conv cache; zeros at the start), an input layer (Linear, LayerNorm, ReLU, x sqrt(d)),
  pre-LN blocks with the upstream rel-pos attention (no rel-shift), ReLU FFN; 25 Hz. Module names follow the
  released state dict (``embed``, ``encoders.N.self_attn.linear_q``, ``feed_forward.w_1``, ``after_norm``...).
* ``whisper``: Whisper log-mel, conv1 (k3) + GELU, conv2 (k3, stride 2) + GELU, learned absolute positions,
  pre-LN blocks, GELU FFN; 50 Hz. With ``causal_convs`` the convs are left-padded (2 and 1 frames) so they can
  stream with a small cache; the pretrained weights stay usable (a 10 ms shift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from freeze_omni.encoder.layers import EncoderLayer, sinusoids
from freeze_omni.encoder.masks import chunk_mask, pad_mask

FAMILIES = ("upstream", "whisper")
UPSTREAM_PE_WRAP = 4932  # upstream's streaming position counter wraps here (5000-entry table minus 68)


@dataclass
class EncoderConfig:
    """Shape and streaming geometry of a speech encoder.

    ``chunk_size`` and ``left_chunks`` are in *encoder* frames and chunks: 160 ms is 4 frames for the upstream
    family (25 Hz) and 8 for the Whisper family (50 Hz). The cache keeps ``chunk_size * left_chunks`` frames.
    """

    family: str = "whisper"
    input_dim: int = 80
    d_model: int = 384
    n_heads: int = 6
    d_ff: int = 1536
    n_layers: int = 4
    chunk_size: int = 8
    left_chunks: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_positions: int = 1500  # Whisper position table (30 s)
    causal_convs: bool = True  # Whisper family: stream-able convolutions
    upstream_pos_lag: bool = False  # parity quirk: upstream's lagging key positions when streaming

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown encoder family {self.family!r}; expected one of {FAMILIES}")

    @property
    def frontend(self) -> str:
        return "fbank" if self.family == "upstream" else "whisper"

    @property
    def subsampling_rate(self) -> int:
        return 4 if self.family == "upstream" else 2

    @property
    def chunk_frames(self) -> int:
        """Feature frames (10 ms) per chunk."""
        return self.chunk_size * self.subsampling_rate

    @property
    def cache_frames(self) -> int:
        return self.chunk_size * self.left_chunks


def upstream_config(**kw) -> EncoderConfig:
    """The released Freeze-Omni encoder: 24 x 1024, 16 heads, chunk 4 (160 ms), 16 left chunks."""
    return replace(EncoderConfig(family="upstream", d_model=1024, n_heads=16, d_ff=4096, n_layers=24,
                                 chunk_size=4, left_chunks=16), **kw)


def whisper_config(name: str = "tiny.en", **kw) -> EncoderConfig:
    """Whisper encoder shapes (tiny/tiny.en: 4 x 384, 6 heads; base: 6 x 512, 8 heads), 160 ms chunks."""
    dims = {"tiny.en": (384, 6, 4), "tiny": (384, 6, 4), "base": (512, 8, 6), "base.en": (512, 8, 6)}
    if name not in dims:
        raise ValueError(f"unknown Whisper size {name!r}; expected one of {sorted(dims)}")
    d, h, n = dims[name]
    return replace(EncoderConfig(family="whisper", d_model=d, n_heads=h, d_ff=4 * d, n_layers=n), **kw)


@dataclass
class EncoderCache:
    """Everything one stream's encoder needs between chunks.

    Attributes:
        conv: upstream: ``[B, 3, 80]`` last raw feature frames; Whisper: ``[B, 2, 80]`` last features and
            ``[B, 1, D]`` last conv1 output.
        k, v: per layer ``[B, H, Tc, d_k]`` keys/values of the last ``Tc <= chunk_size * left_chunks`` frames.
        offset: encoder frames produced so far (the absolute position of the next frame).
    """

    conv: list[torch.Tensor]
    k: list[torch.Tensor] = field(default_factory=list)
    v: list[torch.Tensor] = field(default_factory=list)
    offset: int = 0


class UpstreamSubsampling(nn.Module):
    """Conv2d(k3, s2) + ReLU twice, then Linear over (channels x frequency); no padding, x4 in time."""

    def __init__(self, idim: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, d_model, 3, 2), nn.ReLU(), nn.Conv2d(d_model, d_model, 3, 2),
                                  nn.ReLU())
        self.out = nn.Sequential(nn.Linear(d_model * (((idim - 1) // 2 - 1) // 2), d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))


class UpstreamFront(nn.Module):
    """CMVN, subsampling (``core``) and the transformer input layer (``embed``) of the upstream family."""

    carry = 3  # feature frames carried between chunks (kernel 3 twice, stride 2 twice)

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.register_buffer("cmvn_mean", torch.zeros(cfg.input_dim))
        self.register_buffer("cmvn_istd", torch.ones(cfg.input_dim))
        self.core = UpstreamSubsampling(cfg.input_dim, cfg.d_model)
        self.embed = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.LayerNorm(cfg.d_model, eps=1e-12),
                                   nn.Dropout(cfg.dropout), nn.ReLU())
        self.scale = math.sqrt(cfg.d_model)
        self.input_dim = cfg.input_dim

    def init_conv_cache(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.carry, self.input_dim, device=device)]

    def forward(self, feats: torch.Tensor, conv_cache: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
        x = torch.cat([conv_cache[0], feats], dim=1)
        new_cache = [x[:, -self.carry:]]
        x = (x - self.cmvn_mean) * self.cmvn_istd
        return self.embed(self.core(x)) * self.scale, new_cache


class WhisperFront(nn.Module):
    """Whisper's two convolutions with GELU; causal (left-padded, cached) when streaming."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cfg.input_dim, cfg.d_model, 3, padding=0 if cfg.causal_convs else 1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, 3, stride=2, padding=0 if cfg.causal_convs else 1)
        self.causal = cfg.causal_convs
        self.input_dim, self.d_model = cfg.input_dim, cfg.d_model

    def init_conv_cache(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        return [torch.zeros(batch, 2, self.input_dim, device=device),
                torch.zeros(batch, 1, self.d_model, device=device)]

    def forward(self, feats: torch.Tensor, conv_cache: Optional[list[torch.Tensor]]) -> tuple[torch.Tensor, list]:
        if not self.causal:
            if conv_cache is not None:
                raise ValueError("a Whisper encoder with centred convolutions cannot stream")
            x = F.gelu(self.conv1(feats.transpose(1, 2)))
            return F.gelu(self.conv2(x)).transpose(1, 2), []
        x = torch.cat([conv_cache[0], feats], dim=1)  # [B, 2 + T, F]
        h = F.gelu(self.conv1(x.transpose(1, 2))).transpose(1, 2)  # [B, T, D]
        h2 = torch.cat([conv_cache[1], h], dim=1)  # [B, 1 + T, D]
        y = F.gelu(self.conv2(h2.transpose(1, 2))).transpose(1, 2)  # [B, T // 2, D]
        return y, [x[:, -2:], h2[:, -1:]]


class SpeechEncoder(nn.Module):
    """Chunked streaming transformer encoder (see module docstring)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        up = cfg.family == "upstream"
        self.front = UpstreamFront(cfg) if up else WhisperFront(cfg)
        if not up:
            self.register_buffer("positions", sinusoids(torch.arange(cfg.max_positions), cfg.d_model))
        self.encoders = nn.ModuleList(
            EncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, activation="relu" if up else "gelu", rel_pos=up,
                         dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                         norm_eps=1e-12 if up else 1e-5)
            for _ in range(cfg.n_layers))
        self.after_norm = nn.LayerNorm(cfg.d_model, eps=1e-12 if up else 1e-5)
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def output_dim(self) -> int:
        return self.cfg.d_model

    # -- positions ------------------------------------------------------------------------------------------------
    def _abs_positions(self, start: int, n: int, device: torch.device) -> torch.Tensor:
        """Whisper positions ``start .. start+n-1``; past the table they cycle through its second half, so a
        stream longer than 30 s keeps going (a turn is normally much shorter; the encoder resets per turn)."""
        p = torch.arange(start, start + n, device=device)
        m = self.cfg.max_positions
        half = m // 2
        return torch.where(p < m, p, half + (p - m) % (m - half))

    def _key_pos(self, first: int, n: int, device: torch.device) -> torch.Tensor:
        return sinusoids(torch.arange(first, first + n, device=device), self.cfg.d_model)

    def _embed_positions(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if self.cfg.family == "whisper":
            x = x + self.positions[self._abs_positions(start, x.shape[1], x.device)]
        return self.dropout(x)

    # -- whole utterance -------------------------------------------------------------------------------------------
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, chunk_size: Optional[int] = None,
                left_chunks: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            feats: ``[B, T, 80]`` features (T is cut to a multiple of the subsampling rate).
            lengths: ``[B]`` valid frames.
            chunk_size, left_chunks: the attention context in encoder frames/chunks; ``chunk_size=None`` is full
                attention, ``left_chunks=None`` unlimited left context.

        Returns:
            ``(out [B, T', D], out_lengths [B])``.
        """
        sub = self.cfg.subsampling_rate
        t = feats.shape[1] - feats.shape[1] % sub
        feats = feats[:, :t]
        cache = self.front.init_conv_cache(feats.shape[0], feats.device) if self._streams_convs() else None
        x, _ = self.front(feats, cache)
        x = self._embed_positions(x, 0)
        out_len = torch.clamp(lengths // sub, max=x.shape[1])
        tq = x.shape[1]
        mask = pad_mask(out_len, tq)[:, None, :]  # [B, 1, T']
        if chunk_size is not None:
            mask = mask & chunk_mask(tq, chunk_size, left_chunks, x.device)[None]
        mask = mask | torch.eye(tq, dtype=torch.bool, device=x.device)[None]  # padded rows: keep finite
        key_pos = self._key_pos(0, tq, x.device) if self.cfg.family == "upstream" else None
        for layer in self.encoders:
            x, _, _ = layer(x, mask, key_pos=key_pos)
        return self.after_norm(x), out_len

    def _streams_convs(self) -> bool:
        return self.cfg.family == "upstream" or self.cfg.causal_convs

    # -- streaming -------------------------------------------------------------------------------------------------
    def init_cache(self, batch: int = 1, device: torch.device | str = "cpu") -> EncoderCache:
        return EncoderCache(conv=self.front.init_conv_cache(batch, torch.device(device)))

    def forward_chunk(self, feats: torch.Tensor, cache: EncoderCache) -> tuple[torch.Tensor, EncoderCache]:
        """Encode the next chunk of a stream.

        Args:
            feats: ``[B, n, 80]`` new feature frames, ``n`` a multiple of the subsampling rate (normally
                ``cfg.chunk_frames``; the last chunk of a stream may be shorter).
            cache: the stream's state (from :meth:`init_cache` or the previous call); not modified.

        Returns:
            ``(out [B, n / subsampling, D], new_cache)``.
        """
        if feats.shape[1] % self.cfg.subsampling_rate:
            raise ValueError(f"chunk of {feats.shape[1]} frames is not a multiple of the subsampling rate "
                             f"{self.cfg.subsampling_rate}")
        x, conv = self.front(feats, cache.conv)
        n = x.shape[1]
        x = self._embed_positions(x, cache.offset)
        tc = cache.k[0].shape[2] if cache.k else 0
        key_pos = None
        if self.cfg.family == "upstream":
            first = cache.offset - tc
            if self.cfg.upstream_pos_lag:  # upstream's counter, read before it advances (facts §1.3)
                first = max(0, cache.offset % UPSTREAM_PE_WRAP - (self.cfg.cache_frames + self.cfg.chunk_size))
            key_pos = self._key_pos(first, tc + n, x.device)
        keep = self.cfg.cache_frames
        new_k, new_v = [], []
        for i, layer in enumerate(self.encoders):
            x, k, v = layer(x, None, cache.k[i] if cache.k else None, cache.v[i] if cache.v else None, key_pos)
            new_k.append(k[:, :, -keep:])
            new_v.append(v[:, :, -keep:])
        return self.after_norm(x), EncoderCache(conv=conv, k=new_k, v=new_v, offset=cache.offset + n)

    def forward_chunk_by_chunk(self, feats: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Reference loop: ``[B, T, 80]`` -> ``[B, T', D]`` through :meth:`forward_chunk`."""
        step = chunk_frames or self.cfg.chunk_frames
        cache = self.init_cache(feats.shape[0], feats.device)
        t = feats.shape[1] - feats.shape[1] % self.cfg.subsampling_rate
        outs = []
        for s in range(0, t, step):
            y, cache = self.forward_chunk(feats[:, s:min(s + step, t)], cache)
            outs.append(y)
        return torch.cat(outs, dim=1)

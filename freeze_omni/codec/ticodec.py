"""The upstream Freeze-Omni codec decoder: a TiCodec-style HiFi-GAN generator with fixed global tokens.

Upstream's speech decoder emits tokens of a single-codebook TiCodec at 40 Hz; this module turns them into 24 kHz
audio with the released ``codec/final.pt`` (``reference/freeze_omni_facts.md`` §1.8). Only decoding is
implemented (the codec encoder in the checkpoint is needed to make training targets, not to speak).

Decode path, for tokens ``[B, N]``:

1. ``quantizer.quantizer_modules.0.embedding`` ``[n_codes, code_dim]`` (1024 x 512) looks each token up ->
   ``[B, code_dim, N]``;
2. the *global* feature: the 8 fixed ``global_tokens`` of ``model.json`` looked up in the 8 codebooks
   ``quantizer.quantizer_modules_globaltokens.{0..7}.embedding`` (1024 x 16 each) and concatenated -> 128-d. It is
   the voice: upstream never changes it (no voice cloning);
3. the generator: ``conv_pre`` (k 7) -> per stage ``i``: LeakyReLU(0.1) -> ``ups.i`` (transposed conv, stride
   ``upsample_rates[i]``, padding ``(k - u) // 2``) -> mean of ``len(resblock_kernel_sizes)`` ResBlock1
   (``resblocks.{i * n + j}``: three pairs of [LeakyReLU, dilated conv ``convs1.m``, LeakyReLU, conv ``convs2.m``]
   with residuals) -> plus the global feature, broadcast over time, after the stage whose channel count equals
   the global feature's width (128: the second stage, 512 -> 256 -> **128**) -> LeakyReLU(0.1) -> ``conv_post``
   (k 7, one channel) -> tanh. (TiCodec's generator uses slope 0.1 before ``conv_post``, where the original
   HiFi-GAN uses 0.01; the facts do not say which upstream's copy has; 0.1 follows TiCodec.)

Upsampling is ``prod(upsample_rates)`` = 8 x 5 x 5 x 3 = 600 samples per token. The released weights are
weight-normalised (``weight_g``, ``weight_v``); :func:`fold_weight_norm` folds them into plain ``weight`` tensors
at load time (upstream removes weight norm after loading too), so this module has no weight norm at all.

:class:`TiCodec` exposes the decode API of :class:`freeze_omni.codec.model.Codec` (``sample_rate``, ``hop``,
``codebook_size``, ``receptive_tokens``, ``decode``, ``decode_window``), so
:class:`freeze_omni.codec.streaming.StreamingCodecDecoder` runs it in upstream's overlapping windows with
low-energy splicing. Its receptive field (about 14 tokens each side) is wider than the 10-token window context,
exactly as upstream; the splicing hides the joins.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.1
UPSTREAM_GLOBAL_TOKENS = (473, 975, 419, 219, 565, 121, 550, 616)


@dataclass
class TiCodecConfig:
    """Shapes of the upstream codec decoder (the keys of ``codec/model.json`` that decoding needs).

    ``code_dim`` (512 upstream) is the width of a code vector and of ``conv_pre``'s input; ``global_code_dim``
    (16) the width of each global codebook, so the global feature has ``global_code_num * global_code_dim``
    (128) channels.
    """

    upsample_rates: tuple[int, ...] = (8, 5, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 11, 5)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    sampling_rate: int = 24000
    n_codes: int = 1024
    code_dim: int = 512
    global_code_num: int = 8
    global_code_dim: int = 16
    global_tokens: tuple[int, ...] = UPSTREAM_GLOBAL_TOKENS
    kind: str = field(default="ticodec", init=False)

    def __post_init__(self) -> None:
        self.upsample_rates = tuple(int(x) for x in self.upsample_rates)
        self.upsample_kernel_sizes = tuple(int(x) for x in self.upsample_kernel_sizes)
        self.resblock_kernel_sizes = tuple(int(x) for x in self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(int(d) for d in ds) for ds in self.resblock_dilation_sizes)
        self.global_tokens = tuple(int(x) for x in self.global_tokens)
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if len(self.global_tokens) != self.global_code_num:
            raise ValueError(f"{len(self.global_tokens)} global tokens for {self.global_code_num} global codebooks")
        if any(not 0 <= t < self.n_codes for t in self.global_tokens):
            raise ValueError(f"global tokens {self.global_tokens} outside [0, {self.n_codes})")
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise ValueError("upsample_initial_channel must halve cleanly at every stage")
        if self.global_stage is None:
            raise ValueError(f"no generator stage has {self.global_dim} channels for the global feature "
                             f"(stages: {self.stage_channels})")

    @property
    def hop(self) -> int:
        """Samples per token (600 upstream)."""
        return math.prod(self.upsample_rates)

    @property
    def global_dim(self) -> int:
        return self.global_code_num * self.global_code_dim

    @property
    def stage_channels(self) -> list[int]:
        """Output channels of each upsampling stage (512 -> 256, 128, 64, 32 upstream)."""
        return [self.upsample_initial_channel // 2 ** (i + 1) for i in range(len(self.upsample_rates))]

    @property
    def global_stage(self) -> Optional[int]:
        """Index of the stage after which the global feature is added (upstream's rule: channels == width)."""
        for i, c in enumerate(self.stage_channels):
            if c == self.global_dim:
                return i
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d = {k: [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
             for k, v in d.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TiCodecConfig":
        """From a ``codec:`` bundle section (``kind: ticodec``); unknown keys raise ValueError."""
        d = dict(d)
        if d.pop("kind", "ticodec") != "ticodec":
            raise ValueError("not a TiCodec config (kind != 'ticodec')")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TiCodec config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_model_json(cls, d: dict[str, Any], code_dim: int = 512, global_code_dim: Optional[int] = None
                        ) -> "TiCodecConfig":
        """From upstream's ``codec/model.json``. ``code_dim`` comes from the checkpoint (TiCodec fixes 512);
        ``global_code_dim`` defaults to ``128 // global_code_num`` as in TiCodec."""
        if str(d.get("resblock", "1")) != "1":
            raise ValueError(f"codec/model.json: resblock {d.get('resblock')!r} not supported (only '1')")
        if int(d.get("n_code_groups", 1)) != 1 or int(d.get("residul_layer", 1)) != 1:
            raise ValueError("codec/model.json: only n_code_groups 1 and residul_layer 1 are supported")
        num = int(d.get("global_code_num", 8))
        return cls(upsample_rates=d["upsample_rates"], upsample_kernel_sizes=d["upsample_kernel_sizes"],
                   upsample_initial_channel=int(d["upsample_initial_channel"]),
                   resblock_kernel_sizes=d["resblock_kernel_sizes"],
                   resblock_dilation_sizes=d["resblock_dilation_sizes"],
                   sampling_rate=int(d["sampling_rate"]), n_codes=int(d["n_codes"]), code_dim=code_dim,
                   global_code_num=num, global_code_dim=global_code_dim or 128 // num,
                   global_tokens=d.get("global_tokens", UPSTREAM_GLOBAL_TOKENS))


def _padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Three residual pairs: ``x + conv2(lrelu(conv1_d(lrelu(x))))`` for dilations ``d`` (HiFi-GAN ResBlock1)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel, 1))
                                    for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class TiCodecGenerator(nn.Module):
    """Code vectors ``[B, code_dim, N]`` + global feature ``[B, G]`` -> ``wave [B, N * hop]``."""

    def __init__(self, cfg: TiCodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.code_dim, cfg.upsample_initial_channel, 7, padding=3)
        ch_in = cfg.upsample_initial_channel
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for u, k, ch in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, cfg.stage_channels):
            self.ups.append(nn.ConvTranspose1d(ch_in, ch, k, stride=u, padding=(k - u) // 2))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(ch, rk, rd))
            ch_in = ch
        self.conv_post = nn.Conv1d(ch_in, 1, 7, padding=3)

    def forward(self, codes: torch.Tensor, global_feature: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(codes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.n_kernels:(i + 1) * self.n_kernels]
            x = sum(b(x) for b in blocks) / self.n_kernels
            if i == self.cfg.global_stage:
                x = x + global_feature.unsqueeze(-1)  # [B, G, 1] broadcast over time
        x = self.conv_post(F.leaky_relu(x, LRELU_SLOPE))
        return torch.tanh(x).squeeze(1)


class _Codebook(nn.Module):
    """One codebook (upstream ``Quantizer_module``: an ``embedding`` table)."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, dim)


class TiCodecQuantizer(nn.Module):
    """The code table and the global-token tables (upstream names: ``quantizer_modules.0``,
    ``quantizer_modules_globaltokens.{i}``)."""

    def __init__(self, cfg: TiCodecConfig) -> None:
        super().__init__()
        self.quantizer_modules = nn.ModuleList([_Codebook(cfg.n_codes, cfg.code_dim)])
        self.quantizer_modules_globaltokens = nn.ModuleList(
            _Codebook(cfg.n_codes, cfg.global_code_dim) for _ in range(cfg.global_code_num))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> ``[B, code_dim, N]``."""
        return self.quantizer_modules[0].embedding(tokens).transpose(1, 2)

    def embed_global(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, global_code_num]`` -> ``[B, global_dim]`` (the codebooks' vectors, concatenated)."""
        return torch.cat([m.embedding(tokens[:, i]) for i, m in enumerate(self.quantizer_modules_globaltokens)],
                         dim=-1)


class TiCodec(nn.Module):
    """Decode-only upstream codec (see the module docstring). State-dict names: ``generator.*`` and
    ``quantizer.*`` with upstream's names below them; ``global_tokens`` is a non-persistent buffer."""

    def __init__(self, cfg: TiCodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = TiCodecGenerator(cfg)
        self.quantizer = TiCodecQuantizer(cfg)
        self.register_buffer("global_tokens", torch.tensor([cfg.global_tokens], dtype=torch.long), persistent=False)
        # StreamingCodecDecoder reads the device from `noise_table` (our codec's fixed noise); this codec has no
        # noise, so an empty buffer stands in as the device anchor.
        self.register_buffer("noise_table", torch.zeros(0), persistent=False)

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def sample_rate(self) -> int:
        return self.cfg.sampling_rate

    @property
    def hop(self) -> int:
        return self.cfg.hop

    @property
    def frame_rate(self) -> float:
        return self.cfg.sampling_rate / self.cfg.hop

    @property
    def codebook_size(self) -> int:
        return self.cfg.n_codes

    @property
    def receptive_tokens(self) -> int:
        """Tokens on either side of a sample's own token that can change it (an upper bound): conv_pre, then per
        stage the transposed conv and the widest ResBlock1, then conv_post, each in tokens at its own rate."""
        c = self.cfg
        tokens, rate = 3.0, 1  # conv_pre: +-3 tokens
        for u, k in zip(c.upsample_rates, c.upsample_kernel_sizes):
            tokens += math.ceil(k / u) / rate  # transposed conv: inputs at the previous rate
            rate *= u
            widest = max((rk - 1) // 2 * (sum(d) + len(d)) for rk, d in zip(c.resblock_kernel_sizes,
                                                                             c.resblock_dilation_sizes))
            tokens += widest / rate
        return math.ceil(tokens + 3 / rate)

    # ------------------------------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, N]`` (int, ``0 <= t < n_codes``) -> ``wave [B, N * hop]`` in [-1, 1]."""
        tokens = tokens.long().to(self.global_tokens.device)
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.n_codes):
            raise ValueError(f"codec tokens must lie in [0, {self.cfg.n_codes}); got {tokens.min()}..{tokens.max()}")
        g = self.quantizer.embed_global(self.global_tokens.expand(tokens.shape[0], -1))
        return self.generator(self.quantizer.embed(tokens), g)

    def decode_window(self, tokens: torch.Tensor, phase0: Optional[torch.Tensor] = None, phase_index: int = 0,
                      sample_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The streaming decoder's call (see :meth:`freeze_omni.codec.model.Codec.decode_window`): this codec has
        no oscillator and no noise, so ``phase0``, ``phase_index`` and ``sample_offset`` change nothing and the
        returned phase track is zeros. Returns ``(wave [B, N * hop], zeros [B, N * hop + 1] float64)``."""
        wave = self.decode(tokens)
        return wave, torch.zeros(wave.shape[0], wave.shape[1] + 1, dtype=torch.float64, device=wave.device)

    # ------------------------------------------------------------------------------------------ bundles
    @classmethod
    def from_bundle(cls, path: str | os.PathLike | Any) -> "TiCodec":
        """Load the ``codec`` component of a bundle whose ``codec:`` section has ``kind: ticodec``."""
        from freeze_omni.bundle import Bundle

        bundle = path if isinstance(path, Bundle) else Bundle(path)
        codec = cls(TiCodecConfig.from_dict(bundle.config["codec"]))
        codec.load_state_dict(bundle.tensors("codec"), strict=True)
        return codec.eval()


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``X.weight_g`` / ``X.weight_v`` pair (or the parametrisation form
    ``X.parametrizations.weight.original0/1``) by ``X.weight = g * v / ||v||``, the norm taken over every
    dimension but the first (``torch.nn.utils.weight_norm``'s default ``dim=0``, for Conv1d and ConvTranspose1d
    alike). Other tensors pass through; an unpaired ``weight_g`` or ``weight_v`` is kept as it is (and will be
    reported as unexpected by the caller)."""
    out = dict(state)
    for g_name, v_name in (("weight_g", "weight_v"),
                           ("parametrizations.weight.original0", "parametrizations.weight.original1")):
        for g_key in [k for k in state if k == g_name or k.endswith("." + g_name)]:
            base = g_key[: -len(g_name)]  # "conv_pre." (or "" at top level)
            v_key = base + v_name
            if v_key not in state:
                continue
            g, v = state[g_key].float(), state[v_key].float()
            norm = v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
            out[base + "weight"] = (v * (g / norm)).to(state[v_key].dtype)
            del out[g_key], out[v_key]
    return out


def load_codec(bundle: Any) -> Any:
    """The codec of a bundle: :class:`TiCodec` when its ``codec:`` section says ``kind: ticodec`` (an upstream
    conversion), else our :class:`freeze_omni.codec.model.Codec`."""
    from freeze_omni.bundle import Bundle

    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    if (bundle.config.get("codec") or {}).get("kind") == "ticodec":
        return TiCodec.from_bundle(bundle)
    from freeze_omni.codec.model import Codec

    return Codec.from_bundle(bundle)

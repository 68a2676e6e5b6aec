"""`CodecConfig`, its named presets, and strict conversion to / from the ``codec:`` section of ``bundle.yaml``.

Torch-free, so command-line code can read and validate a codec config without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class CodecConfig:
    """Geometry, sizes and loss weights of the speech codec (:class:`freeze_omni.codec.model.Codec`).

    Geometry: ``hop = sample_rate // frame_rate`` samples per token; each token spans ``controls_per_token``
    control frames of ``control_hop = hop // controls_per_token`` samples (the rate of F0, voicing,
    harmonic amplitudes and noise filters, and of the encoder's mel frames).
    """

    # geometry
    sample_rate: int = 16000
    frame_rate: int = 40
    controls_per_token: int = 4
    # quantizer
    codebook_size: int = 1024
    code_dim: int = 8
    restart_after: int = 20  # training steps a code may go unused before it is restarted (0: never)
    # encoder (log-mel -> 40 Hz latents; not streaming, so its receptive field is free)
    n_mels: int = 80
    mel_n_fft: int = 1024
    enc_dim: int = 256
    enc_dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4)  # token-rate residual blocks
    # decoder (tokens -> control frames); its receptive field must fit the streaming context (see model.py)
    dec_dim: int = 384
    dec_dilations: tuple[int, ...] = (1, 2, 1, 1)  # token-rate residual blocks, kernel 3
    control_dim: int = 192
    control_dilations: tuple[int, ...] = (1, 2)  # control-rate residual blocks, kernel 3
    # synthesis
    n_harmonics: int = 64
    n_noise_bands: int = 64
    noise_fft_hops: int = 4  # noise STFT size in control hops
    voiced_noise_cutoff: float = 3000.0  # Hz; voiced frames get no noise below it (0: noise everywhere)
    f0_min: float = 50.0
    f0_max: float = 500.0
    postfilter_channels: int = 0  # 0: no learned post-filter after the harmonic-plus-noise synthesis
    postfilter_dilations: tuple[int, ...] = (1, 3, 9)  # kernel 7
    f0_teacher_forcing: bool = True  # train the synthesis on the tracked F0 / voicing (inference: the predicted)
    # losses
    stft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)
    mel_loss_n_fft: int = 1024
    mel_loss_hop: int = 256
    w_stft: float = 1.0
    w_mel: float = 1.0
    w_f0: float = 1.0  # x mean |log2 f0_hat - log2 f0| (octaves) over voiced frames
    w_voicing: float = 0.2
    w_codebook: float = 1.0
    w_commitment: float = 0.25

    def __post_init__(self) -> None:
        for name in ("enc_dilations", "dec_dilations", "control_dilations", "postfilter_dilations", "stft_sizes"):
            setattr(self, name, tuple(int(x) for x in getattr(self, name)))
        if self.sample_rate % self.frame_rate:
            raise ValueError(f"sample_rate {self.sample_rate} is not a multiple of frame_rate {self.frame_rate}")
        if self.hop % self.controls_per_token:
            raise ValueError(f"hop {self.hop} is not a multiple of controls_per_token {self.controls_per_token}")
        if not 0 < self.f0_min < self.f0_max < self.sample_rate / 2:
            raise ValueError(f"need 0 < f0_min < f0_max < Nyquist, got {self.f0_min}, {self.f0_max}")

    @property
    def hop(self) -> int:
        return self.sample_rate // self.frame_rate

    @property
    def control_hop(self) -> int:
        return self.hop // self.controls_per_token

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodecConfig:
        """Build from a plain dict (a YAML section); unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown codec config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)


def codec_default() -> CodecConfig:
    """The tiny-en codec: 16 kHz, 40 tokens/s, 1024 codes, harmonic-plus-noise decoder (about 4 M parameters)."""
    return CodecConfig()


def codec_24k() -> CodecConfig:
    """Like :func:`codec_default` at upstream's 24 kHz (600 samples per token)."""
    return CodecConfig(sample_rate=24000, n_harmonics=96, mel_n_fft=1536)


def codec_tiny() -> CodecConfig:
    """A few-thousand-parameter codec for tests (64 codes, 16 harmonics)."""
    return CodecConfig(codebook_size=64, code_dim=4, restart_after=5, n_mels=32, mel_n_fft=512, enc_dim=32,
                       enc_dilations=(1, 2), dec_dim=32, dec_dilations=(1, 2), control_dim=32,
                       control_dilations=(1,), n_harmonics=16, n_noise_bands=16, stft_sizes=(512, 128),
                       mel_loss_n_fft=512, mel_loss_hop=128)


PRESETS = {"default": codec_default, "24k": codec_24k, "tiny": codec_tiny}


def build_codec_config(spec: str | dict[str, Any] | None) -> CodecConfig:
    """A preset name, ``{preset: NAME, ...overrides}``, or a full config dict -> `CodecConfig`."""
    if spec is None:
        return codec_default()
    if isinstance(spec, str):
        spec = {"preset": spec}
    spec = dict(spec)
    preset = spec.pop("preset", None)
    if preset is None:
        return CodecConfig.from_dict(spec)
    if preset not in PRESETS:
        raise ValueError(f"unknown codec preset {preset!r}; known: {sorted(PRESETS)}")
    base = PRESETS[preset]().to_dict()
    unknown = sorted(set(spec) - set(base))
    if unknown:
        raise ValueError(f"unknown codec config key(s) {unknown}")
    return CodecConfig.from_dict({**base, **spec})

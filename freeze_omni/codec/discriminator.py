"""Optional adversarial training of the codec: a small multi-period discriminator (HiFi-GAN's MPD) with LSGAN and
feature-matching losses, folded into one loss for the shared single-optimizer trainer.

Off by default (``adversarial.enabled`` in the codec stage config): the harmonic-plus-noise decoder already has
harmonics, and the discriminator costs more CPU than the rest of a step. Where it is affordable it sharpens the
noise and the transients.

One optimizer trains both sides: the discriminator term sees the reconstruction detached (its gradient reaches
only the discriminator), and the generator terms run the discriminator with detached parameters (their gradient
reaches only the codec), so summing them into one loss gives each side its own GAN objective.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class PeriodDiscriminator(nn.Module):
    """Folds ``[B, T]`` into ``[B, 1, T / p, p]`` and applies 2-D convs along time (kernel 5, stride 3)."""

    def __init__(self, period: int, channels: int = 16, n_layers: int = 4) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [channels * 2 ** min(i, 3) for i in range(n_layers)]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], (5, 1), stride=(3, 1), padding=(2, 0)) for i in range(n_layers))
        self.post = nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [B, T]`` -> feature maps of every layer, the last one being the score map."""
        B, T = x.shape
        x = F.pad(x, (0, -T % self.period), mode="reflect" if T > self.period else "constant")
        h = x.view(B, 1, -1, self.period)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
            feats.append(h)
        feats.append(self.post(h))
        return feats


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per period."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: int = 16) -> None:
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        return [d(x) for d in self.discs]


def adversarial_losses(disc: MultiPeriodDiscriminator, real: torch.Tensor,
                       fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """LSGAN losses of both sides and feature matching, for one optimizer (see the module docstring).

    Args:
        disc: the discriminator.
        real: ``[B, T]`` training audio.
        fake: ``[B, T]`` the codec's reconstruction (with its graph).

    Returns:
        ``disc`` (discriminator loss; gradient to ``disc`` only), ``adv`` (generator LSGAN loss) and ``fm``
        (feature-matching L1) (gradient to the codec only).
    """
    real_out = disc(real)
    fake_out = disc(fake.detach())
    d_loss = sum(torch.mean((1 - r[-1]) ** 2) + torch.mean(f[-1] ** 2) for r, f in zip(real_out, fake_out))
    frozen = {n: p.detach() for n, p in disc.named_parameters()}
    gen_out = functional_call(disc, frozen, (fake,))
    adv = sum(torch.mean((1 - g[-1]) ** 2) for g in gen_out)
    fm = sum(F.l1_loss(g, r.detach()) for gs, rs in zip(gen_out, real_out) for g, r in zip(gs[:-1], rs[:-1]))
    n = len(disc.discs)
    return {"disc": d_loss / n, "adv": adv / n, "fm": fm / n}

"""Single-codebook vector quantizer: factorised, l2-normalised codes with fast dead-code restarts.

Lookup happens in a low-dimensional space (``code_dim``, e.g. 8): the encoder output is projected there and
l2-normalised, the codebook rows are l2-normalised, and the nearest code is the one of highest cosine
(the "factorised codes" of ViT-VQGAN / DAC, which keep a large codebook in use). The codebook is learned
with the codebook loss ``|sg(z) - q|²`` and the encoder is held to it with the commitment loss
``|z - sg(q)|²`` (VQ-VAE); the straight-through estimator carries the decoder's gradient to the encoder.

Dead codes: every training step counts, per code, the steps since it was last chosen; a code unused for
``restart_after`` steps is replaced by a random encoder output of the current batch (plus a little noise).
Slow, threshold-based restarts let a codebook collapse to one code (``reference/cpu_feasibility.md`` §3);
this one keeps it spread. The counter is a buffer of the module that owns the codebook parameter, so the
shared trainer checkpoints it; the draws use torch's global RNG, which the trainer restores on resume.
Under DDP each rank restarts its own codes (the ranks' codebooks then differ in the restarted rows until
their gradients agree again); single-process training is the intended use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """``[B, N, dim]`` latents -> code indices ``[B, N]`` and quantised latents ``[B, N, code_dim]``.

    Args:
        dim: encoder output width.
        codebook_size: number of codes ``K``.
        code_dim: width of the lookup space.
        restart_after: a code unused for this many training steps is restarted (0: never).
    """

    def __init__(self, dim: int, codebook_size: int = 1024, code_dim: int = 8, restart_after: int = 20) -> None:
        super().__init__()
        self.codebook_size, self.code_dim, self.restart_after = codebook_size, code_dim, restart_after
        self.in_proj = nn.Linear(dim, code_dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))

    def normalized_codebook(self) -> torch.Tensor:
        """``[K, code_dim]`` unit-norm codes."""
        return F.normalize(self.codebook, dim=-1)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, N]`` (int64) -> unit-norm code vectors ``[B, N, code_dim]``."""
        return F.embedding(indices, self.normalized_codebook())

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, N, dim]`` -> unit-norm lookup vectors ``[B, N, code_dim]``."""
        return F.normalize(self.in_proj(z), dim=-1)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, N, dim]`` -> nearest code indices ``[B, N]``."""
        return (self.project(z) @ self.normalized_codebook().t()).argmax(dim=-1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise (and, in training mode, restart dead codes).

        Args:
            z: ``[B, N, dim]`` encoder output.

        Returns:
            ``q`` ``[B, N, code_dim]`` (straight-through: forward value = code, gradient -> encoder),
            ``indices`` ``[B, N]``, and scalar losses / statistics: ``codebook``, ``commitment``,
            ``perplexity`` (of this batch's code use), ``restarted`` (codes restarted this step).
        """
        ze = self.project(z)  # [B, N, d]
        codes = self.normalized_codebook()  # [K, d]
        indices = (ze.detach() @ codes.t()).argmax(dim=-1)  # [B, N]
        zq = F.embedding(indices, codes)
        stats = {
            "codebook": F.mse_loss(zq, ze.detach()),
            "commitment": F.mse_loss(ze, zq.detach()),
        }
        q = ze + (zq - ze).detach()
        counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
        probs = counts / counts.sum().clamp(min=1.0)
        stats["perplexity"] = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        restarted = 0
        if self.training and self.restart_after > 0:
            restarted = self._restart_dead(counts, ze.detach().reshape(-1, self.code_dim))
        stats["restarted"] = torch.tensor(float(restarted))
        return q, indices, stats

    @torch.no_grad()
    def _restart_dead(self, counts: torch.Tensor, latents: torch.Tensor) -> int:
        """Update the unused-step counters; replace codes unused for ``restart_after`` steps by random
        ``latents`` ``[M, code_dim]`` (with replacement when there are fewer latents than dead codes)."""
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = torch.nonzero(self.unused_steps >= self.restart_after).flatten()
        if dead.numel() == 0 or latents.shape[0] == 0:
            return 0
        pick = torch.randint(0, latents.shape[0], (dead.numel(),), device=latents.device)
        new = latents[pick] + 0.01 * torch.randn_like(latents[pick])
        self.codebook.data[dead] = F.normalize(new, dim=-1).to(self.codebook.dtype)
        self.unused_steps[dead] = 0
        return int(dead.numel())

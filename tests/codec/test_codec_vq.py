"""The quantizer: lookup, straight-through gradient, dead-code restarts."""

import torch

from freeze_omni.codec.quantizer import VectorQuantizer


def _collapsed(restart_after: int = 3) -> VectorQuantizer:
    """Identity projection and a codebook where code 0 wins every lookup (the others all point away)."""
    vq = VectorQuantizer(dim=4, codebook_size=16, code_dim=4, restart_after=restart_after)
    with torch.no_grad():
        vq.in_proj.weight.copy_(torch.eye(4))
        vq.in_proj.bias.zero_()
        vq.codebook.zero_()
        vq.codebook[:, 0] = -1.0
        vq.codebook[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    return vq


def _latents(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 64, 4, generator=g)
    z[..., 0] = z[..., 0].abs() + 0.5  # every latent is closest to code 0 at first
    return z


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    vq = _collapsed(restart_after=3).train()
    z = _latents()
    assert vq.encode(z).unique().numel() == 1
    restarted = [float(vq(z)[2]["restarted"]) for _ in range(3)]
    assert restarted == [0.0, 0.0, 15.0]  # the 15 unused codes, after exactly `restart_after` steps
    used = vq.encode(z).unique()
    assert used.numel() >= 8  # restarted codes sit on encoder outputs, so they win lookups now
    assert int(vq.unused_steps.max()) == 0
    _, idx, stats = vq(z)
    assert idx.unique().numel() >= 8 and float(stats["perplexity"]) > 4.0


def test_no_restarts_in_eval_mode_or_when_disabled():
    z = _latents()
    vq = _collapsed().eval()
    for _ in range(5):
        vq(z)
    assert vq.encode(z).unique().numel() == 1
    vq = _collapsed(restart_after=0).train()
    for _ in range(5):
        assert float(vq(z)[2]["restarted"]) == 0.0


def test_quantized_values_are_codes_and_gradient_reaches_the_encoder():
    vq = VectorQuantizer(dim=6, codebook_size=32, code_dim=4, restart_after=0)
    z = torch.randn(3, 10, 6, requires_grad=True)
    q, idx, stats = vq(z)
    torch.testing.assert_close(q, vq.embed(idx))
    assert torch.equal(idx, vq.encode(z))
    (q.sum() + stats["codebook"] + stats["commitment"]).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    assert "unused_steps" in vq.state_dict()  # checkpointed with the codebook

"""Sampling: upstream order (temperature -> softmax -> top-k -> top-p -> multinomial) and its greedy limits."""

from __future__ import annotations

import torch

from freeze_omni.llm.sampling import SamplingConfig, sample_next


def _logits(seed: int = 0, B: int = 8, V: int = 50) -> torch.Tensor:
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax():
    x = _logits()
    assert torch.equal(sample_next(x, SamplingConfig(greedy=True)), x.argmax(-1))


def test_temperature_zero_is_greedy():
    x = _logits(1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(x, SamplingConfig(temperature=0.0), g), x.argmax(-1))


def test_top_k_one_is_greedy():
    x = _logits(2)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert torch.equal(sample_next(x, SamplingConfig(top_k=1, temperature=5.0), g), x.argmax(-1))


def test_top_p_keeps_at_least_the_top_token():
    x = _logits(3)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert torch.equal(sample_next(x, SamplingConfig(top_k=0, top_p=1e-9, temperature=5.0), g), x.argmax(-1))


def test_samples_stay_in_top_k_and_are_reproducible():
    x = _logits(4, B=1, V=100)
    cfg = SamplingConfig(temperature=10.0, top_k=5, top_p=1.0)
    allowed = set(x[0].topk(5).indices.tolist())
    g = torch.Generator().manual_seed(7)
    draws = [int(sample_next(x, cfg, g)) for _ in range(200)]
    assert set(draws) <= allowed and len(set(draws)) > 1
    g2 = torch.Generator().manual_seed(7)
    assert draws == [int(sample_next(x, cfg, g2)) for _ in range(200)]


def test_top_p_truncates_the_tail():
    # probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two (mass before the third is 0.8 > 0.7)
    x = torch.tensor([[0.5, 0.3, 0.2]]).log()
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(x, SamplingConfig(temperature=1.0, top_k=0, top_p=0.7), g)) for _ in range(300)}
    assert draws == {0, 1}

"""The F0 tracker and the harmonic-plus-noise synthesis."""

import numpy as np
import torch

from freeze_omni.codec import ddsp
from freeze_omni.codec.f0 import yin

SR, HOP = 16000, 100


def _tone(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * f0 * t) + 0.25 * np.sin(2 * np.pi * 2 * f0 * t + 1.0)
            + 0.1 * np.sin(2 * np.pi * 3 * f0 * t + 2.0) + 0.005 * rng.standard_normal(len(t)))


def test_yin_finds_150_hz_within_3_percent():
    f0, voiced = yin(_tone(150.0), SR, HOP)
    assert f0.shape == voiced.shape == (SR // HOP,)
    assert voiced.mean() > 0.95
    assert np.all(np.abs(f0[voiced > 0] / 150.0 - 1.0) < 0.03)


def test_yin_other_pitches_noise_and_silence():
    for f in (70.0, 110.0, 240.0):
        f0, v = yin(_tone(f, 0.5), SR, HOP)
        assert abs(np.median(f0[v > 0]) / f - 1.0) < 0.03
    noise = 0.1 * np.random.default_rng(1).standard_normal(SR)
    assert yin(noise, SR, HOP)[1].mean() < 0.1  # white noise is not voiced
    f0, v = yin(np.zeros(SR // 2), SR, HOP)
    assert v.sum() == 0 and np.all(np.isfinite(f0))


def test_yin_fills_unvoiced_gaps_by_interpolation():
    x = np.concatenate([_tone(100.0, 0.3), np.zeros(SR // 5), _tone(200.0, 0.3)])
    f0, v = yin(x, SR, HOP)
    gap = slice(int(0.35 * SR) // HOP, int(0.45 * SR) // HOP)
    assert v[gap].sum() == 0
    assert np.all((f0[gap] >= 95) & (f0[gap] <= 205))  # between its voiced neighbours


def test_harmonic_synthesis_puts_the_peak_at_f0():
    f0_hz, n_frames = 180.0, 160
    f0 = torch.full((1, n_frames), f0_hz)
    dist = torch.zeros(1, 8, n_frames)
    dist[:, 0], dist[:, 1] = 1.0, 0.3  # mostly the fundamental, some 2nd harmonic
    amps = ddsp.harmonic_amplitudes(f0, torch.full((1, n_frames), 0.5), dist, SR)
    phase = ddsp.harmonic_phase(ddsp.upsample(f0.unsqueeze(1), HOP)[:, 0], SR)
    y = ddsp.harmonic_synth(phase[:, :-1], amps, HOP)[0].numpy()
    assert y.shape == (n_frames * HOP,)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert abs(freqs[np.argmax(spec)] - f0_hz) < 2.0
    second = spec[np.abs(freqs - 2 * f0_hz) < 3].max()
    assert 0.2 < second / spec.max() < 0.4


def test_harmonics_above_nyquist_are_silent():
    f0 = torch.full((1, 4), 3000.0)
    amps = ddsp.harmonic_amplitudes(f0, torch.ones(1, 4), torch.ones(1, 5, 4), SR)
    assert torch.allclose(amps[:, :2].sum(1), torch.ones(1, 4)) and amps[:, 2:].abs().max() == 0


def test_phase_can_be_pinned():
    f0 = torch.rand(2, 500) * 200 + 50
    p = ddsp.harmonic_phase(f0, SR)
    assert p.dtype == torch.float64 and p.shape == (2, 501) and torch.all(p[:, 0] == 0)
    q = ddsp.harmonic_phase(f0[:, 200:], SR, phase0=p[:, 200], index=0)
    torch.testing.assert_close(q, p[:, 200:], rtol=0, atol=1e-9)
    r = ddsp.harmonic_phase(f0[:, 100:], SR, phase0=p[:, 300], index=200)
    torch.testing.assert_close(r, p[:, 100:], rtol=0, atol=1e-9)


def test_filtered_noise_follows_the_filter():
    torch.manual_seed(0)
    noise = torch.rand(1, 160 * HOP) * 2 - 1
    bands = torch.zeros(1, 160, 16)
    bands[..., :4] = 1.0  # pass 0 .. ~2 kHz only
    y = ddsp.filtered_noise(noise, bands, HOP, 4 * HOP)[0].numpy()
    assert y.shape == (160 * HOP,)
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert spec[freqs < 1500].mean() > 100 * spec[freqs > 3500].mean()

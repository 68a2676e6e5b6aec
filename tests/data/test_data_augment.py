"""Augmentation: lengths, SNR, speed, pitch, VTLP, gain, reverb, SpecAugment, the Augmenter."""

import numpy as np
import pytest
import torch

from freeze_omni.data import augment as A

SR = 16000


def _tone(f0=200.0, seconds=2.0):
    t = np.arange(int(SR * seconds)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def _peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * SR / len(x)


def _snr(clean, noisy):
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean).astype(np.float64) ** 2))


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_add_noise_snr(kind, snr):
    x = _tone()
    y = A.add_noise(x, snr, np.random.default_rng(0), kind)
    assert y.dtype == np.float32 and len(y) == len(x)
    assert abs(_snr(x, y) - snr) < 0.5


def test_noise_colors_differ():
    rng = np.random.default_rng(0)
    lows = []
    for kind in ("white", "pink", "brown"):
        p = np.abs(np.fft.rfft(A.colored_noise(SR, kind, rng))) ** 2
        lows.append(p[: len(p) // 10].sum() / p.sum())  # share of power below 800 Hz
    assert lows[0] < lows[1] < lows[2]
    with pytest.raises(ValueError):
        A.colored_noise(10, "blue", rng)


def test_add_babble_snr():
    rng = np.random.default_rng(1)
    x = _tone()
    others = [_tone(f, s) for f, s in ((310, 0.7), (450, 3.0), (520, 1.3))]
    y = A.add_babble(x, others, 12.0, rng)
    assert len(y) == len(x) and abs(_snr(x, y) - 12.0) < 0.5


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb(factor):
    x = _tone()
    y = A.speed_perturb(x, factor)
    assert abs(len(y) - len(x) / factor) <= 2
    assert _peak_hz(y) == pytest.approx(200 * factor, rel=0.02)


@pytest.mark.parametrize("semitones", [-3.0, 2.0, 4.0])
def test_pitch_shift_keeps_length(semitones):
    x = _tone()
    y = A.pitch_shift(x, semitones)
    assert abs(len(y) - len(x)) <= 0.01 * len(x)
    assert _peak_hz(y) == pytest.approx(200 * 2 ** (semitones / 12), rel=0.02)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=0.1)


def test_time_stretch():
    x = _tone()
    y = A.time_stretch(x, 1.3)
    assert len(y) == round(1.3 * len(x)) and _peak_hz(y) == pytest.approx(200, rel=0.02)


def test_vtlp_moves_spectral_envelope():
    rng = np.random.default_rng(0)
    spec = np.fft.rfft(rng.standard_normal(2 * SR))
    spec[np.fft.rfftfreq(2 * SR, 1 / SR) > 2000] = 0  # band-limited to 2 kHz
    x = (0.1 * np.fft.irfft(spec)).astype(np.float32)

    def centroid(w):
        p = np.abs(np.fft.rfft(w)) ** 2
        return (p * np.fft.rfftfreq(len(w), 1 / SR)).sum() / p.sum()
    up, down = A.vtlp(x, 1.15), A.vtlp(x, 0.85)
    assert len(up) == len(down) == len(x)
    assert centroid(up) > 1.08 * centroid(x) and centroid(down) < 0.92 * centroid(x)
    np.testing.assert_allclose(A.vtlp(x, 1.0), x)
    mag = np.abs(rng.standard_normal((7, 257)))
    assert A.warp_spectrum(mag, 1.1).shape == mag.shape
    np.testing.assert_allclose(A.warp_spectrum(mag, 1.0), mag, atol=1e-9)


def test_apply_gain_guards_clipping():
    x = _tone()
    assert np.abs(A.apply_gain(x, -6.0)).max() == pytest.approx(0.3 * 10 ** (-6 / 20), rel=1e-3)
    loud = A.apply_gain(x, 20.0)
    assert np.abs(loud).max() <= 0.999 and np.abs(loud).max() > 0.99


def test_reverb_keeps_length_and_level():
    x = _tone()
    y = A.reverb(x, 0.5, np.random.default_rng(0))
    assert len(y) == len(x) and y.dtype == np.float32
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-3)
    assert not np.allclose(y, x)


@pytest.mark.parametrize("to_torch", [False, True])
def test_spec_augment_masks(to_torch):
    feats = np.ones((200, 80), dtype=np.float32)
    feats_in = torch.from_numpy(feats) if to_torch else feats
    out = A.spec_augment(feats_in, n_freq_masks=2, F_width=10, n_time_masks=3, T_width=20,
                         rng=np.random.default_rng(0), fill=0.0)
    out = out.numpy() if to_torch else out
    assert (np.asarray(feats_in) == 1).all()  # a copy
    zero_cols = np.where((out == 0).all(axis=0))[0]
    zero_rows = np.where((out == 0).all(axis=1))[0]
    assert 0 < len(zero_cols) <= 2 * 10 and 0 < len(zero_rows) <= 3 * 20
    masked = np.zeros_like(out, dtype=bool)
    masked[:, zero_cols] = True
    masked[zero_rows] = True
    assert ((out == 0) == masked).all()  # nothing else touched
    nothing = A.spec_augment(feats, 0, 10, 0, 20, rng=np.random.default_rng(0))
    assert (nothing == 1).all()


def test_augmenter_deterministic_and_bounded():
    aug = A.Augmenter(p_speed=1, p_pitch=1, p_vtlp=1, p_reverb=1, p_noise=1, p_gain=1, p_babble=1,
                      babble_pool=[_tone(300, 1.0), _tone(420, 0.5), _tone(510, 1.5)])
    x = _tone()
    a, b = aug(x, np.random.default_rng(5)), aug(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.abs(a).max() <= 0.999
    assert len(x) / 1.1 - 2 <= len(a) <= len(x) / 0.9 + 2
    np.testing.assert_allclose(A.Augmenter(p_speed=0, p_pitch=0, p_vtlp=0, p_reverb=0, p_noise=0, p_gain=0)(
        x, np.random.default_rng(0)), x)

"""Streaming decode: exact length, equal to the whole-utterance decode, splicing never drops or repeats audio.

Tolerance: every streamed window sees at least the decoder's receptive field of context, the noise is a fixed
table indexed by absolute sample, and the oscillator phase is carried across windows, so streaming equals the
whole decode in exact arithmetic. What is left is float32 rounding: the convolutions run on windows of other
lengths, which changes the predicted F0 by about 1e-7 relative, and the phase (a running sum of F0) drifts
from the whole-utterance one by that much times the elapsed phase. Measured: about 1e-5 (tiny codec) and
2e-4 (default codec, random weights, 3.4 s) for peaks around 0.2-0.3, so the bound is 1e-3 absolute.
"""

import numpy as np
import pytest
import torch

from freeze_omni.codec.config import codec_default, codec_tiny
from freeze_omni.codec.model import Codec
from freeze_omni.codec.streaming import StreamingCodecDecoder, StreamingConfig

TOL = 1e-3


@pytest.fixture(scope="module")
def tiny() -> Codec:
    torch.manual_seed(0)
    return Codec(codec_tiny()).eval()


def _stream(codec: Codec, tokens: list[int], cfg: StreamingConfig, seed: int = 0) -> list[np.ndarray]:
    dec = StreamingCodecDecoder(codec, cfg)
    rng = np.random.default_rng(seed)
    outs, i = [], 0
    while i < len(tokens):
        k = int(rng.integers(1, 9))
        outs.append(dec.push(tokens[i:i + k]))
        i += k
    outs.append(dec.flush())
    return outs


@pytest.mark.parametrize("n", [1, 7, 29, 30, 31, 69, 70, 71, 150])
@pytest.mark.parametrize("splice", [True, False])
def test_streaming_equals_whole_decode(tiny, n, splice):
    tokens = torch.randint(0, tiny.codebook_size, (1, n), generator=torch.Generator().manual_seed(n))
    whole = tiny.decode(tokens)[0].numpy()
    outs = _stream(tiny, tokens[0].tolist(), StreamingConfig(splice=splice, threshold=0.05), seed=n)
    stream = np.concatenate(outs)
    assert len(stream) == n * tiny.hop  # nothing dropped, nothing repeated
    np.testing.assert_allclose(stream, whole, atol=TOL, rtol=0)


def test_default_codec_streams_within_tolerance():
    torch.manual_seed(1)
    codec = Codec(codec_default()).eval()
    tokens = torch.randint(0, codec.codebook_size, (1, 137))
    whole = codec.decode(tokens)[0].numpy()
    stream = np.concatenate(_stream(codec, tokens[0].tolist(), StreamingConfig()))
    assert len(stream) == len(whole)
    assert np.abs(stream - whole).max() < TOL


def test_first_audio_after_first_chunk_plus_context(tiny):
    dec = StreamingCodecDecoder(tiny, StreamingConfig(first_chunk=20, chunk=40, context=10, splice=False))
    assert len(dec.push(list(range(29)))) == 0
    assert len(dec.push([5])) == 20 * tiny.hop  # window 1: 20 new tokens
    # 20 tokens are kept (10 left context + the 10 of right context, not emitted yet): 40 more make window 2
    assert len(dec.push([1] * 39)) == 0
    assert len(dec.push([2])) == 40 * tiny.hop  # window 2: 10 left + 40 new + 10 right
    assert len(dec.flush()) == 10 * tiny.hop  # the 10 tokens of right context


def test_splicing_cuts_at_quiet_points_and_holds_the_rest(tiny):
    hop = tiny.hop
    dec = StreamingCodecDecoder(tiny, StreamingConfig(first_threshold=0.1, threshold=0.015))
    loud = np.sin(np.arange(20 * hop) * 0.3).astype(np.float32) * 0.5
    quiet = loud.copy()
    quiet[10 * hop:16 * hop] *= 0.001  # a 150 ms pause in the second half
    first = dec._splice(quiet)
    assert 10 * hop <= len(first) <= 16 * hop and dec.state.emitted
    held = len(dec.state.held)
    assert len(dec._splice(loud)) == 0  # no pause: everything held back
    assert len(dec.state.held) == held + len(loud)
    out = dec._splice(quiet)
    assert len(out) + len(dec.state.held) == held + 2 * len(loud)  # conserved


def test_segments_restart_and_flush_releases_everything(tiny):
    dec = StreamingCodecDecoder(tiny, StreamingConfig())
    for n in (45, 12, 80):
        tokens = torch.randint(0, tiny.codebook_size, (1, n), generator=torch.Generator().manual_seed(n))
        audio = np.concatenate([dec.push(tokens[0].tolist()), dec.flush()])
        np.testing.assert_allclose(audio, tiny.decode(tokens)[0].numpy(), atol=TOL, rtol=0)
        assert dec.state.pending == [] and len(dec.state.held) == 0
    assert len(dec.flush()) == 0


def test_receptive_field_bound_holds(tiny):
    """Changing one token changes no control frame beyond `receptive_tokens` tokens away from it (the phase, a
    running sum of F0, changes for good: streaming carries it across windows instead)."""
    for codec in (tiny, Codec(codec_default()).eval()):
        tokens = torch.randint(0, codec.codebook_size, (1, 40), generator=torch.Generator().manual_seed(3))
        other = tokens.clone()
        other[0, 20] = (other[0, 20] + 1) % codec.codebook_size
        with torch.no_grad():
            a, b = (codec.decoder(codec.quantizer.embed(t)) for t in (tokens, other))
        u = codec.cfg.controls_per_token
        pairs = ((a.f0, b.f0), (a.amplitude, b.amplitude), (a.noise.transpose(1, 2), b.noise.transpose(1, 2)))
        diff = sum((x - y).abs().reshape(1, -1, 40, u).amax(dim=(0, 1, 3)) for x, y in pairs)  # [40] per token
        changed = torch.nonzero(diff > 1e-7).flatten()
        assert changed.numel() > 0
        assert int((changed - 20).abs().max()) <= codec.receptive_tokens


def test_training_mode_is_refused(tiny):
    dec = StreamingCodecDecoder(tiny.train())
    try:
        with pytest.raises(AssertionError):
            dec.push([1, 2, 3])
    finally:
        tiny.eval()

import dataclasses

import pytest
import torch

from freeze_omni.encoder.ctc import CharTokenizer, GreedyCTCState, greedy_decode
from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder, upstream_config, whisper_config
from freeze_omni.encoder.masks import ChunkPolicy, chunk_mask, pad_mask


def _tiny(family: str, **kw) -> SpeechEncoder:
    torch.manual_seed(0)
    cfg = EncoderConfig(family=family, d_model=32, n_heads=4, d_ff=64, n_layers=2, chunk_size=4, left_chunks=2,
                        max_positions=300, **kw)
    enc = SpeechEncoder(cfg).eval()
    if family == "upstream":  # non-trivial CMVN
        enc.front.cmvn_mean.normal_()
        enc.front.cmvn_istd.uniform_(0.5, 2.0)
    return enc


@pytest.mark.parametrize("family", ["whisper", "upstream"])
@pytest.mark.parametrize("seconds", [0.96, 2.4])
def test_chunk_by_chunk_equals_masked_full_utterance(family, seconds):
    enc = _tiny(family)
    t = int(seconds * 100)
    x = torch.randn(2, t, 80)
    with torch.no_grad():
        full, lens = enc(x, torch.tensor([t, t]), enc.cfg.chunk_size, enc.cfg.left_chunks)
        stream = enc.forward_chunk_by_chunk(x)
    assert stream.shape == full.shape
    torch.testing.assert_close(stream, full, atol=1e-5, rtol=1e-5)


def test_cache_is_bounded_and_positions_advance():
    enc = _tiny("whisper")
    cache = enc.init_cache()
    for _ in range(6):
        _, cache = enc.forward_chunk(torch.randn(1, enc.cfg.chunk_frames, 80), cache)
    assert cache.offset == 6 * enc.cfg.chunk_size
    assert cache.k[0].shape[2] == enc.cfg.cache_frames  # keys of chunk_size * left_chunks frames


def test_streaming_differs_from_full_attention():
    enc = _tiny("whisper")
    x = torch.randn(1, 160, 80)
    with torch.no_grad():
        a, _ = enc(x, torch.tensor([160]), None)
        b = enc.forward_chunk_by_chunk(x)
    assert (a - b).abs().max() > 1e-3  # the mask really restricts context


def test_padding_does_not_change_valid_frames():
    enc = _tiny("upstream")
    x = torch.randn(1, 96, 80)
    padded = torch.cat([x, torch.randn(1, 32, 80)], dim=1)
    with torch.no_grad():
        a, la = enc(x, torch.tensor([96]), 4, 2)
        b, lb = enc(padded, torch.tensor([96]), 4, 2)
    assert la.item() == lb.item() == 24
    torch.testing.assert_close(a, b[:, :24], atol=1e-5, rtol=1e-5)


def test_upstream_position_lag_quirk_changes_late_chunks_only():
    exact, quirk = _tiny("upstream"), _tiny("upstream", upstream_pos_lag=True)
    quirk.load_state_dict(exact.state_dict())
    x = torch.randn(1, 16 * 6, 80)
    with torch.no_grad():
        a, b = exact.forward_chunk_by_chunk(x), quirk.forward_chunk_by_chunk(x)
    per_chunk = 4
    cache_full_after = exact.cfg.left_chunks  # chunks before the cache is full: identical positions
    torch.testing.assert_close(a[:, : per_chunk * (cache_full_after + 1)], b[:, : per_chunk * (cache_full_after + 1)])
    assert (a[:, -per_chunk:] - b[:, -per_chunk:]).abs().max() > 1e-4


def test_released_shapes():
    up = upstream_config()
    assert (up.d_model, up.n_layers, up.n_heads, up.chunk_size, up.left_chunks) == (1024, 24, 16, 4, 16)
    assert up.chunk_frames == 16 and up.cache_frames == 64
    enc = SpeechEncoder(dataclasses.replace(up, n_layers=1))
    sd = enc.state_dict()
    assert sd["front.core.conv.0.weight"].shape == (1024, 1, 3, 3)
    assert sd["front.core.out.0.weight"].shape == (1024, 1024 * 19)
    assert sd["encoders.0.self_attn.pos_bias_u"].shape == (16, 64)
    assert "encoders.0.self_attn.linear_pos.bias" not in sd
    w = whisper_config("tiny.en")
    assert (w.d_model, w.n_layers, w.chunk_frames) == (384, 4, 16)


def test_masks():
    m = chunk_mask(6, 2, 1)
    assert m.int().tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0],
                                [0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    assert pad_mask(torch.tensor([2, 3])).int().tolist() == [[1, 1, 0], [1, 1, 1]]
    g = torch.Generator().manual_seed(0)
    pol = ChunkPolicy(mode="dynamic", chunk_size=8, left_chunks=16, static_prob=0.5, full_prob=0.25)
    draws = [pol.sample(g) for _ in range(400)]
    assert 150 < sum(d == (8, 16) for d in draws) < 250
    assert 60 < sum(d == (None, None) for d in draws) < 140
    assert ChunkPolicy(mode="full").sample() == (None, None)
    with pytest.raises(ValueError):
        ChunkPolicy(mode="nope")


def test_greedy_ctc_streaming_equals_batch():
    tok = CharTokenizer()
    torch.manual_seed(0)
    lp = torch.randn(1, 40, tok.vocab_size).log_softmax(-1)
    st = GreedyCTCState()
    for s in range(0, 40, 8):
        st.update(lp[0, s:s + 8])
    assert st.ids == greedy_decode(lp, torch.tensor([40]))[0]
    assert tok.decode(tok.encode("Hello, World 2!")) == "hello world two"

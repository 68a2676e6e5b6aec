"""Cross-session batching of encoder + adapter: stack/unstack round trip, batched == per-session."""

import pytest
import torch

from freeze_omni.dialogue.batching import adapt_chunks, encode_chunks, stack_encoder_caches, unstack_encoder_caches
from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
from freeze_omni.llm.adapter import Adapter


def _encoder(family: str, **kw) -> SpeechEncoder:
    torch.manual_seed(0)
    cs = 4 if family == "upstream" else 8
    cfg = EncoderConfig(family=family, d_model=32, n_heads=2, d_ff=64, n_layers=2, chunk_size=cs, left_chunks=2,
                        dropout=0.0, **kw)
    return SpeechEncoder(cfg).eval()


def _streams(enc: SpeechEncoder, chunks_before: list[int]):
    """Caches of streams that have already consumed different numbers of chunks, and each one's next chunk."""
    g = torch.Generator().manual_seed(1)
    step = enc.cfg.chunk_frames
    caches, nxt = [], []
    for n in chunks_before:
        c = enc.init_cache()
        for _ in range(n):
            _, c = enc.forward_chunk(torch.randn(1, step, 80, generator=g), c)
        caches.append(c)
        nxt.append(torch.randn(1, step, 80, generator=g))
    return caches, torch.cat(nxt)


@pytest.mark.parametrize("family,kw", [("whisper", {}), ("upstream", {}), ("upstream", {"upstream_pos_lag": True})])
@torch.inference_mode()
def test_batched_encoder_equals_per_session(family, kw):
    enc = _encoder(family, **kw)
    caches, feats = _streams(enc, [0, 1, 3, 5])  # empty, partial and full caches (left_chunks=2)
    out, new = encode_chunks(enc, feats, caches)
    for b, c in enumerate(caches):
        ref, rc = enc.forward_chunk(feats[b:b + 1], c)
        torch.testing.assert_close(out[b:b + 1], ref, atol=1e-5, rtol=1e-5)
        assert new[b].offset == rc.offset and len(new[b].k) == len(rc.k)
        for x, y in zip(new[b].k + new[b].v + new[b].conv, rc.k + rc.v + rc.conv):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_stack_unstack_round_trip():
    enc = _encoder("whisper")
    caches, _ = _streams(enc, [0, 2, 4])
    back = unstack_encoder_caches(stack_encoder_caches(caches))
    for a, b in zip(caches, back):
        assert a.offset == b.offset and len(a.k) == len(b.k)
        for x, y in zip(a.k + a.v + a.conv, b.k + b.v + b.conv):
            assert torch.equal(x, y)


@torch.inference_mode()
def test_batched_adapter_equals_per_session():
    torch.manual_seed(0)
    ad = Adapter(32, 24, stride=4, kernel_size=5).eval()
    caches = [torch.randn(1, ad.left_pad, 32) for _ in range(3)]
    x = torch.randn(3, 8, 32)
    out, new = adapt_chunks(ad, x, caches)
    for b in range(3):
        ref, rc = ad.forward_chunk(x[b:b + 1], caches[b])
        torch.testing.assert_close(out[b:b + 1], ref)
        torch.testing.assert_close(new[b], rc)

"""Parity checklist items (``reference/freeze_omni_facts.md`` §8) that hold for any weights: front end, encoder
carry and position counter, chat framing as fed, text normalisation, settings from ``server.json``."""

import numpy as np
import pytest
import torch

from freeze_omni.audio.features import StreamingFrontend
from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder, UPSTREAM_PE_WRAP


# ------------------------------------------------------------------------------------------------- item 1
def _kaldi_fbank(x: np.ndarray) -> np.ndarray:
    """An independent numpy transcription of ``torchaudio.compliance.kaldi.fbank(x, num_mel_bins=80,
    frame_length=25, frame_shift=10, dither=0)`` (snip edges, DC removal, pre-emphasis 0.97, povey window, 512-point
    power spectrum, Kaldi mel banks from 20 Hz to Nyquist, log floored at float eps); ``x`` int16-scaled."""
    n = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160:i * 160 + 400] for i in range(n)]).astype(np.float64)
    frames -= frames.mean(1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], 1)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    power = np.abs(np.fft.rfft(frames * window, 512)) ** 2  # [n, 257]
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(8000.0)
    delta = (hi - lo) / 81
    fft_mel = mel(np.arange(256) * 16000 / 512)
    banks = np.zeros((80, 257))
    for b in range(80):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        banks[b, :256] = np.maximum(0, np.minimum((fft_mel - left) / (center - left),
                                                  (right - fft_mel) / (right - center)))
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def test_front_end_equals_upstream_2800_sample_windows():
    """Upstream: per 160 ms packet, fbank of [240 carried samples + 2560 new] (zeros at the start) -> 16 frames.
    Ours: 240 zero samples before the stream, continuous framing. Same frames."""
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t) + 0.02 * rng.standard_normal(16000))
    wave = wave[: 6 * 2560].astype(np.float32)
    carry, upstream = np.zeros(240), []
    for s in range(0, len(wave), 2560):
        window = np.concatenate([carry, wave[s:s + 2560] * 32768.0])
        upstream.append(_kaldi_fbank(window))
        carry = window[-240:]
    upstream = np.concatenate(upstream)
    fe = StreamingFrontend("fbank")
    ours = np.concatenate([fe.accept(wave[s:s + 2560]) for s in range(0, len(wave), 2560)])
    assert upstream.shape == ours.shape == (96, 80)
    np.testing.assert_allclose(ours, upstream, atol=2e-3, rtol=1e-4)


# ------------------------------------------------------------------------------------------------- items 2-4
def _encoder(**kw) -> SpeechEncoder:
    torch.manual_seed(0)
    return SpeechEncoder(EncoderConfig(family="upstream", d_model=32, n_heads=4, d_ff=64, n_layers=1, chunk_size=4,
                                       left_chunks=16, dropout=0.0, **kw)).eval()


def test_encoder_input_is_3_carried_frames_plus_16_zeros_at_reset():
    enc = _encoder(upstream_pos_lag=True)
    cache = enc.init_cache()
    assert torch.equal(cache.conv[0], torch.zeros(1, 3, 80))  # literal zeros, not fbank of silence
    feats = torch.randn(1, 16, 80)
    with torch.no_grad():
        y, cache = enc.forward_chunk(feats, cache)
    assert y.shape == (1, 4, 32) and torch.equal(cache.conv[0], feats[:, -3:])
    assert cache.k[0].shape[2] == 4


def test_streaming_key_positions_follow_the_upstream_counter(monkeypatch):
    """pe_index starts at 0, +4 per chunk (mod 4932); keys use positions max(0, pe_index - 68) .. + cache + 4 - 1,
    read before it advances; the KV window keeps 64 frames."""
    enc = _encoder(upstream_pos_lag=True)
    firsts = []
    real = enc._key_pos
    monkeypatch.setattr(enc, "_key_pos", lambda first, n, device: firsts.append((first, n)) or real(first, n, device))
    cache, pe_index, expected = enc.init_cache(), 0, []
    with torch.no_grad():
        for _ in range(24):
            cached = cache.k[0].shape[2] if cache.k else 0
            expected.append((max(0, pe_index - 68), cached + 4))
            _, cache = enc.forward_chunk(torch.randn(1, 16, 80), cache)
            pe_index = (pe_index + 4) % UPSTREAM_PE_WRAP
            assert cache.k[0].shape[2] == min(64, 4 * (len(expected)))
    assert firsts == expected
    assert firsts[-1] == (4 * 23 - 68, 68)  # one chunk behind the true first key position (92 - 64 = 28 vs 24)


# ------------------------------------------------------------------------------------------------- item 6
def test_chat_framing_as_fed_by_the_converted_bundle(converted):
    """pre: tok('<|im_start|>system\\n' + role) (left open); first chunk: tok('<|im_end|>\\n<|im_start|>user\\n') +
    25 prompt embeddings + 2 audio; later chunks: 2; speaking: tok('<|im_end|>\\n<|im_start|>assistant\\n')."""
    from freeze_omni.llm.chat import ChatFraming
    from freeze_omni.llm.loader import load_speech_llm
    from freeze_omni.llm.model import Listener

    model, system = load_speech_llm(converted[0])
    llm = model.llm
    assert llm.framing == ChatFraming.qwen2_upstream() and system == "You are a helpful assistant."
    listener = Listener(model, system)
    s = listener.new_session()
    n0 = len(llm.tokenize("<|im_start|>system\nYou are a helpful assistant."))
    assert s.llm.length == n0
    user = llm.tokenize("<|im_end|>\n<|im_start|>user\n")
    assert user[0] == llm.eot_id and llm.framing_ids(llm.framing.user_prefix) == user
    listener.accept(s, np.zeros(2560, np.float32))
    assert s.llm.length == n0 + len(user) + 25 + 2
    assert s.adapter.shape[1] == 4  # upstream's 4-frame adapter cache
    listener.accept(s, np.zeros(2560, np.float32))
    assert s.llm.length == n0 + len(user) + 25 + 4
    assert llm.framing_ids(llm.framing.assistant_prefix) == llm.tokenize("<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("raw, clean", [
    ("Hello. World", "Hello.World。"),  # spaces after '.' removed, 。 appended (upstream's own rules)
    ("Steps:\n1. Boil (water), then stir", "Steps:1:Boil ,water,, then stir。"),
    ("1. 北京 2. 上海", "1：北京 2：上海。"),
    ("（测试）、好,", "，测试，，好。"),
    ("Why?", "Why?"),
    ("", ""),
])
def test_upstream_text_normalisation(raw, clean):
    from freeze_omni.decoder.segmenter import normalize_tts

    assert normalize_tts(raw, "upstream") == clean


# ------------------------------------------------------------------------------------------------- items 10, 11
def test_settings_from_server_json_drive_the_decoder_and_codec(converted):
    from freeze_omni.codec.streaming import StreamingCodecDecoder
    from freeze_omni.codec.ticodec import load_codec
    from freeze_omni.settings import PipelineSettings

    st = PipelineSettings.from_bundle(converted[0])
    gen = st.generation_config()
    assert (gen.top_k, gen.limit("x"), gen.limit("x" * 1000)) == (2, 1000, 1000)
    sc = st.streaming_config()
    assert (sc.first_chunk, sc.chunk, sc.context, sc.first_threshold, sc.threshold) == (20, 40, 10, 0.1, 0.015)
    codec = load_codec(converted[0])
    assert StreamingCodecDecoder(codec, sc).splice_window == 2401  # decoder_N
    assert codec.sample_rate == 24000 and codec.hop == 600
    assert codec.global_tokens.tolist() == [[473, 975, 419, 219, 565, 121, 550, 616]]
    seg = st.segmenter_config()
    assert (seg.min_tokens, seg.comma_after, seg.first_allows_comma) == (4, 20, True)
    samp = st.sampling_config()
    assert (samp.temperature, samp.top_k, samp.top_p, samp.max_new_tokens) == (0.8, 20, 0.8, 500)


def test_decoder_input_split_is_four_consecutive_pieces(converted):
    from freeze_omni.decoder.model import SpeechDecoder

    dec = SpeechDecoder.from_bundle(converted[0])
    x = torch.randn(1, 3, 128)
    y, lens = dec.map_llm(x, torch.tensor([3]), "text")
    assert y.shape == (1, 12, 32) and int(lens) == 12
    torch.testing.assert_close(y[0, 5], x[0, 1, 32:64])  # token 1, piece 1

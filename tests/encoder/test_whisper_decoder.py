"""Whisper's text decoder as a second pass: read from the pip-shipped model.bin, checked against CTranslate2, wired
into the streaming recogniser and into stage-1 training."""

from pathlib import Path

import numpy as np
import pytest
import torch

from freeze_omni.audio.features import extract
from freeze_omni.audio.io import load_audio
from freeze_omni.encoder.asr import SecondPass, SpeechRecognizer
from freeze_omni.encoder.ctc import CharTokenizer, CTCHead
from freeze_omni.encoder.encoder import EncoderConfig, SpeechEncoder
from freeze_omni.encoder.masks import ChunkPolicy
from freeze_omni.encoder.whisper_decoder import WINDOW_FRAMES, WhisperDecoder, load_whisper_decoder
from freeze_omni.encoder.whisper_init import load_whisper_encoder
from freeze_omni.train.ctc import CTCCollate, CTCStage

ctranslate2 = pytest.importorskip("ctranslate2")
QUESTION = Path(__file__).resolve().parents[2] / "assets" / "question.wav"


@pytest.fixture(scope="module")
def whisper():
    """(original full-attention encoder, decoder, tokenizer, the encoder's states of the question [1, T, D])."""
    dec, tok = load_whisper_decoder("tiny.en")
    enc = load_whisper_encoder("tiny.en", causal_convs=False, dropout=0.0).eval()
    feats = torch.from_numpy(extract(load_audio(str(QUESTION)), "whisper"))[None]
    with torch.no_grad():
        states, _ = enc(feats, torch.tensor([feats.shape[1]]))
    return enc, dec, tok, states


def test_greedy_transcript_equals_ctranslate2(whisper):
    """Same weights, same window (speech states, then the silent window's): CTranslate2 writes the same ids."""
    from freeze_omni.encoder.ct2 import whisper_model_dir

    enc, dec, tok, states = whisper
    ours = dec.greedy(states, tok.prompt, tok.eot, suppress=tok.special)
    window = torch.cat([states, dec.silence[states.shape[1]:][None]], dim=1)
    assert window.shape[1] == WINDOW_FRAMES
    model = ctranslate2.models.Whisper(str(whisper_model_dir("tiny.en")), device="cpu", compute_type="float32")
    ref = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(window.numpy())), [tok.prompt],
                         beam_size=1, max_length=64)[0].sequences_ids[0]
    assert ours == ref
    assert {"capital", "france"} <= set(tok.decode(ours).lower().strip("?").split())
    assert all(not p.requires_grad for p in dec.parameters())


def test_teacher_forced_loss_prefers_the_right_transcript(whisper):
    enc, dec, tok, states = whisper
    lens = torch.tensor([states.shape[1]])
    right = torch.tensor([tok.targets("What is the capital of France?")])
    wrong = torch.tensor([tok.targets("Where do penguins spend the winter?")])
    assert dec.loss(states, lens, right, 2) < 0.5 < dec.loss(states, lens, wrong, 2)


def test_recognizer_second_pass_streams_partials_then_rewrites(whisper):
    enc, dec, tok, _ = whisper
    streaming = load_whisper_encoder("tiny.en", causal_convs=True, dropout=0.0).eval()
    chars = CharTokenizer()
    rec = SpeechRecognizer(streaming, CTCHead(streaming.output_dim, chars.vocab_size), chars,
                           second_pass=SecondPass(dec, tok))
    wave = load_audio(str(QUESTION))
    st = rec.new_stream()
    for s in range(0, len(wave), 2560):
        rec.accept(st, wave[s:s + 2560])
    assert st.final_text is None
    n_chunks = sum(x.shape[1] for x in st.states)
    rec.accept(st, np.zeros(0, np.float32), final=True)
    assert sum(x.shape[1] for x in st.states) >= n_chunks and st.final_text is not None
    assert rec.text(st) == st.final_text
    # too long for Whisper's window: no second pass, the CTC transcript stands
    assert SecondPass(dec, tok)(torch.zeros(1, WINDOW_FRAMES + 1, 384)) is None


def _tiny_encoder() -> SpeechEncoder:
    return SpeechEncoder(EncoderConfig(family="whisper", input_dim=80, d_model=32, n_heads=2, d_ff=64, n_layers=1,
                                       chunk_size=4, left_chunks=2, causal_convs=True, max_positions=WINDOW_FRAMES))


class _Tok:
    prompt = [1, 2]

    def targets(self, text):
        return self.prompt + [3 + len(w) % 10 for w in text.split()] + [0]


def test_stage1_text_decoder_loss_trains_the_encoder_only():
    torch.manual_seed(0)
    enc = _tiny_encoder()
    dec = WhisperDecoder(vocab=16, d=32, heads=2, layers=1, max_tokens=32).requires_grad_(False)
    chars = CharTokenizer()
    stage = CTCStage(enc, CTCHead(32, chars.vocab_size), ChunkPolicy(chunk_size=4, left_chunks=2, mode="static"),
                     text_decoder=dec, decoder_weight=1.0)
    collate = CTCCollate(chars, "whisper", None, None, text_tokenizer=_Tok())
    rng = np.random.default_rng(0)
    batch = collate([{"wave": rng.standard_normal(16000).astype(np.float32) * 0.1, "text": "hello there"},
                     {"wave": rng.standard_normal(12000).astype(np.float32) * 0.1, "text": "a b c"}])
    assert batch["text_tokens"].shape == (2, 6) and int(batch["text_tokens"][0, -1]) == -100
    losses = stage(batch)
    assert "text_ce" in losses and torch.isfinite(losses["text_ce"])
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert not any(k.startswith("_text_decoder") or "token_embedding" in k for k in stage.state_dict())


def test_beam_search(whisper):
    enc, dec, tok, states = whisper
    greedy = dec.greedy(states, tok.prompt, tok.eot, suppress=tok.special)
    assert dec.beam_search(states, tok.prompt, tok.eot, beam=1, suppress=tok.special) == greedy
    ids = dec.beam_search(states, tok.prompt, tok.eot, beam=4, suppress=tok.special)
    assert tok.eot not in ids and {"capital", "france"} <= set(tok.decode(ids).lower().strip("?").split())


def test_loop_start():
    from freeze_omni.encoder.whisper_decoder import loop_start

    assert loop_start([5, 6, 7, 8]) is None
    assert loop_start([1, 9, 9, 9]) == 2  # keeps one "9"
    assert loop_start([1, 2, 3, 4, 3, 4, 3, 4]) == 4  # keeps one "3 4"


def test_decoding_first_then_training_still_has_gradients():
    """The silent window's keys/values are cached on first use; a decode under inference mode must not leave
    inference tensors that a later training step cannot save for backward."""
    dec = WhisperDecoder(vocab=16, d=32, heads=2, layers=1, max_tokens=32).requires_grad_(False)
    states = torch.randn(1, 10, 32)
    dec.greedy(states, [1, 2], eot=0, max_tokens=3)
    trainable = torch.randn(1, 10, 32, requires_grad=True)
    dec.loss(trainable, torch.tensor([10]), torch.tensor([[1, 2, 5, 6, 0]]), 2).backward()
    assert trainable.grad is not None and trainable.grad.abs().sum() > 0

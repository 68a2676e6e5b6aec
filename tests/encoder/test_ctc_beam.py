"""Word n-gram LM and CTC prefix beam search."""

import math

import pytest
import torch

from freeze_omni.encoder.ctc import BeamCTCState, BeamSettings, CharTokenizer, GreedyCTCState
from freeze_omni.encoder.lm import EOS, UNK, NgramLM

TOK = CharTokenizer()
SENTS = ["the cat sat on the mat", "the cat ate", "a dog sat", "the dog ate the cat food"]


def _frames(spec: list[dict[str, float]]) -> torch.Tensor:
    """Log-probs from per-frame {char: prob} (the rest of each frame's mass on blank, a sliver elsewhere)."""
    lp = torch.full((len(spec), TOK.vocab_size), 1e-6)
    for t, probs in enumerate(spec):
        for ch, p in probs.items():
            lp[t, TOK.chars.index(ch) + 1] = p
        lp[t, 0] = max(1.0 - sum(probs.values()), 1e-6)
    return (lp / lp.sum(-1, keepdim=True)).log()


@pytest.mark.parametrize("order", [1, 2, 3])
def test_lm_is_a_distribution_in_and_out_of_context(order):
    lm = NgramLM.train(SENTS, order)
    words = sorted(lm.vocab) + [EOS, UNK]
    for hist in [(), ("the",), ("the", "cat"), ("zebra", "unseen")]:
        assert sum(math.exp(lm.logprob(hist, w)) for w in words) == pytest.approx(1.0, abs=1e-9)
    if order > 1:  # context matters: "cat" follows "the" more than it follows "dog"
        assert lm.logprob(("the",), "cat") > lm.logprob(("dog",), "cat")
    assert lm.logprob(("the",), "zebra") == lm.logprob(("the",), UNK)


def test_lm_save_load_roundtrip(tmp_path):
    lm = NgramLM.train(SENTS, 3, discount=0.5)
    lm.save(tmp_path / "lm.gz")
    back = NgramLM.load(tmp_path / "lm.gz")
    assert (back.order, back.discount, back.vocab) == (3, 0.5, lm.vocab)
    assert back.sentence_logprob("the cat sat") == pytest.approx(lm.sentence_logprob("the cat sat"))
    assert lm.perplexity(["the cat ate"]) < lm.perplexity(["ate cat the"])
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(OSError):
        NgramLM.load(tmp_path / "bad.gz")


def test_beam_finds_the_label_sequence_greedy_misses():
    # Each frame: blank 0.4, a 0.35: the best path is all blanks, but "a" has probability 0.4025 > 0.16.
    lp = _frames([{"a": 0.35, "b": 0.25}, {"a": 0.35, "b": 0.25}])
    g = GreedyCTCState()
    g.update(lp)
    assert TOK.decode(g.finalize()) == ""
    b = BeamCTCState(TOK.chars, None, BeamSettings(beam=8))
    b.update(lp)
    assert TOK.decode(b.finalize()) == "a"


def test_lm_fixes_a_spelling_and_chunks_do_not_matter():
    # Acoustics slightly prefer "kat"; the LM knows "cat" after "the".
    spec = [{"t": 0.9}, {"h": 0.9}, {"e": 0.9}, {" ": 0.9}, {"k": 0.5, "c": 0.45}, {"a": 0.9}, {"t": 0.9}]
    lp = _frames(spec)
    plain = BeamCTCState(TOK.chars, None, BeamSettings(beam=8))
    plain.update(lp)
    assert TOK.decode(plain.finalize()) == "the kat"
    lm = NgramLM.train(SENTS, 3)
    cfg = BeamSettings(beam=8, alpha=0.6, beta=1.0, oov_penalty=2.0)
    whole = BeamCTCState(TOK.chars, lm, cfg)
    whole.update(lp)
    assert TOK.decode(whole.finalize()) == "the cat"
    chunked = BeamCTCState(TOK.chars, lm, cfg)
    for s in range(0, len(spec), 3):
        chunked.update(lp[s:s + 3])
    assert chunked.finalize() == whole.ids

"""Phoneme input of the speech decoder: espeak-ng IPA through ctypes, symbol ids, the generator's text level."""

import threading

import pytest
import torch

from freeze_omni.decoder.generator import GenerationConfig, SpeechGenerator
from freeze_omni.decoder.phonemes import DEFAULT_SYMBOLS, N_SPECIAL, PAD, UNK, Phonemizer


def test_ipa_with_stress_clauses_and_final_mark():
    p = Phonemizer()
    assert p.phonemize("The vet, gelded.") == "ðə vˈɛt, ɡˈɛldᵻd."
    assert p.phonemize("Is it raining?").endswith("ɪŋ?")
    assert p.phonemize("three cats") == p.phonemize("3 cats")  # numbers are read out
    assert p.phonemize("  ") == "" and p.ids("...") == []
    ids = p.ids("Hello there!")
    assert ids[-1] == p.index["!"] and all(N_SPECIAL <= i < p.n_symbols for i in ids)
    assert PAD not in ids and UNK not in ids


def test_symbols_outside_the_inventory_are_unk():
    p = Phonemizer(symbols=" .aɪ")  # no consonants
    ids = p.ids("Hi")
    assert UNK in ids and ids[-1] == p.index["."]
    with pytest.raises(ValueError, match="distinct"):
        Phonemizer(symbols="aa")
    assert len(set(DEFAULT_SYMBOLS)) == len(DEFAULT_SYMBOLS)


def test_concurrent_calls_equal_serial_ones():
    p = Phonemizer()
    texts = [f"Sentence number {i} is about {w}." for i, w in enumerate(["cats", "ships", "rain", "gold"] * 5)]
    want = [p.ids(t) for t in texts]
    got: dict[int, list[int]] = {}

    def work(k: int) -> None:
        for i in range(k, len(texts), 4):
            got[i] = p.ids(texts[i])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(texts))] == want


def test_generator_reads_phonemes_without_an_llm(make_decoder):
    dec = make_decoder(text_input="phonemes")
    gen = SpeechGenerator(dec, cfg=GenerationConfig(top_k=1, max_tokens=12))
    x = gen.text_inputs("Good morning.")
    assert x.dtype == torch.long and x.shape == (1, len(Phonemizer().ids("Good morning.")))
    toks = gen.generate("Good morning.")
    assert 0 < len(toks) <= 12 and all(t < dec.cfg.codebook_size for t in toks)
    with pytest.raises(ValueError, match="phoneme ids"):
        dec.encode_text(torch.randn(1, 3, dec.cfg.llm_hidden), torch.tensor([3]))

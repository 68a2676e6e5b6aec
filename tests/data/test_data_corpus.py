"""Text corpus: determinism, deduplication, lengths, kinds, held-out split."""

import pytest

from freeze_omni.data.corpus import KINDS, build_corpus, wordnet_synsets, write_corpus
from freeze_omni.data.text import normalize_text

needs_wordnet = pytest.mark.skipif(not wordnet_synsets(), reason="WordNet (Debian wordnet-base) not installed")


@needs_wordnet
def test_deterministic_distinct_and_bounded():
    a = build_corpus(600, seed=0)
    assert a == build_corpus(600, seed=0)
    assert a != build_corpus(600, seed=1)
    assert len(a) == 600
    keys = [normalize_text(s) for s in a]
    assert len(set(keys)) == len(a) and all(keys)
    assert all(3 <= len(s.split()) <= 30 for s in a)


@needs_wordnet
def test_kinds_are_independent_and_varied():
    only_numbers = build_corpus(100, seed=3, kinds=["numbers"])
    assert all(s[0].isupper() for s in only_numbers)
    assert any(any(c.isdigit() for c in s) for s in only_numbers)  # digits and words both
    assert any("plus" in s or "minus" in s or "times" in s for s in only_numbers)
    countries = build_corpus(100, seed=0, kinds=["countries"])
    assert any("capital" in s for s in countries)
    wn = build_corpus(200, seed=0, kinds=["wordnet"])
    assert any(s.startswith("What is a") for s in wn) and any(" is a" in s and s.endswith(".") for s in wn)
    mixed = build_corpus(len(KINDS) * 40, seed=0)
    assert set(build_corpus(40, seed=0, kinds=["countries"])) <= set(mixed)  # a kind's draws ignore the others


def test_exhausted_kind_hands_quota_over():
    lines = build_corpus(400, seed=0, kinds=["chitchat", "numbers"])
    assert len(lines) == 400
    with pytest.raises(ValueError):
        build_corpus(10, kinds=["nope"])


def test_heldout_split(tmp_path):
    lines = build_corpus(200, seed=0, kinds=["numbers", "chitchat", "countries"])
    res = write_corpus(tmp_path / "texts.txt", lines, heldout_frac=0.1)
    train = (tmp_path / "texts.txt").read_text().splitlines()
    held = (tmp_path / "texts.heldout.txt").read_text().splitlines()
    assert (len(train), len(held)) == (180, 20) == (res["lines"], res["heldout_lines"])
    assert not {normalize_text(s) for s in train} & {normalize_text(s) for s in held}
    assert sorted(train + held) == sorted(lines)
    res = write_corpus(tmp_path / "all.txt", lines)
    assert res["heldout"] == "" and not (tmp_path / "all.heldout.txt").exists()

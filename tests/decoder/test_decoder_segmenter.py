"""Text segmentation of a streaming answer (facts §1.9) and normalisation before TTS."""

import pytest
import torch

from freeze_omni.decoder.segmenter import SegmenterConfig, TextSegmenter, normalize_tts, segment_answer


def chars(ids):
    return "".join(chr(i) for i in ids)


def cut(text, **kw):
    """Segment ``text`` fed one character per token."""
    return [s.text for s in segment_answer([ord(c) for c in text], chars, cfg=SegmenterConfig(**kw))]


def test_first_segment_may_end_at_a_comma_later_ones_at_sentence_ends():
    assert cut("Sure, I can help, with that. Yes, it works, fine.") == \
        ["Sure,", " I can help, with that.", " Yes, it works, fine."]


def test_at_least_four_tokens_pending():
    assert cut("Hi. Yes! Okay then.") == ["Hi. Yes!", " Okay then."]  # "Hi." is 3 tokens


def test_commas_split_once_twenty_tokens_are_pending():
    text = "One. A short one, then a much longer clause, and more."
    assert cut(text) == ["One.", " A short one, then a much longer clause,", " and more."]
    assert cut(text, comma_after=1000) == ["One.", " A short one, then a much longer clause, and more."]


def test_long_first_sentence_is_cut_at_a_word_boundary_with_first_max_tokens():
    text = "The capital of France is Paris. It is a big city, on a river."
    assert cut(text) == ["The capital of France is Paris.", " It is a big city, on a river."]  # upstream: off
    # the first segment ends before the first word that starts with 12+ characters pending; later ones as before
    assert cut(text, first_max_tokens=12) == ["The capital of", " France is Paris.", " It is a big city, on a river."]
    assert cut("Yes, of course it is.", first_max_tokens=2) == ["Yes,", " of course it is."]  # comma first
    ids = [ord(c) for c in text]
    segs = segment_answer(ids, chars, hidden=torch.arange(len(ids)).float()[:, None],
                          cfg=SegmenterConfig(first_max_tokens=12))
    assert [i for s in segs for i in s.token_ids] == ids  # every token (and hidden state) lands exactly once
    assert torch.equal(torch.cat([s.hidden[:, 0] for s in segs]), torch.arange(len(ids)).float())
    assert [s.index for s in segs] == [0, 1, 2]


def test_a_period_after_a_digit_does_not_split_and_newlines_do():
    assert cut("Steps:\n1. Boil water\n2. Add tea.") == ["Steps:", "\n1. Boil water\n", "2. Add tea."]
    assert cut("It costs 3.5 dollars today.") == ["It costs 3.5 dollars today."]


def test_leftover_is_flushed_and_whitespace_only_is_not():
    assert cut("Hello there") == ["Hello there"]
    seg = TextSegmenter(chars)
    assert seg.flush() is None
    for c in "Good.   ":
        seg.push(ord(c))
    assert seg.flush() is None


def test_hidden_states_and_ids_follow_their_tokens():
    text = "Sure, here it is. Bye"
    ids = [ord(c) for c in text]
    hidden = torch.arange(len(ids), dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # [N, 3], row i = i
    segs = segment_answer(ids, chars, hidden)
    assert [s.index for s in segs] == [0, 1, 2]
    assert sum((s.token_ids for s in segs), []) == ids
    assert torch.equal(torch.cat([s.hidden for s in segs]), hidden)
    assert segs[1].hidden[0, 0] == len("Sure,")
    assert segs[0].tts_text == "Sure." and segs[2].tts_text == "Bye."


def test_incomplete_multibyte_characters_wait_for_the_rest():
    from freeze_omni.llm.testing import tiny_tokenizer

    tok = tiny_tokenizer()  # byte-level: "é" is two tokens, the first decodes to U+FFFD
    decode = lambda ids: tok.decode(ids)  # noqa: E731
    ids = tok("Café crème, très bon. Oui", add_special_tokens=False)["input_ids"]
    segs = segment_answer(ids, decode)
    assert [s.text for s in segs] == ["Café crème,", " très bon.", " Oui"]
    assert all("\ufffd" not in s.text for s in segs)
    assert sum((s.token_ids for s in segs), []) == ids


@pytest.mark.parametrize("raw, clean", [
    ("**Paris** is the _capital_.", "Paris is the capital."),
    ("Use `pip` (the installer) to add it", "Use pip, the installer, to add it."),
    ("Yes (really).", "Yes, really."),
    ("First line\nsecond line,", "First line second line."),
    ("Ready:", "Ready."),
    ("Is it? ", "Is it?"),
    ('He said "hi."', 'He said "hi."'),
    ("It costs 3,000 dollars", "It costs 3,000 dollars."),
    ("~~~", ""),
])
def test_normalize_tts_english(raw, clean):
    assert normalize_tts(raw) == clean


def test_normalize_tts_upstream_chinese_rules():
    assert normalize_tts("1. 你好（世界）、再见，", lang="zh") == "1：你好，世界，，再见。"
    assert normalize_tts("好的", lang="zh") == "好的。"
    with pytest.raises(ValueError):
        normalize_tts("x", lang="fr")

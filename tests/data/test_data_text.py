"""normalize_text: numbers, ordinals, years, symbols, the alphabet it keeps."""

import pytest

from freeze_omni.data.text import ALPHABET, normalize_text


@pytest.mark.parametrize("raw, expected", [
    ("The 3rd of May", "the third of may"),
    ("In 1990 we met.", "in nineteen ninety we met"),
    ("It is 2.5 km", "it is two point five km"),
    ("50% & more", "fifty percent and more"),
    ("7 + 5 = 12", "seven plus five equals twelve"),
    ("What is 12 x 3?", "what is twelve times three"),
    ("1,000,000 people", "one million people"),
    ("the 1990s", "the nineteen nineties"),
    ("-3 degrees", "minus three degrees"),
    ("It was 20°C", "it was twenty degrees celsius"),
    ("I paid $5.50", "i paid five dollars fifty"),
    ("21st century", "twenty first century"),
    ("Curaçao’s capital", "curacao's capital"),
    ('"Hello,"   she said...', "hello she said"),
    ("don't 'quote' me", "don't quote me"),
    ("well-known A.I.", "well known a i"),
    ("", ""),
    ("?!", ""),
])
def test_normalize_cases(raw, expected):
    assert normalize_text(raw) == expected


def test_output_alphabet_and_spacing():
    s = normalize_text("Ünïcödé — tabs\tand\nnewlines; 3.14159 × 2 ÷ 7 @ #1 £3 ¥20!")
    assert set(s) <= set(ALPHABET)
    assert "  " not in s and s == s.strip()
    assert normalize_text(s) == s  # idempotent on normalized text

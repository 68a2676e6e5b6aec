"""Text normalization for character CTC targets.

:func:`normalize_text` maps any English string to lowercase letters, apostrophes and single spaces, spelling out
numbers the way a speaker would read them (num2words): ``"3rd"`` → ``"third"``, ``"1990"`` → ``"nineteen
ninety"``, ``"2.5"`` → ``"two point five"``, ``"50%"`` → ``"fifty percent"``, ``"$5"`` → ``"five dollars"``,
``"7 + 5 = 12"`` → ``"seven plus five equals twelve"``. It is a pure function of its input (deterministic).
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

#: the characters a normalized string can hold (besides nothing else): the CTC vocabulary.
ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"

_CURRENCY = {"$": "dollars", "€": "euros", "£": "pounds", "¥": "yen"}
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "÷": " divided by ",
            "°": " degrees ", "#": " number "}
_PUNCT_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u2013": "-", "\u2014": " ",
                            "\u2212": "-", "\u00d7": "×"})

_RE_CURRENCY = re.compile(r"([$€£¥])\s?(\d[\d,]*(?:\.\d+)?)")
_RE_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_RE_DEGREES = re.compile(r"°\s?([cf])\b")
_RE_TIMES = re.compile(r"(?<=\d)\s*[x×*]\s*(?=\d)")
_RE_OVER = re.compile(r"(?<=\d)\s*/\s*(?=\d)")
_RE_MINUS = re.compile(r"(?<=\d)\s+-\s+(?=\d)")
_RE_RANGE = re.compile(r"(?<=\d)-(?=\d)")
_RE_NEG = re.compile(r"(?<![\w.])-(?=\d)")
_RE_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_RE_DECADE = re.compile(r"\b(1[1-9]\d0|20\d0)'?s\b")
_RE_DECIMAL = re.compile(r"(\d*)\.(\d+)")
_RE_YEAR = re.compile(r"(?<![\d.])(1[1-9]\d\d|20\d\d)(?![\d.])")
_RE_INT = re.compile(r"\d+")
_RE_APOS = re.compile(r"(?<![a-z])'|'(?![a-z])")
_RE_DROP = re.compile(r"[^a-z' ]+")
_RE_SPACE = re.compile(r"\s+")


def _cardinal(digits: str) -> str:
    """Words for a digit string; very long ones (ids, phone numbers) are read digit by digit."""
    if len(digits) > 15:
        return " ".join(num2words(int(d)) for d in digits)
    return num2words(int(digits))


def _currency(m: re.Match) -> str:
    """``$5`` → ``5 dollars``; ``$5.50`` → ``5 dollars 50`` (read "five dollars fifty")."""
    whole, _, cents = m.group(2).partition(".")
    unit = _CURRENCY[m.group(1)]
    return f" {whole} {unit} {cents} " if len(cents) == 2 else f" {m.group(2)} {unit} "


def _decimal(m: re.Match) -> str:
    whole = _cardinal(m.group(1)) if m.group(1) else ""
    return f" {whole} point {' '.join(num2words(int(d)) for d in m.group(2))} "


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _fold_unicode(s: str) -> str:
    """Strip accents (``"Curaçao"`` → ``"Curacao"``) and unify quotes and dashes."""
    s = unicodedata.normalize("NFKD", s.translate(_PUNCT_MAP))
    return "".join(c for c in s if not unicodedata.combining(c))


def normalize_text(s: str) -> str:
    """Normalize ``s`` to the CTC alphabet :data:`ALPHABET` (lowercase a-z, ``'`` and single spaces).

    Args:
        s: any text.

    Returns:
        The normalized text, stripped; ``""`` if nothing speakable is left.
    """
    s = _fold_unicode(s).lower()
    s = _RE_CURRENCY.sub(_currency, s)
    s = _RE_THOUSANDS.sub("", s)
    s = _RE_DEGREES.sub(lambda m: " degrees " + ("celsius" if m.group(1) == "c" else "fahrenheit"), s)
    s = _RE_TIMES.sub(" times ", s)
    s = _RE_OVER.sub(" over ", s)
    s = _RE_MINUS.sub(" minus ", s)
    s = _RE_RANGE.sub(" to ", s)
    s = _RE_NEG.sub(" minus ", s)
    s = _RE_ORDINAL.sub(lambda m: f" {num2words(int(m.group(1)), to='ordinal')} ", s)
    s = _RE_DECADE.sub(lambda m: f" {_plural(num2words(int(m.group(1)), to='year'))} ", s)
    s = _RE_DECIMAL.sub(_decimal, s)
    s = _RE_YEAR.sub(lambda m: f" {num2words(int(m.group(1)), to='year')} ", s)
    s = _RE_INT.sub(lambda m: f" {_cardinal(m.group(0))} ", s)
    for sym, word in _SYMBOLS.items():
        s = s.replace(sym, word)
    s = _RE_APOS.sub(" ", s)
    s = _RE_DROP.sub(" ", s)
    return _RE_SPACE.sub(" ", s).strip()

"""Known answers of templated questions, for accuracy in `freeze-omni eval qa`.

Only questions whose answer is a fact the templates know are covered: capitals (both directions, from
``countryinfo``), arithmetic (plus, minus, times, divided by, squared, square root), the number after/before
``N``, half of ``N``, and the ``k``-th month. Numbers may be written in digits or in words in the question; the
expected answers list both spellings. Everything else gets ``None`` (no known answer).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Optional

from num2words import num2words

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}
_MONTHS = ("January February March April May June July August September October November December").split()
_NUM = r"([0-9][0-9,]*|[a-z][a-z -]*?)"


def parse_number(text: str) -> Optional[int]:
    """``"42"``, ``"1,250"``, ``"forty-two"``, ``"three hundred and five"`` -> int; None if not a number."""
    t = text.strip().lower().replace(",", "")
    if t.isdigit():
        return int(t)
    total, current = 0, 0
    words = [w for w in re.split(r"[\s-]+", t) if w and w != "and"]
    if not words:
        return None
    for w in words:
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w == "thousand":
            total, current = total + max(current, 1) * 1000, 0
        else:
            return None
    return total + current


def spellings(n: int) -> list[str]:
    """Digits and words: ``42`` -> ``["42", "forty-two", "forty two"]``."""
    words = num2words(n)
    return list(dict.fromkeys([str(n), words, words.replace("-", " ")]))


@functools.lru_cache(maxsize=1)
def _capitals() -> tuple[dict[str, str], dict[str, str]]:
    from countryinfo import CountryInfo

    by_country, by_capital = {}, {}
    for v in CountryInfo.all().values():
        name, cap = v.get("name"), v.get("capital")
        if isinstance(name, str) and isinstance(cap, str) and name and cap:
            by_country[name.lower()] = cap
            by_capital[cap.lower()] = name
    return by_country, by_capital


def _arithmetic(q: str) -> Optional[int]:
    m = re.fullmatch(rf"(?:what is|how much is|can you tell me what) {_NUM} (plus|minus|times|divided by) {_NUM}"
                     r"(?: is)?", q)
    if m:
        a, op, b = parse_number(m.group(1)), m.group(2), parse_number(m.group(3))
        if a is None or b is None:
            return None
        if op == "divided by":
            return a // b if b and a % b == 0 else None
        return {"plus": a + b, "minus": a - b, "times": a * b}[op]
    m = re.fullmatch(rf"what is {_NUM} squared", q)
    if m and (a := parse_number(m.group(1))) is not None:
        return a * a
    m = re.fullmatch(rf"what is the square root of {_NUM}", q)
    if m and (a := parse_number(m.group(1))) is not None and math.isqrt(a) ** 2 == a:
        return math.isqrt(a)
    m = re.fullmatch(rf"what (?:number )?comes (after|before) {_NUM}", q)
    if m and (a := parse_number(m.group(2))) is not None:
        return a + 1 if m.group(1) == "after" else a - 1
    m = re.fullmatch(rf"what is half of {_NUM}", q)
    if m and (a := parse_number(m.group(1))) is not None and a % 2 == 0:
        return a // 2
    return None


def known_answers(question: str) -> Optional[list[str]]:
    """Acceptable answer strings (an answer is right if it contains one), or None when not known."""
    q = question.strip().rstrip("?.!").strip().lower()
    by_country, by_capital = _capitals()
    m = re.fullmatch(r"(?:what is the capital of|what's the capital city of|which city is the capital of) (.+)", q)
    if m and m.group(1) in by_country:
        return [by_country[m.group(1)]]
    m = re.fullmatch(r"which country has (.+) as its capital", q) or re.fullmatch(r"(.+) is the capital of which "
                                                                                   r"country", q)
    if m and m.group(1) in by_capital:
        return [by_capital[m.group(1)]]
    m = re.fullmatch(r"which month is the (\d+)(?:st|nd|rd|th) month of the year", q)
    if m and 1 <= int(m.group(1)) <= 12:
        return [_MONTHS[int(m.group(1)) - 1]]
    n = _arithmetic(q)
    return spellings(n) if n is not None else None


def contains_answer(answer: str, expected: list[str]) -> bool:
    """Whether ``answer`` contains one of ``expected`` as whole words (``"4"`` is not found in ``"42"``)."""
    a = answer.lower()
    return any(re.search(rf"(?<![\w]){re.escape(e.lower())}(?![\w])", a) for e in expected)

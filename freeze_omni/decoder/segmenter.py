"""Streaming text segmentation of the LLM's answer for the speech decoder, and text normalisation before TTS.

Rules (upstream server, ``reference/freeze_omni_facts.md`` §1.9, parity item 12):

* After each generated token, decode all the answer's tokens and diff with the previous text: the *delta*. A delta
  holding U+FFFD (an incomplete multi-byte character) is not taken yet: it comes with a later token's delta. The
  token and its hidden state always join the pending segment (so every answer token's hidden state lands in
  exactly one segment, as in training; upstream's handling of that case is not documented).
* A segment is flushed when the delta ends in a boundary character and at least ``min_tokens`` (4) tokens are
  pending. Boundaries: ``, ， 。 ： ？ ！ . : ? ! \\n`` for the first segment of an answer or once ``comma_after``
  (20) tokens are pending; otherwise only ``。 ： ？ ！ . ? ! \\n``. A ``.`` right after a digit (list numbering,
  "1.") does not split. What is left is flushed at the end of the answer.
* Ours, not upstream (``first_max_tokens``, 0 = off): the first segment also ends at a word boundary once that
  many tokens are pending, so the first audio does not wait for a long first sentence. The token that starts the
  next word begins the second segment.

>>> seg = TextSegmenter(decode=lambda ids: "".join(chr(i) for i in ids))
>>> [s.text for t in "Well, yes. It is 3.5 m, or so. Bye" for s in seg.push(ord(t))] + [seg.flush().text]
['Well,', ' yes.', ' It is 3.5 m, or so.', ' Bye']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch

BOUNDARY_ALL = frozenset(",，。：？！.:?!\n")
"""Boundaries for the first segment of an answer, or when many tokens are pending."""
BOUNDARY_FINAL = frozenset("。：？！.?!\n")
"""Sentence-final boundaries (upstream's list, fullwidth colon included)."""
REPLACEMENT_CHAR = "\ufffd"


@dataclass
class Segment:
    """One piece of the answer for the speech decoder.

    Attributes:
        text: the raw answer text of the segment (as the LLM wrote it; see :attr:`tts_text`).
        hidden: ``[N, H]`` the LLM final hidden states that produced its ``N`` tokens, or None.
        token_ids: its ``N`` answer token ids.
        index: 0 for the first segment of an answer.
    """

    text: str
    hidden: torch.Tensor | None
    token_ids: list[int]
    index: int = 0

    @property
    def tts_text(self) -> str:
        """:attr:`text` normalised for the speech decoder (English rules)."""
        return normalize_tts(self.text)


@dataclass
class SegmenterConfig:
    min_tokens: int = 4  # tokens pending before any flush
    comma_after: int = 20  # pending tokens from which commas and colons split later segments too
    first_allows_comma: bool = True  # the first segment may end at a comma (short first segment, low latency)
    first_max_tokens: int = 0  # > 0: the first segment also ends before a new word once this many are pending


@dataclass
class _Pending:
    text: str = ""
    ids: list[int] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)


class TextSegmenter:
    """Cuts one answer into :class:`Segment` s while it is generated (rules in the module docstring).

    Args:
        decode: token ids -> text (e.g. ``FrozenLLM.decode``), applied to the whole answer so far.
        cfg: thresholds.
    """

    def __init__(self, decode: Callable[[list[int]], str], cfg: SegmenterConfig | None = None) -> None:
        self.decode, self.cfg = decode, cfg or SegmenterConfig()
        self.reset()

    def reset(self) -> None:
        """Start a new answer."""
        self._ids: list[int] = []
        self._text = ""  # decoded text of the answer, up to the last complete delta
        self._pending = _Pending()
        self._index = 0

    @property
    def text(self) -> str:
        """The answer's text so far, up to the last complete delta (what a client may be shown)."""
        return self._text

    def push(self, token_id: int, hidden: torch.Tensor | None = None) -> list[Segment]:
        """Add one answer token (and the ``[H]`` hidden state that produced it); returns the segment completed by
        it (a list of 0 or 1)."""
        self._ids.append(int(token_id))
        text = self.decode(self._ids)
        delta = text[len(self._text):]
        out = []
        if self._word_cut(delta):  # the first segment ends before this token's word
            out.append(self._cut())
        p = self._pending
        p.ids.append(int(token_id))
        if hidden is not None:
            p.hidden.append(hidden.detach().reshape(-1))
        if REPLACEMENT_CHAR in delta:
            return out
        self._text = text
        p.text += delta
        return out + [self._cut()] if self._boundary(delta) else out

    def flush(self) -> Segment | None:
        """End of the answer: the rest as a last segment (None when nothing, or only whitespace, is pending)."""
        p = self._pending
        if not p.ids:
            return None
        p.text += self.decode(self._ids)[len(self._text):]  # an incomplete character at the very end
        if not p.text.strip():
            self._pending = _Pending()
            return None
        return self._cut()

    def _word_cut(self, delta: str) -> bool:
        """A long first segment ends before a token that starts a new word (``first_max_tokens``)."""
        n, p = self.cfg.first_max_tokens, self._pending
        return (n > 0 and self._index == 0 and len(p.ids) >= n and REPLACEMENT_CHAR not in delta
                and delta[:1].isspace() and bool(p.text.strip()))

    def _boundary(self, delta: str) -> bool:
        cfg, n = self.cfg, len(self._pending.ids)
        d = delta.rstrip(" ")
        if n < cfg.min_tokens or not d:
            return False
        allowed = BOUNDARY_ALL if (self._index == 0 and cfg.first_allows_comma) or n >= cfg.comma_after \
            else BOUNDARY_FINAL
        if d[-1] not in allowed:
            return False
        full = self._text.rstrip(" ")
        return not (d[-1] == "." and len(full) >= 2 and full[-2].isdigit())  # "1." list numbering

    def _cut(self) -> Segment:
        p = self._pending
        hidden = torch.stack(p.hidden) if p.hidden and len(p.hidden) == len(p.ids) else None
        seg = Segment(text=p.text, hidden=hidden, token_ids=list(p.ids), index=self._index)
        self._index += 1
        self._pending = _Pending()
        return seg


def segment_answer(ids: list[int], decode: Callable[[list[int]], str], hidden: torch.Tensor | None = None,
                   cfg: SegmenterConfig | None = None) -> list[Segment]:
    """Segment a whole answer at once (``hidden [N, H]`` or None), exactly as token-by-token streaming would."""
    seg = TextSegmenter(decode, cfg)
    out: list[Segment] = []
    for i, t in enumerate(ids):
        out += seg.push(t, None if hidden is None else hidden[i])
    last = seg.flush()
    return out + ([last] if last is not None else [])


# ------------------------------------------------------------------------------------------- normalisation
_DROP_EN = str.maketrans({c: None for c in "*_`~"})
_SPACE = str.maketrans({c: " " for c in "\n\r\t"})
_BRACKETS = re.compile(r"\s*[()\[\]（）]\s*")


def normalize_tts(text: str, lang: str = "en") -> str:
    """Clean one segment's text for the speech decoder (training and inference apply the same function).

    ``"en"``: drop ``* _ ` ~``; newlines/tabs to spaces; ``、`` and brackets to commas; collapse spaces and
    repeated commas; end with ``.`` ``?`` or ``!`` (a trailing ``, ; :`` becomes ``.``, otherwise ``.`` is added).
    ``"zh"``: upstream's rules (facts §1.9): also drop newlines, remove spaces after ``.``/``:``, ``"1. X"`` ->
    ``"1：X"``, end with ``。`` unless the text ends in ``。？！.?!``.
    ``"upstream"``: the released server's post-processing exactly, for any language (parity, used by converted
    upstream bundles); see :func:`_normalize_upstream`.

    >>> normalize_tts("**Paris** (the capital) is big,")
    'Paris, the capital, is big.'
    >>> normalize_tts("Hi there")
    'Hi there.'
    >>> normalize_tts("Why?")
    'Why?'
    """
    if lang == "upstream":
        return _normalize_upstream(text)
    if lang == "zh":
        t = text.replace("、", "，")
        t = re.sub(r"[()（）]", "，", t)
        t = re.sub(r"[\n\r\t*_`~]", "", t)
        t = re.sub(r"(\d+)\.\s*", r"\1：", t)
        t = re.sub(r"([.:])\s+", r"\1", t).strip()
        if not t:
            return ""
        if t[-1] in ",，;；:：":
            return t[:-1] + "。"
        return t if t[-1] in "。？！.?!" else t + "。"
    if lang != "en":
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
    t = text.translate(_DROP_EN).translate(_SPACE).replace("、", ",")
    t = _BRACKETS.sub(", ", t)
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"\s*,(\s*,)*", ",", t)  # " , ," -> ","
    t = re.sub(r",\s*([.?!;:])", r"\1", t)  # ", ." -> "."
    t = t.strip(" ,")
    if not t:
        return ""
    end = t.rstrip("\"'”’")
    if end and end[-1] in ";:":
        return end[:-1] + "." + t[len(end):]
    if end and end[-1] in ".?!":
        return t
    return t + "."


_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _normalize_upstream(text: str) -> str:
    """Upstream's TTS text post-processing (parity; ``reference/freeze_omni_facts.md`` §1.9), in order:

    1. ``、`` -> ``，``; ``(`` ``)`` -> ``,``; ``（`` ``）`` -> ``，``;
    2. drop ``\\n \\r \\t`` and ``* _ ` ~``;
    3. remove the whitespace after every ``.`` or ``:`` (so ``"Hi. Yes"`` becomes ``"Hi.Yes"``, as upstream);
    4. list numbers: in text with a CJK character, ``"1. X"`` -> ``"1：X"`` before a CJK or Latin letter;
       otherwise ``"1. X"`` -> ``"1:X"`` before any word character (so ``"3.5"`` becomes ``"3:5"``, as upstream);
    5. end with ``。？！.?!``: a trailing ``,，;；:：、`` becomes ``。``, otherwise ``。`` is appended.

    >>> _normalize_upstream("Steps: 1. Boil (water)")
    'Steps:1:Boil ,water。'
    """
    t = text.replace("、", "，").replace("(", ",").replace(")", ",").replace("（", "，").replace("）", "，")
    t = re.sub(r"[\n\r\t*_`~]", "", t)
    t = re.sub(r"([.:])\s+", r"\1", t)
    if _CJK.search(t):
        t = re.sub(r"(\d+)\.\s*([\u4e00-\u9fa5A-Za-z])", r"\1：\2", t)
    else:
        t = re.sub(r"(\d+)\.\s*(\w)", r"\1:\2", t)
    if t and t[-1] not in "。？！.?!":
        t = t[:-1] + "。" if t[-1] in ",，;；:：、" else t + "。"
    return t

"""The LLM context of one session: its KV cache, the inputs that built it, and eviction of old turns.

The cache holds, in order::

    [system] ([user turn] [assistant prefix + answer ids])* [open user turn] [answer in progress]

:class:`Context` keeps every committed input as a :class:`Piece` (token ids for text, embeddings for audio, a
marker for the prompt embeddings), so that it can

* roll an open user turn back (crop), or re-feed it after the answer under it was cut (barge-in);
* rebuild the cache from the system prompt and the most recent exchanges once it passes ``max_positions``, so a
  session of any length runs in bounded memory (the dropped turns are forgotten, as with any chat window).

The answer itself is fed by the token generator straight into :attr:`Context.state`; :meth:`commit_answer` and
:meth:`truncate_answer` only do the bookkeeping (and the crop) afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from freeze_omni.llm.backbone import LLMState


@dataclass
class Piece:
    """One span of LLM inputs: token ``ids``, ``embeds [T, H]``, or the bridge's ``prompt`` embeddings."""

    ids: Optional[list[int]] = None
    embeds: Optional[torch.Tensor] = None
    prompt: bool = False
    length: int = 0

    @classmethod
    def of_ids(cls, ids: list[int]) -> "Piece":
        return cls(ids=list(ids), length=len(ids))

    @classmethod
    def of_embeds(cls, embeds: torch.Tensor) -> "Piece":
        return cls(embeds=embeds, length=int(embeds.shape[0]))


@dataclass
class Exchange:
    """A committed user turn and the answer to it (empty while it runs, or when it was cut before any speech)."""

    user: list[Piece]
    answer: list[Piece] = field(default_factory=list)

    @property
    def length(self) -> int:
        return sum(p.length for p in self.user) + sum(p.length for p in self.answer)


class Context:
    """One session's LLM state and history (see the module docstring).

    Args:
        llm: the :class:`~freeze_omni.llm.backbone.FrozenLLM`.
        system_ids: ids of ``system_prefix + system prompt``.
        prompt_embeds: ``() -> [P, H]`` the bridge's prompt embeddings (read at rebuild time).
        max_positions: rebuild when the cache is longer than this at a turn boundary.
        keep_positions: a rebuild keeps the most recent exchanges that fit in this many positions (system
            included); default half of ``max_positions``.
    """

    def __init__(self, llm, system_ids: list[int], prompt_embeds: Callable[[], torch.Tensor],
                 max_positions: int = 2048, keep_positions: Optional[int] = None) -> None:
        self.llm, self.prompt_embeds = llm, prompt_embeds
        self.system = Piece.of_ids(system_ids)
        self.max_positions = max_positions
        self.keep_positions = keep_positions if keep_positions is not None else max_positions // 2
        if self.system.length >= self.keep_positions:
            raise ValueError(f"system prompt of {self.system.length} positions does not fit in "
                             f"keep_positions={self.keep_positions}")
        self.exchanges: list[Exchange] = []
        self.open: list[Piece] = []  # the open user turn
        self.lead_left: list[Piece] = []  # the part of the open turn's lead not booked yet (see open_lead)
        self.turn_start = 0  # cache length where the open turn begins
        self.answer_start: Optional[int] = None  # cache length where the running answer begins
        self.evictions = 0
        self.state = self._prefill([self.system])

    # ------------------------------------------------------------------ feeding
    def embed(self, piece: Piece) -> torch.Tensor:
        """``[T, H]`` input embeddings of a piece."""
        if piece.prompt:
            return self.prompt_embeds()
        if piece.ids is not None:
            return self.llm.embed(torch.tensor([piece.ids], device=self.llm.device))[0]
        return piece.embeds

    def feed(self, pieces: list[Piece]) -> torch.Tensor:
        """Append pieces to the open user turn and to the cache in one forward; returns the last hidden ``[H]``."""
        x = self.open_inputs(pieces)
        hidden, _, _ = self.llm.forward_embeds(x[None], self.state, logits_for="none")
        return hidden[0, -1]

    def open_inputs(self, pieces: list[Piece]) -> torch.Tensor:
        """Book pieces into the open user turn and return their input embeddings ``[T, H]``; the caller feeds
        them into :attr:`state` next (:meth:`feed` alone, or a server with other sessions' inputs in one pass)."""
        if not self.open:
            self.turn_start = self.state.length
        self.open.extend(pieces)
        return torch.cat([self.embed(p) for p in pieces])

    def open_lead(self, lead: list[Piece], step: int) -> Optional[torch.Tensor]:
        """Book the next part (at most ``step`` positions) of a user turn's ``lead`` into the open turn and return
        its inputs, so a server feeds a lead over several short passes; None once it is all booked. (A turn that
        starts meanwhile takes the rest with its first chunk: :meth:`rest_of_lead`.)"""
        if not self.open and not self.lead_left:
            parts: list[Piece] = []
            for p in lead:
                if p.ids is not None and p.length <= step:
                    parts.append(p)
                else:
                    x = self.embed(p)
                    parts += [Piece.of_embeds(x[i:i + step]) for i in range(0, p.length, step)]
            self.lead_left = parts
        if not self.lead_left:
            return None
        return self.open_inputs([self.lead_left.pop(0)])

    def rest_of_lead(self) -> list[Piece]:
        """The part of the lead :meth:`open_lead` has not booked yet (now the caller's to feed)."""
        rest, self.lead_left = self.lead_left, []
        return rest

    @property
    def turn_length(self) -> int:
        return sum(p.length for p in self.open)

    # ------------------------------------------------------------------ user turns
    def rollback_turn(self) -> None:
        """Forget the open user turn: the cache is as if it had never been fed."""
        if self.open:
            self.state.crop(self.turn_start)
        self.open, self.lead_left = [], []

    def commit_turn(self) -> None:
        """The open user turn becomes a new exchange (its answer comes next)."""
        self.exchanges.append(Exchange(self._merged(self.open)))
        self.open, self.lead_left = [], []

    def refeed_turn_after(self, length: int) -> None:
        """Crop the cache to ``length`` and feed the open turn again right there (after an answer was cut)."""
        pieces = self.open
        self.state.crop(length)
        self.open = []
        if pieces:
            self.feed(pieces)

    # ------------------------------------------------------------------ answers
    def begin_answer(self) -> None:
        self.answer_start = self.state.length

    def end_answer(self, prefix_ids: list[int], ids: list[int], spoken: Optional[int] = None) -> None:
        """The running answer is over; record it in the last exchange.

        Args:
            prefix_ids: the assistant prefix fed before the answer.
            ids: every answer token generated (the cache holds the prefix and all of them, or nothing when the
                answer was cut before its first token).
            spoken: None: the answer is complete, keep it all. Otherwise it was cut: keep the prefix and the first
                ``spoken`` ids (nothing at all when ``spoken`` is 0), crop the rest, and re-feed the open user
                turn (a barge-in's speech) right after what is kept.
        """
        if self.answer_start is None:
            raise RuntimeError("no answer in progress")
        if spoken is None:
            kept = list(prefix_ids) + list(ids)
        else:
            kept = list(prefix_ids) + list(ids[:spoken]) if spoken else []
            end = self.answer_start + len(kept)
            if self.open:
                self.refeed_turn_after(end)
            else:
                self.state.crop(end)
        if self.exchanges:
            self.exchanges[-1].answer = [Piece.of_ids(kept)] if kept else []
        self.answer_start = None

    # ------------------------------------------------------------------ bounding
    def maybe_evict(self) -> bool:
        """At a turn boundary (no open turn, no answer running): if the cache is longer than ``max_positions``,
        rebuild it from the system prompt and the most recent exchanges that fit in ``keep_positions``."""
        if self.state.length <= self.max_positions:
            return False
        if self.open or self.answer_start is not None:
            raise RuntimeError("eviction needs a turn boundary")
        budget = self.keep_positions - self.system.length
        kept: list[Exchange] = []
        for ex in reversed(self.exchanges):
            if ex.length > budget:
                break
            kept.insert(0, ex)
            budget -= ex.length
        self.exchanges = kept
        self.state = self._prefill([self.system] + [p for ex in kept for p in ex.user + ex.answer])
        self.evictions += 1
        return True

    def expected_length(self) -> int:
        """What the cache length must be when no answer runs (a consistency check)."""
        return self.system.length + sum(ex.length for ex in self.exchanges) + self.turn_length

    # ------------------------------------------------------------------ internals
    def _prefill(self, pieces: list[Piece], block: int = 512) -> LLMState:
        state = self.llm.new_state()
        x = torch.cat([self.embed(p) for p in pieces])[None]
        for s in range(0, x.shape[1], block):  # bounded activation memory
            self.llm.forward_embeds(x[:, s:s + block], state, logits_for="none")
        return state

    @staticmethod
    def _merged(pieces: list[Piece]) -> list[Piece]:
        """Consecutive embedding pieces joined into one tensor (a turn's chunks), others kept."""
        out: list[Piece] = []
        for p in pieces:
            if p.embeds is not None and out and out[-1].embeds is not None:
                out[-1] = Piece.of_embeds(torch.cat([out[-1].embeds, p.embeds]))
            else:
                out.append(p)
        return out

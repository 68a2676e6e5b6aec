"""Pull-based answer generation: one LLM token per call, so a caller can interleave other work between tokens.

:class:`TokenGenerator` is the single sampling loop of the project: :meth:`FrozenLLM.generate` runs it to the end,
:class:`freeze_omni.dialogue.answer.AnswerStream` pulls it token by token between speech-decoder steps.

Each :meth:`TokenGenerator.next` feeds the token returned by the previous call (if any) and samples the next one,
so a token is available as soon as it is sampled (the first one right after the prefix is fed). Between calls
the LLM state covers every returned token but the last; :meth:`TokenGenerator.close` feeds that one, after which
the state covers exactly the returned tokens (a sampled end-of-turn token is never fed: the next user prefix
supplies it).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from freeze_omni.llm.sampling import SamplingConfig, sample_next


class TokenGenerator:
    """Sample one answer token per :meth:`next` call.

    Args:
        llm: the :class:`~freeze_omni.llm.backbone.FrozenLLM`.
        state: the session's :class:`~freeze_omni.llm.backbone.LLMState` (updated in place).
        first_embeds: ``[1, T, H]`` embeddings that precede the first answer token (the assistant prefix).
        sampling: sampling settings (``max_new_tokens`` bounds the answer).
        generator: random generator for sampling (unused when greedy).

    Attributes:
        ids: the answer token ids returned so far.
        hiddens: the ``[H]`` final hidden state that produced each of them.
        start: the state's length before ``first_embeds`` (roll back there to forget the whole answer).
        answer_start: the state's length after ``first_embeds`` (None until the first :meth:`next`); the answer's
            ``i``-th token sits at position ``answer_start + i``.
        finished: the LLM sampled an end-of-turn / end-of-sequence token (False when cut by the limit or closed).
    """

    def __init__(self, llm: Any, state: Any, first_embeds: torch.Tensor, sampling: SamplingConfig,
                 generator: Optional[torch.Generator] = None) -> None:
        if first_embeds.dim() != 3 or first_embeds.shape[0] != 1:
            raise ValueError(f"first_embeds must be [1, T, H], got {tuple(first_embeds.shape)}")
        self.llm, self.state, self.sampling, self.generator = llm, state, sampling, generator
        self.start = state.length
        self.answer_start: Optional[int] = None
        self.ids: list[int] = []
        self.hiddens: list[torch.Tensor] = []
        self.finished = False
        self._first: Optional[torch.Tensor] = first_embeds
        self._hidden: Optional[torch.Tensor] = None  # [H] state after the last fed input
        self._logits: Optional[torch.Tensor] = None  # [1, V] next-token logits there
        self._unfed: Optional[int] = None  # the last returned token, not yet in the state
        self._done = False

    @property
    def done(self) -> bool:
        """No more tokens will come (end of turn sampled, limit reached, or closed)."""
        return self._done

    @torch.no_grad()
    def next(self) -> Optional[int]:
        """Feed the previous token, sample the next; returns its id, or None when the answer is over."""
        if self._done:
            return None
        if self._first is not None:
            hidden, logits, _ = self.llm.forward_embeds(self._first, self.state, logits_for="last")
            self._hidden, self._logits, self._first = hidden[0, -1], logits[:, -1], None
            self.answer_start = self.state.length
        elif self._unfed is not None:
            hidden, logits = self.llm.step(self.state, [self._unfed])
            self._hidden, self._logits, self._unfed = hidden[0], logits, None
        tok = int(sample_next(self._logits, self.sampling, self.generator))
        if tok in self.llm.stop_ids:
            self.finished = self._done = True
            return None
        self.ids.append(tok)
        self.hiddens.append(self._hidden)
        self._unfed = tok
        if len(self.ids) >= self.sampling.max_new_tokens:
            self.close()
        return tok

    @property
    def has_pending(self) -> bool:
        """:meth:`pending_input` is not None."""
        return not self._done and (self._first is not None or self._unfed is not None)

    def pending_input(self) -> Optional[torch.Tensor]:
        """``[T, H]`` what the next :meth:`next` would feed first (the prefix, or the last returned token), or None.
        A server feeds it for many sessions in one pass and hands each its result with :meth:`accept`."""
        if self._done:
            return None
        if self._first is not None:
            return self._first[0]
        if self._unfed is not None:
            return self.llm.embed(torch.tensor([[self._unfed]], device=self.llm.device))[0]
        return None

    @torch.no_grad()
    def accept(self, hidden: torch.Tensor) -> None:
        """The final hidden states ``[T, H]`` of :meth:`pending_input`, already fed into :attr:`state` by the
        caller: the next :meth:`next` samples from them without feeding anything."""
        self._hidden = hidden[-1]
        self._logits = self.llm._logits(hidden[-1:][None])[:, -1]
        if self._first is not None:
            self._first = None
            self.answer_start = self.state.length
        self._unfed = None

    @torch.no_grad()
    def close(self) -> None:
        """Stop here: feed the last returned token (hidden states only), so that the state covers exactly
        :attr:`ids`. Idempotent."""
        if self._unfed is not None:
            step = self.llm.embed(torch.tensor([[self._unfed]], device=self.llm.device))
            self.llm.forward_embeds(step, self.state, logits_for="none")
            self._unfed = None
        self._first = None
        self._done = True

    def hidden_matrix(self) -> torch.Tensor:
        """``[N, H]`` the hidden states of :attr:`hiddens` stacked (``[0, H]`` when no token was returned)."""
        if self.hiddens:
            return torch.stack(self.hiddens)
        return torch.zeros(0, self.llm.hidden_size, dtype=self.llm.dtype, device=self.llm.device)

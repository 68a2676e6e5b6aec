"""Step-wise inference of the speech decoder: one text segment -> codec tokens, as they come.

Per segment (``reference/freeze_omni_facts.md`` §1.7, inference algorithm), with a fresh cache each time:

1. prefix decoder over the LLM hidden states -> K/V prefix of the shared layers (when the decoder has one and
   hidden states are given);
2. pre-network over the LLM input embeddings of the (normalised, re-tokenised) segment text, or over its phonemes
   (``decoder.text_input: phonemes``, :mod:`freeze_omni.decoder.phonemes`);
3. one bidirectional pass of the shared layers over ``[BOS + semantic]``, appending to the cache;
4. AR loop from SOS: top-k sampling (k = 2 upstream, no temperature) until EOS or a length limit that grows with
   the text length.

The trainable model (:class:`SpeechDecoder`) and this generator are separate (STYLE.md §7 item 4): the generator
runs under ``no_grad``, asserts eval mode and owns sampling; the per-segment state is a :class:`DecoderState`
that a server session can hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from freeze_omni.decoder.model import KVCache, SpeechDecoder


@dataclass
class GenerationConfig:
    """AR sampling and length limit.

    Attributes:
        top_k: sample among the ``top_k`` most likely tokens, renormalised (1: argmax; upstream 2).
        max_tokens: hard cap on tokens per segment (upstream 1000 = 25 s at 40 Hz).
        min_tokens: the length limit is at least this (1 s at 40 Hz).
        tokens_per_char: the length limit grows by this per character of segment text (English speech is about
            14 characters/s, i.e. ~3 tokens/char at 40 Hz; 8 leaves room for slow speech and spelled-out digits).
        filter_special: never sample BOS/SOS/PAD (upstream does not filter them; a codec cannot decode them).
    """

    top_k: int = 2
    max_tokens: int = 1000
    min_tokens: int = 40
    tokens_per_char: float = 8.0
    filter_special: bool = True

    def limit(self, text: str) -> int:
        """Token limit for a segment of ``text``."""
        return min(self.max_tokens, max(self.min_tokens, math.ceil(self.tokens_per_char * len(text))))


@dataclass
class DecoderState:
    """One segment's decode in progress.

    Attributes:
        cache: K/V of prefix, semantic and fed code positions.
        prefix_width: prefix positions at the front of the cache slots of the first ``n_prefix`` layers.
        position: RoPE position of the next fed token (continues after the semantic part).
        logits: ``[V]`` next-token logits (after the last fed token).
        tokens: codec tokens sampled so far.
        max_tokens: this segment's limit.
        done: EOS sampled or limit reached.
    """

    cache: KVCache
    prefix_width: int
    position: int
    logits: torch.Tensor
    tokens: list[int] = field(default_factory=list)
    max_tokens: int = 1000
    done: bool = False


def sample_top_k(logits: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Upstream's sampling: softmax -> keep the ``k`` largest -> renormalise -> multinomial (no temperature).

    Args:
        logits: ``[B, V]``.
        k: tokens kept (1: argmax, no randomness drawn).
        generator: random generator (on ``logits.device``).

    Returns:
        ``[B]`` long token ids.
    """
    if k <= 1:
        return logits.argmax(dim=-1)
    probs, idx = torch.topk(torch.softmax(logits.float(), dim=-1), min(k, logits.shape[-1]), dim=-1)
    choice = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator)  # [B, 1]
    return idx.gather(-1, choice).squeeze(-1)


class SpeechGenerator:
    """Segment text (+ LLM hidden states) -> codec tokens, token by token.

    Args:
        decoder: the trained decoder; must be in eval mode.
        llm: anything with ``tokenize(text) -> list[int]`` and ``embed(ids [1, L]) -> [1, L, H]`` (a
            :class:`freeze_omni.llm.backbone.FrozenLLM`); needed only by the text-level calls of a decoder that
            reads LLM embeddings (not by one that reads phonemes).
        cfg: sampling and length settings.
        seed: seed of the sampling generator (same seed, same inputs -> same tokens).
    """

    def __init__(self, decoder: SpeechDecoder, llm: Any = None, cfg: GenerationConfig | None = None,
                 seed: int = 0) -> None:
        self.decoder, self.llm, self.cfg = decoder, llm, cfg or GenerationConfig()
        self.device = decoder.embedding.weight.device
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self._tokenize: Callable[[str], list[int]] | None = None

    def reseed(self, seed: int) -> None:
        self.rng.manual_seed(seed)

    # ------------------------------------------------------------------------------------ state machine
    @torch.no_grad()
    def start(self, text: torch.Tensor, hidden: torch.Tensor | None = None,
              max_tokens: int | None = None) -> DecoderState:
        """Steps 1-3 and the SOS feed: a state whose ``logits`` predict the first code.

        Args:
            text: the segment text as the decoder reads it (:meth:`text_inputs`): ``[L, H]`` (or ``[1, L, H]``)
                LLM input embeddings, or ``[L]`` (or ``[1, L]``) phoneme ids.
            hidden: ``[N, H]`` LLM final hidden states of the segment's tokens, or None (no prefix). Ignored when
                the decoder has no prefix decoder.
            max_tokens: this segment's token limit (default ``cfg.max_tokens``).
        """
        dec = self.decoder
        assert not dec.training, "SpeechGenerator needs the decoder in eval mode (decoder.eval())"
        dev = self.device
        batched = 2 if dec.cfg.text_input == "phonemes" else 3
        emb = text if text.dim() == batched else text.unsqueeze(0)
        cache = KVCache(len(dec.layers))
        P = 0
        if dec.cfg.use_prefix and hidden is not None and hidden.shape[-2] > 0:
            h = hidden if hidden.dim() == 3 else hidden.unsqueeze(0)
            dec.encode_prefix(h.to(dev), torch.tensor([h.shape[1]], device=dev), cache)
            P = cache.length(0)
        sem, _ = dec.encode_text(emb.to(dev), torch.tensor([emb.shape[1]], device=dev))  # [1, S, d]
        S = sem.shape[1]
        full = torch.ones(1, S, P + S, dtype=torch.bool, device=dev)  # bidirectional over prefix + semantic
        dec.shared(sem, torch.arange(S, device=dev).unsqueeze(0), full, cache, P)
        state = DecoderState(cache=cache, prefix_width=P, position=S, logits=sem.new_zeros(0),
                             max_tokens=self.cfg.max_tokens if max_tokens is None else max_tokens)
        self.feed(state, dec.cfg.sos_id)
        return state

    @torch.no_grad()
    def feed(self, state: DecoderState, token: int) -> torch.Tensor:
        """Append one token (SOS or a code) at the next position; returns and stores the next logits ``[V]``."""
        logits = self.decoder.step_ragged([token], [state.position], [state.cache])  # [1, V]: one row
        state.position += 1
        state.logits = logits[0]
        return state.logits

    @torch.no_grad()
    def step(self, state: DecoderState) -> int | None:
        """Sample the next code, feed it, return it; None (and ``state.done``) on EOS or at the limit."""
        tok = self.sample(state)
        if tok is not None:
            self.feed(state, tok)
        return tok

    @torch.no_grad()
    def sample(self, state: DecoderState) -> int | None:
        """The first half of :meth:`step`: sample the next code and record it, without feeding it (the caller
        feeds it, e.g. :func:`step_many` for many sessions at once); None (and ``state.done``) on EOS or at the
        limit."""
        if state.done:
            return None
        if len(state.tokens) >= state.max_tokens:
            state.done = True
            return None
        cfg, dcfg = self.cfg, self.decoder.cfg
        logits = state.logits.unsqueeze(0).float()
        if cfg.filter_special:
            logits = logits.clone()
            logits[:, [dcfg.bos_id, dcfg.sos_id, dcfg.pad_id]] = float("-inf")
        tok = int(sample_top_k(logits, cfg.top_k, self.rng)[0])
        if tok == dcfg.eos_id:
            state.done = True
            return None
        state.tokens.append(tok)
        return tok

    # ------------------------------------------------------------------------------------ text level
    def text_inputs(self, text: str) -> torch.Tensor:
        """What :meth:`start` reads for ``text``: ``[1, L]`` phoneme ids, or ``[1, L, H]`` LLM input embeddings
        (tokenized as training did, :func:`text_tokenizer`)."""
        if self._tokenize is None:
            self._tokenize = text_tokenizer(self.decoder.cfg, self.llm)
        ids = torch.tensor([self._tokenize(text)], dtype=torch.long)
        return ids if self.decoder.cfg.text_input == "phonemes" else self.llm.embed(ids)

    def iter_tokens(self, text: str, hidden: torch.Tensor | None = None) -> Iterator[int]:
        """Yield the codec tokens of one segment as they are sampled.

        Args:
            text: the segment text, already normalised for TTS (:func:`freeze_omni.decoder.segmenter.normalize_tts`).
            hidden: ``[N, H]`` LLM hidden states of the segment's tokens (prefix), or None.
        """
        state = self.start(self.text_inputs(text), hidden, self.cfg.limit(text))
        while (tok := self.step(state)) is not None:
            yield tok

    def generate(self, text: str, hidden: torch.Tensor | None = None,
                 on_tokens: Callable[[list[int]], None] | None = None, every: int = 1) -> list[int]:
        """All tokens of one segment; ``on_tokens(new_tokens)`` is called every ``every`` tokens and at the end
        (so a streaming codec can start early)."""
        out: list[int] = []
        pending: list[int] = []
        for tok in self.iter_tokens(text, hidden):
            out.append(tok)
            pending.append(tok)
            if on_tokens is not None and len(pending) >= every:
                on_tokens(pending)
                pending = []
        if on_tokens is not None and pending:
            on_tokens(pending)
        return out


def text_tokenizer(cfg: Any, llm: Any = None) -> Callable[[str], list[int]]:
    """Text -> the ids a decoder with config ``cfg`` reads: phoneme ids (``text_input: phonemes``) or ``llm``'s token
    ids, which the LLM's embedding table then embeds. Training (output stage 2) and generation use the same one."""
    if cfg.text_input == "phonemes":
        from freeze_omni.decoder.phonemes import Phonemizer

        return Phonemizer(cfg.phoneme_voice, cfg.symbols).ids
    if llm is None:
        raise ValueError("SpeechGenerator needs an llm to embed text")
    return llm.tokenize


@torch.no_grad()
def answer_hidden(llm: Any, system: str, question: str, answer: str, answer_before: str = "") -> torch.Tensor:
    """The prefix input of an answer that is already written: ``[N, H]`` final hidden states that produced the ``N``
    tokens of ``llm.tokenize(answer)``, the LLM teacher-forced (one pass, no sampling) over
    ``system + question + answer_before + answer`` framed as the live dialogue frames it
    (:meth:`FrozenLLM.text_prompt_ids`). Output stage 3 and ``freeze-omni speak`` use it.
    """
    prompt = llm.text_prompt_ids(system, question)
    before = llm.tokenize(answer_before) if answer_before else []
    ids = llm.tokenize(answer)
    if not ids:
        return torch.zeros(0, llm.hidden_size)
    x = torch.tensor([prompt + before + ids], dtype=torch.long)
    hidden, _, _ = llm.forward_embeds(llm.embed(x), None, logits_for="none")  # [1, T, H]
    start = len(prompt) + len(before) - 1  # the state at position t produced token t + 1
    return hidden[0, start:start + len(ids)].float()


@torch.no_grad()
def step_many(rows: list[tuple[SpeechGenerator, DecoderState]]) -> list[int | None]:
    """:meth:`SpeechGenerator.step` for the decodes of several sessions (one decoder), the feeds in one pass
    (:meth:`~freeze_omni.decoder.model.SpeechDecoder.step_ragged`): each row samples with its own generator, so the
    tokens are those of stepping each row alone, and rows that end (None) are not fed."""
    toks = [gen.sample(state) for gen, state in rows]
    live = [(gen, state, tok) for (gen, state), tok in zip(rows, toks) if tok is not None]
    if live:
        dec = live[0][0].decoder
        logits = dec.step_ragged([t for _, _, t in live], [s.position for _, s, _ in live],
                                 [s.cache for _, s, _ in live])
        for (_, state, _), row in zip(live, logits):
            state.position += 1
            state.logits = row
    return toks

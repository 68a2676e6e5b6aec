"""The session's LLM context: rollback, barge-in truncation with re-feed, eviction of old turns."""

import pytest
import torch

from freeze_omni.dialogue.context import Context, Piece
from freeze_omni.llm.testing import tiny_llm


@pytest.fixture(scope="module")
def llm():
    return tiny_llm("llama")


def _probe(llm, state) -> torch.Tensor:
    """What the state says about one more input (compares two caches by behaviour)."""
    s = state.clone()
    x = llm.embed(torch.tensor([[65, 66]]))
    return llm.forward_embeds(x, s, logits_for="none")[0][0, -1]


def _fresh(llm, pieces, ctx) -> torch.Tensor:
    """Probe of a cache prefilled from scratch with ``pieces``."""
    state = llm.new_state()
    llm.forward_embeds(torch.cat([ctx.embed(p) for p in pieces])[None], state, logits_for="none")
    return _probe(llm, state), state.length


def _ctx(llm, **kw) -> Context:
    prompt = torch.randn(3, llm.hidden_size, generator=torch.Generator().manual_seed(0))
    return Context(llm, llm.system_ids("be brief"), lambda: prompt, **kw)


def _turn(llm, seed: int) -> list[Piece]:
    g = torch.Generator().manual_seed(seed)
    return [Piece.of_ids(llm.framing_ids(llm.framing.user_prefix)), Piece(prompt=True, length=3),
            Piece.of_embeds(torch.randn(4, llm.hidden_size, generator=g))]


def _answer(llm, ctx, ids):
    ctx.begin_answer()
    prefix = llm.framing_ids(llm.framing.assistant_prefix)
    llm.forward_embeds(llm.embed(torch.tensor([prefix + ids])), ctx.state, logits_for="none")
    return prefix


@torch.inference_mode()
def test_rollback_is_exact(llm):
    ctx = _ctx(llm)
    before, n = _probe(llm, ctx.state), ctx.state.length
    turn = _turn(llm, 1)
    ctx.feed(turn[:2])
    ctx.feed(turn[2:])
    assert ctx.state.length == n + sum(p.length for p in turn)
    ctx.rollback_turn()
    assert ctx.state.length == n and not ctx.open
    torch.testing.assert_close(_probe(llm, ctx.state), before)


@torch.inference_mode()
def test_barge_in_keeps_spoken_answer_then_refeeds_the_turn(llm):
    ctx = _ctx(llm)
    t1 = _turn(llm, 1)
    ctx.feed(t1)
    ctx.commit_turn()
    ids = [70, 71, 72, 73, 74]
    prefix = _answer(llm, ctx, ids)
    t2 = _turn(llm, 2)
    ctx.feed(t2)  # the user speaks over the answer
    ctx.end_answer(prefix, ids, spoken=2)
    ctx.commit_turn()
    want, n = _fresh(llm, [ctx.system] + t1 + [Piece.of_ids(prefix + ids[:2])] + t2, ctx)
    assert ctx.state.length == n == ctx.expected_length()
    torch.testing.assert_close(_probe(llm, ctx.state), want, atol=1e-5, rtol=1e-5)
    assert ctx.exchanges[0].answer[0].ids == prefix + ids[:2]
    # nothing spoken: the answer disappears, prefix included
    ctx2 = _ctx(llm)
    ctx2.feed(t1)
    ctx2.commit_turn()
    prefix = _answer(llm, ctx2, ids)
    ctx2.end_answer(prefix, ids, spoken=0)
    assert ctx2.state.length == ctx2.expected_length() and ctx2.exchanges[0].answer == []


@torch.inference_mode()
def test_eviction_bounds_the_cache_and_equals_a_fresh_prefill(llm):
    ctx = _ctx(llm, max_positions=120, keep_positions=80)
    peak = 0
    for i in range(12):
        ctx.feed(_turn(llm, i))
        ctx.commit_turn()
        prefix = _answer(llm, ctx, [80 + i] * 6)
        ctx.end_answer(prefix, [80 + i] * 6)
        peak = max(peak, ctx.state.length)
        ctx.maybe_evict()
        assert ctx.state.length == ctx.expected_length() <= 120
    assert ctx.evictions > 0 and peak <= 120 + 40
    kept = [p for ex in ctx.exchanges for p in ex.user + ex.answer]
    assert kept[-1].ids == llm.framing_ids(llm.framing.assistant_prefix) + [91] * 6  # the latest turn stays
    want, _ = _fresh(llm, [ctx.system] + kept, ctx)
    torch.testing.assert_close(_probe(llm, ctx.state), want, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_lead_in_parts_equals_the_lead_at_once_and_rolls_back(llm):
    """open_lead books a turn's lead a few positions at a time; fed that way (the rest taken by the turn's first
    chunk) the cache equals a prefill of the whole turn, and a rollback mid-lead forgets the rest too."""
    ctx = _ctx(llm)
    before, n = _probe(llm, ctx.state), ctx.state.length
    lead, chunk = _turn(llm, 3)[:2], _turn(llm, 3)[2]
    x = ctx.open_lead(lead, step=2)
    llm.forward_embeds(x[None], ctx.state, logits_for="none")
    assert x.shape[0] == 2 and ctx.lead_left and ctx.turn_length == 2
    ctx.rollback_turn()
    assert ctx.state.length == n and not ctx.open and not ctx.lead_left
    torch.testing.assert_close(_probe(llm, ctx.state), before)

    for _ in range(2):
        llm.forward_embeds(ctx.open_lead(lead, step=2)[None], ctx.state, logits_for="none")
    ctx.feed(ctx.rest_of_lead() + [chunk])
    assert ctx.open_lead(lead, step=2) is None and ctx.state.length == ctx.expected_length()
    want, length = _fresh(llm, [ctx.system] + lead + [chunk], ctx)
    assert ctx.state.length == length
    torch.testing.assert_close(_probe(llm, ctx.state), want, atol=1e-5, rtol=1e-5)

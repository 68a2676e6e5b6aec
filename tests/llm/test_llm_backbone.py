"""FrozenLLM on tiny random Llama and Qwen2 models: streaming == offline, crop, generation, batching, frozenness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freeze_omni.llm.backbone import FrozenLLM, LLMState
from freeze_omni.llm.sampling import SamplingConfig
from freeze_omni.llm.testing import tiny_causal_lm, tiny_llm, tiny_tokenizer
from freeze_omni.ragged import Int8Linear, project

ARCHS = ["llama", "qwen2"]
GREEDY = SamplingConfig(greedy=True, max_new_tokens=12)
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(params=ARCHS)
def llm(request) -> FrozenLLM:
    return tiny_llm(request.param)


def _prompt(llm: FrozenLLM, question: str = "What is the capital of France?") -> list[int]:
    return llm.text_prompt_ids("Be brief.", question)


def test_properties(llm):
    assert llm.hidden_size == 32 and llm.vocab_size == 259 and llm.dtype == torch.float32
    assert llm.eot_id == llm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert not llm.lm.training and all(not p.requires_grad for p in llm.lm.parameters())
    ids = _prompt(llm)
    f = llm.framing
    assert ids == (llm.tokenize(f.system_prefix + "Be brief.") + llm.tokenize(f.user_prefix)
                   + llm.tokenize("What is the capital of France?") + llm.tokenize(f.assistant_prefix))
    assert llm.embed(torch.tensor([ids])).shape == (1, len(ids), 32)


def test_incremental_equals_full_pass(llm):
    x = torch.randn(2, 11, 32, generator=torch.Generator().manual_seed(0))
    h_full, l_full, st = llm.forward_embeds(x)
    assert st is None and h_full.shape == (2, 11, 32) and l_full.shape == (2, 11, 259)
    ref = llm.lm(inputs_embeds=x, output_hidden_states=True, use_cache=False)  # HF's own forward
    torch.testing.assert_close(h_full, ref.hidden_states[-1], **TOL)
    torch.testing.assert_close(l_full, ref.logits, **TOL)

    state, hs, ls, t = llm.new_state(), [], [], 0
    for n in (3, 1, 5, 2):
        h, logits, state = llm.forward_embeds(x[:, t:t + n], state)
        hs.append(h)
        ls.append(logits)
        t += n
        assert state.length == t
    torch.testing.assert_close(torch.cat(hs, 1), h_full, **TOL)
    torch.testing.assert_close(torch.cat(ls, 1), l_full, **TOL)
    # logits_for="last" is the last column of "all"
    _, last, _ = llm.forward_embeds(x, llm.new_state(), logits_for="last")
    torch.testing.assert_close(last, l_full[:, -1:], **TOL)


def test_crop_rolls_back(llm):
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(1, n, 32, generator=g) for n in (5, 4, 3))
    state = llm.new_state()
    llm.forward_embeds(a, state)
    llm.forward_embeds(b, state)  # e.g. audio the state head rejected
    assert state.length == 9
    branch = state.clone()
    state.crop(5)
    assert state.length == 5 and state.cache.get_seq_length() == 5
    h, logits, _ = llm.forward_embeds(c, state)

    fresh = llm.new_state()
    llm.forward_embeds(a, fresh)
    h_ref, logits_ref, _ = llm.forward_embeds(c, fresh)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(logits, logits_ref, **TOL)
    # the clone taken before the crop is untouched
    assert branch.length == 9 and branch.cache.get_seq_length() == 9
    with pytest.raises(ValueError):
        state.crop(100)


def _hf_greedy(llm: FrozenLLM, prompt: list[int], n: int) -> list[int]:
    out = llm.lm.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, max_new_tokens=n, eos_token_id=llm.eot_id, pad_token_id=256)
    ids = out[0, len(prompt):].tolist()
    return ids[:ids.index(llm.eot_id)] if llm.eot_id in ids else ids


def test_greedy_generate_matches_hf_and_keeps_hiddens(llm):
    prompt = _prompt(llm)
    ids, hiddens, state = llm.generate(llm.new_state(), llm.embed(torch.tensor([prompt])), GREEDY)
    assert len(ids) == GREEDY.max_new_tokens and hiddens.shape == (len(ids), 32)
    assert ids == _hf_greedy(llm, prompt, GREEDY.max_new_tokens)
    assert state.length == len(prompt) + len(ids)  # every returned token is in the cache
    again, _, _ = llm.generate(llm.new_state(), llm.embed(torch.tensor([prompt])), GREEDY)
    assert again == ids
    # hiddens[i] is the final hidden state that produced ids[i]
    h, _, _ = llm.forward_embeds(llm.embed(torch.tensor([prompt + ids])))
    torch.testing.assert_close(hiddens, h[0, len(prompt) - 1:len(prompt) - 1 + len(ids)], **TOL)


def test_generate_stops_at_eot_without_feeding_it():
    llm = tiny_llm("llama")
    prompt = _prompt(llm)
    ids, _, _ = llm.generate(llm.new_state(), llm.embed(torch.tensor([prompt])), GREEDY)
    k = next(i for i in range(1, len(ids)) if ids[i] not in ids[:i])
    # Swap the LM-head rows of ids[k] and <|im_end|>: greedy now says <|im_end|> at step k.
    head = llm.lm.get_output_embeddings().weight
    with torch.no_grad():
        head[[ids[k], llm.eot_id]] = head[[llm.eot_id, ids[k]]]
    got, hiddens, state = llm.generate(llm.new_state(), llm.embed(torch.tensor([prompt])), GREEDY)
    assert got == ids[:k] == _hf_greedy(llm, prompt, GREEDY.max_new_tokens)
    assert hiddens.shape == (k, 32) and state.length == len(prompt) + k
    assert llm.answer_ids(["What is the capital of France?"], "Be brief.", GREEDY) == [(ids[:k], True)]


def test_on_token_stops_early(llm):
    seen = []

    def on_token(tok: int, text: str) -> bool:
        seen.append((tok, text))
        return len(seen) < 3

    prompt = _prompt(llm)
    ids, _, state = llm.generate(llm.new_state(), llm.embed(torch.tensor([prompt])), GREEDY, on_token=on_token)
    assert len(ids) == 3 and [t for t, _ in seen] == ids and seen[-1][1] == llm.decode(ids)
    assert state.length == len(prompt) + 3


def test_answer_text_batched_equals_unbatched(llm):
    questions = ["Hi", "What is the capital of France?", "Name three colours, please.", "Why?"]
    batched = llm.answer_text(questions, "Be brief.", GREEDY, batch_size=3)
    single = [llm.answer_text([q], "Be brief.", GREEDY)[0] for q in questions]
    assert batched == single
    ids, _, _ = llm.generate(llm.new_state(), llm.embed(torch.tensor([_prompt(llm, questions[1])])), GREEDY)
    assert single[1] == llm.decode(ids).strip()


def test_sampled_generation_is_reproducible(llm):
    cfg = SamplingConfig(temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=8)
    runs = [llm.answer_text(["Hi"], "Be brief.", cfg, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert runs[0] == runs[1]


class _Bridge(nn.Module):
    """A stand-in for the trainable parts around the frozen LLM."""

    def __init__(self, llm: FrozenLLM) -> None:
        super().__init__()
        self.llm = llm
        self.proj = nn.Linear(8, llm.hidden_size)


def test_llm_stays_frozen_through_training(llm):
    before = llm.fingerprint()
    bridge = _Bridge(llm).train()
    assert bridge.training and bridge.llm.training and not llm.lm.training  # no dropout in the LLM, ever
    assert [n for n, _ in bridge.named_parameters()] == ["proj.weight", "proj.bias"]
    assert all(k.startswith("proj.") for k in bridge.state_dict())  # a bundle never copies the LLM
    opt = torch.optim.SGD(bridge.parameters(), lr=0.1)
    ids = torch.tensor([_prompt(llm)])
    for _ in range(2):
        audio = bridge.proj(torch.randn(1, 4, 8))
        x = torch.cat([llm.embed(ids), audio], dim=1)  # [1, T+4, H]
        hidden, logits, _ = llm.forward_embeds(x)
        loss = logits.logsumexp(-1).mean() + hidden.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert bridge.proj.weight.grad is not None and bridge.proj.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in llm.lm.parameters())
        opt.step()
    assert llm.fingerprint() == before
    # .to() reaches the (unregistered) LLM
    bridge.to(torch.float64)
    assert llm.dtype == torch.float64
    bridge.to(torch.float32)
    assert llm.fingerprint() == before


def test_fingerprint_sees_a_change():
    llm = tiny_llm("qwen2")
    before = llm.fingerprint()
    with torch.no_grad():
        next(llm.lm.parameters()).view(-1)[0] += 1e-6
    assert llm.fingerprint() != before


def test_eager_and_sdpa_agree():
    tok = tiny_tokenizer()
    a = FrozenLLM.from_pretrained_objects(tiny_causal_lm("llama", attn_implementation="sdpa"), tok)
    b = FrozenLLM.from_pretrained_objects(tiny_causal_lm("llama", attn_implementation="eager"), tok)
    ids = torch.tensor([_prompt(a)])
    state_a, state_b = a.new_state(), b.new_state()
    for chunk in ids.split(7, dim=1):
        ha, _, _ = a.forward_embeds(a.embed(chunk), state_a)
        hb, _, _ = b.forward_embeds(b.embed(chunk), state_b)
        torch.testing.assert_close(ha, hb, **TOL)


def test_state_is_a_plain_dataclass():
    s = LLMState()
    assert s.cache is None and s.length == 0
    s.crop(0)


def test_padded_training_batch_and_step(llm):
    """A right-padded stateless batch (training) equals each row alone; `step` equals `forward_embeds`."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 9, 32, generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    h, _, _ = llm.forward_embeds(x, attention_mask=mask, logits_for="none")
    h1, _, _ = llm.forward_embeds(x[1:, :6], logits_for="none")
    torch.testing.assert_close(h[1, :6], h1[0], **TOL)

    prompt = torch.tensor([_prompt(llm)])
    state = llm.new_state()
    llm.forward_embeds(llm.embed(prompt[:, :-1]), state, logits_for="none")
    hs, ls = llm.step(state, prompt[0, -1:])
    h_ref, l_ref, _ = llm.forward_embeds(llm.embed(prompt))
    torch.testing.assert_close(hs, h_ref[:, -1], **TOL)
    torch.testing.assert_close(ls, l_ref[:, -1], **TOL)
    assert state.length == prompt.shape[1]


def test_history_and_finished_flags(llm):
    hist = [("Hi", "Hello there."), ("Who are you?", "A bot.")]
    ids = llm.text_prompt_ids("Be brief.", "Why?", hist)
    assert llm.tokenizer.decode(ids) == llm.framing.text("Be brief.", hist + [("Why?", None)])
    qs, hs = ["Why?", "What now?"], [hist, []]
    batched = llm.answer_text(qs, "Be brief.", GREEDY, history=hs)
    assert batched == [llm.answer_text([q], "Be brief.", GREEDY, history=[h])[0] for q, h in zip(qs, hs)]
    res = llm.answer_ids(qs, "Be brief.", GREEDY, history=hs)
    assert all(len(a) == GREEDY.max_new_tokens and not finished for a, finished in res)  # random LM: no <|im_end|>


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
def test_lean_steps_equal_the_transformers_forward(arch):
    """One session stepped incrementally (the lean path of ragged_layers, not the transformers forward) gives the
    hidden states and logits of transformers' own full pass."""
    llm = tiny_llm(arch)
    x = torch.randn(1, 11, 32, generator=torch.Generator().manual_seed(0))
    ref = llm.lm(inputs_embeds=x, output_hidden_states=True, use_cache=False)
    state, hs, ls, t = llm.new_state(), [], [], 0
    for n in (3, 1, 5, 2):
        assert llm._lean(state)
        h, logits, state = llm.forward_embeds(x[:, t:t + n], state)
        hs.append(h)
        ls.append(logits)
        t += n
    torch.testing.assert_close(torch.cat(hs, 1), ref.hidden_states[-1], **TOL)
    torch.testing.assert_close(torch.cat(ls, 1), ref.logits, **TOL)


def test_forward_ragged_equals_feeding_each_row_alone(llm):
    """Rows of different cache lengths and input lengths in one pass == each row's whole sequence through the
    transformers forward, and the states continue correctly afterwards (their caches hold the right keys and
    values)."""
    g = torch.Generator().manual_seed(1)
    pasts, news = (5, 9, 1, 9), (2, 1, 4, 2)
    pres = [torch.randn(1, p, 32, generator=g) for p in pasts]
    states = [llm.forward_embeds(pre, llm.new_state(), logits_for="none")[2] for pre in pres]
    xs = [torch.randn(t, 32, generator=g) for t in news]
    got = llm.forward_ragged(xs, states)
    nxt = torch.randn(1, 3, 32, generator=g)
    for pre, x, st, h in zip(pres, xs, states, got):
        whole = torch.cat([pre, x[None], nxt], 1)
        want = llm.lm(inputs_embeds=whole, output_hidden_states=True, use_cache=False).hidden_states[-1][0]
        assert h.shape == (x.shape[0], 32)
        torch.testing.assert_close(h, want[pre.shape[1]:pre.shape[1] + x.shape[0]], **TOL)
        torch.testing.assert_close(llm.forward_embeds(nxt, st, logits_for="none")[0][0], want[-3:], **TOL)
    assert [s.length for s in states] == [p + t + 3 for p, t in zip(pasts, news)]


def test_forward_ragged_falls_back_for_padded_states(llm):
    """A padded multi-row state cannot be stacked with others: it is fed on its own, still correctly."""
    g = torch.Generator().manual_seed(2)
    padded = llm.forward_embeds(torch.randn(2, 4, 32, generator=g), llm.new_state(),
                                attention_mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), logits_for="none")[2]
    plain = llm.forward_embeds(torch.randn(1, 3, 32, generator=g), llm.new_state(), logits_for="none")[2]
    assert not llm._lean(padded) and llm._lean(plain)
    with pytest.raises(ValueError, match="inputs for"):
        llm.forward_ragged([torch.randn(1, 32)], [plain, plain])


def test_forward_ragged_failure_leaves_every_state_as_it_was(llm, monkeypatch):
    """A pass that fails halfway (after some layers appended keys) leaves each state exactly as before."""
    g = torch.Generator().manual_seed(5)
    states = [llm.forward_embeds(torch.randn(1, p, 32, generator=g), llm.new_state(), logits_for="none")[2]
              for p in (3, 6)]
    llm.forward_ragged([torch.randn(1, 32), torch.randn(1, 32)], states)
    lengths = [[layer.keys.shape[2] for layer in s.cache.layers] for s in states]
    last = llm.lm.get_decoder().layers[-1]

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(last.mlp.act_fn, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        llm.forward_ragged([torch.randn(2, 32), torch.randn(1, 32)], states)
    assert [[layer.keys.shape[2] for layer in s.cache.layers] for s in states] == lengths
    assert [s.length for s in states] == [4, 7]


def test_lean_states_crop_and_clone_independently(llm):
    """States stepped in place (keys in reserved room) still crop, and a clone continues on its own: each equals
    transformers' full pass over its own sequence."""
    g = torch.Generator().manual_seed(7)
    pre, a_in, b_in, c_in = (torch.randn(1, n, 32, generator=g) for n in (6, 3, 2, 4))
    a = llm.forward_embeds(pre, llm.new_state(), logits_for="none")[2]
    b = a.clone()
    llm.forward_embeds(a_in, a, logits_for="none")
    a.crop(7)  # keep one of a's three inputs
    ha = llm.forward_embeds(c_in, a, logits_for="none")[0]
    hb = llm.forward_embeds(b_in, b, logits_for="none")[0]
    for seq, h in ((torch.cat([pre, a_in[:, :1], c_in], 1), ha), (torch.cat([pre, b_in], 1), hb)):
        want = llm.lm(inputs_embeds=seq, output_hidden_states=True, use_cache=False).hidden_states[-1]
        torch.testing.assert_close(h, want[:, -h.shape[1]:], **TOL)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "weight-only"])
def test_int8_steps_stay_close_and_leave_the_weights_alone(llm, dynamic):
    """quantize_int8: the inference steps use int8 copies (close to float, not equal), the float weights and their
    fingerprint are unchanged, and a training pass still runs on the float weights."""
    x = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(8))
    ref_h, ref_l, _ = llm.forward_embeds(x, llm.new_state())
    fp = llm.fingerprint()
    llm.quantize_int8(dynamic=dynamic)
    assert llm.fingerprint() == fp
    with torch.no_grad():
        h, logits, _ = llm.forward_embeds(x, llm.new_state())
    assert not torch.equal(h, ref_h)
    assert (h - ref_h).norm() / ref_h.norm() < 0.05 and (logits - ref_l).norm() / ref_l.norm() < 0.05
    grad_h, _, _ = llm.forward_embeds(x.clone().requires_grad_(True))  # stateless training pass: float weights
    torch.testing.assert_close(grad_h, ref_h, **TOL)


def test_int8_products_and_smoothing():
    """Int8Linear: both kernels stay within a few percent of the float product of stacked layers (bias included);
    with a few input channels 50x larger than the rest (as in LLM activations), smoothing by their calibration
    maximum makes the dynamic product several times more accurate than without."""
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    a, b = nn.Linear(64, 48), nn.Linear(64, 16, bias=False)
    x = torch.randn(6, 64, generator=g)
    x[:, :3] *= 50
    want = torch.cat([a(x), b(x)], dim=-1).detach()

    def err(q8) -> float:
        y = torch.cat(project(x, (a, b), q8), dim=-1)
        return float((y - want).norm() / want.norm())

    plain = err(Int8Linear(a, b, dynamic=True))
    smoothed = err(Int8Linear(a, b, act_max=x.abs().amax(0), dynamic=True))
    weight_only = err(Int8Linear(a, b, dynamic=False))
    assert smoothed < 0.02 and weight_only < 0.02
    assert smoothed * 2 < plain

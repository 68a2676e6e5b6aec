"""SpeechGenerator: the cached AR loop equals the teacher-forced training forward; sampling; LLM-side inputs."""

import pytest
import torch

from freeze_omni.decoder.generator import GenerationConfig, SpeechGenerator, answer_hidden, sample_top_k


@pytest.mark.parametrize("kw", [dict(llm_map="project"), dict(llm_map="split", llm_hidden=64),
                                dict(n_prefix=1), dict(use_pre_nn=False), dict(use_prefix=False),
                                dict(text_input="phonemes")])
def test_ar_with_cache_equals_teacher_forcing(make_decoder, kw):
    dec = make_decoder(**kw)
    H = dec.cfg.llm_hidden
    g = torch.Generator().manual_seed(1)
    # a padded batch of two: the masks must make each row equal to its unpadded, cached decode
    batch = {"text_embeds": torch.randn(2, 5, H, generator=g), "text_lens": torch.tensor([5, 3]),
             "codes": torch.randint(0, 16, (2, 9), generator=g), "code_lens": torch.tensor([9, 6]),
             "prefix": torch.randn(2, 4, H, generator=g), "prefix_lens": torch.tensor([2, 4])}
    text_key = "text_embeds"
    if dec.cfg.text_input == "phonemes":
        text_key, batch["text_ids"] = "text_ids", torch.randint(2, dec.cfg.n_symbols, (2, 5), generator=g)
    with torch.no_grad():
        logits, targets = dec.compute_logits(batch)
    gen = SpeechGenerator(dec)
    for b in range(2):
        L, N, P = (int(batch[k][b]) for k in ("text_lens", "code_lens", "prefix_lens"))
        state = gen.start(batch[text_key][b, :L], batch["prefix"][b, :P])
        rows = [state.logits]
        for c in batch["codes"][b, :N].tolist():
            rows.append(gen.feed(state, c))
        torch.testing.assert_close(torch.stack(rows), logits[b, :N + 1], atol=1e-4, rtol=1e-4)
        assert targets[b, N] == dec.cfg.eos_id


def test_sampling_is_seeded_and_top_k_1_is_argmax(make_decoder):
    dec = make_decoder(seed=3)
    emb, hid = torch.randn(4, 32), torch.randn(3, 32)

    def run(k, seed, n=30):
        gen = SpeechGenerator(dec, cfg=GenerationConfig(top_k=k, max_tokens=n), seed=seed)
        state = gen.start(emb, hid, max_tokens=n)
        while gen.step(state) is not None:
            pass
        return state.tokens, state

    a, st = run(1, 0)
    b, _ = run(1, 123)
    assert a == b  # top-k 1: deterministic whatever the seed
    assert all(0 <= t < 16 for t in a) and st.done and len(a) <= 30
    assert run(2, 7)[0] == run(2, 7)[0]  # same seed, same tokens
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]])
    draws = {int(sample_top_k(logits, 2, torch.Generator().manual_seed(s))) for s in range(40)}
    assert draws == {1, 2}  # only the top 2 are ever drawn
    assert int(sample_top_k(logits, 1)) == 1


def test_stops_at_eos_and_at_the_length_limit(make_decoder):
    dec = make_decoder()
    with torch.no_grad():
        dec.out_fnn.bias.zero_()
        dec.out_fnn.bias[dec.cfg.eos_id] = 100.0  # EOS always wins
    gen = SpeechGenerator(dec, cfg=GenerationConfig(top_k=2))
    state = gen.start(torch.randn(3, 32))
    assert gen.step(state) is None and state.done and state.tokens == []
    with torch.no_grad():
        dec.out_fnn.bias[dec.cfg.eos_id] = -100.0
        dec.out_fnn.bias[dec.cfg.sos_id] = 100.0  # a special id the codec cannot decode
    state = gen.start(torch.randn(3, 32), max_tokens=7)
    while gen.step(state) is not None:
        pass
    assert len(state.tokens) == 7 and all(t < 16 for t in state.tokens)  # specials filtered
    assert GenerationConfig().limit("Hi.") == 40 and GenerationConfig().limit("x" * 1000) == 1000
    with pytest.raises(AssertionError, match="eval"):
        SpeechGenerator(dec.train()).start(torch.randn(3, 32))


def test_text_level_streaming(make_decoder):
    from freeze_omni.llm.testing import tiny_llm

    llm = tiny_llm()
    dec = make_decoder(llm_hidden=llm.hidden_size)
    gen = SpeechGenerator(dec, llm, GenerationConfig(top_k=2, max_tokens=25))
    got: list[list[int]] = []
    toks = gen.generate("Hello there.", torch.randn(4, llm.hidden_size), on_tokens=got.append, every=4)
    assert sum(got, []) == toks and all(len(x) <= 4 for x in got) and len(toks) <= 25
    gen.reseed(0)
    a = list(gen.iter_tokens("Hello there."))
    gen.reseed(0)
    assert a == list(gen.iter_tokens("Hello there."))


def test_answer_hidden_is_the_state_that_produced_each_token():
    from freeze_omni.llm.testing import tiny_llm

    llm = tiny_llm()
    system, question, before, answer = "be brief", "What is it?", "Well, ", "it is four."
    h = answer_hidden(llm, system, question, answer, answer_before=before)
    ids = llm.tokenize(answer)
    assert h.shape == (len(ids), llm.hidden_size)
    # live decoding: the prompt, then the answer fed token by token
    state = llm.new_state()
    prompt = llm.text_prompt_ids(system, question) + llm.tokenize(before)
    hid, _, state = llm.forward_embeds(llm.embed(torch.tensor([prompt])), state, logits_for="none")
    live = [hid[0, -1]]
    for t in ids[:-1]:
        live.append(llm.step(state, [t])[0][0])
    torch.testing.assert_close(h, torch.stack(live), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(), dict(use_prefix=False)])
def test_step_many_equals_stepping_each_alone(make_decoder, kw):
    """Sessions at different points of different segments, stepped in one pass: the same tokens and logits as
    stepping each alone (each with its own seeded sampler), rows dropping out as they end."""
    from freeze_omni.decoder.generator import step_many

    dec = make_decoder(**kw)
    g = torch.Generator().manual_seed(4)
    segs = [(torch.randn(n, 32, generator=g), torch.randn(p, 32, generator=g), lim)
            for n, p, lim in ((4, 3, 25), (6, 2, 9), (2, 5, 17))]

    def fresh():
        rows = []
        for i, (emb, hid, lim) in enumerate(segs):
            gen = SpeechGenerator(dec, cfg=GenerationConfig(top_k=3, max_tokens=lim, filter_special=True), seed=i)
            state = gen.start(emb, hid, max_tokens=lim)
            for _ in range(i * 2):  # different cache lengths
                gen.step(state)
            rows.append((gen, state))
        return rows

    alone, together = fresh(), fresh()
    for gen, state in alone:
        while gen.step(state) is not None:
            pass
    while not all(state.done for _, state in together):
        step_many(together)
    for (_, a), (_, b) in zip(alone, together):
        assert a.tokens == b.tokens and a.position == b.position and len(a.tokens) > 0
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)

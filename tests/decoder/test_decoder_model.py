"""SpeechDecoder: upstream names and shapes, LLM mapping, training mask, learning, ablation flags."""

import pytest
import torch

from freeze_omni.decoder.model import (
    DecoderConfig, KVCache, SpeechDecoder, build_decoder_config, decoder_mask, decoder_tiny_en, decoder_upstream,
)


def test_upstream_preset_state_dict_matches_the_release_layout():
    with torch.device("meta"):  # names and shapes only; no 660 MB of weights
        dec = SpeechDecoder(decoder_upstream())
    sd = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert sd["embedding.weight"] == (1028, 896)
    assert sd["norm.weight"] == (896,)
    assert sd["out_fnn.weight"] == (1028, 896) and sd["out_fnn.bias"] == (1028,)
    for stack, n in (("layers_pre_nn", 2), ("layers", 4), ("layers_prefix", 4)):
        for i in range(n):
            p = f"{stack}.{i}."
            for proj in "qkvo":
                assert sd[p + f"self_attn.{proj}_proj.weight"] == (896, 896)
            assert sd[p + "mlp.gate_proj.weight"] == sd[p + "mlp.up_proj.weight"] == (4864, 896)
            assert sd[p + "mlp.down_proj.weight"] == (896, 4864)
            assert sd[p + "input_layernorm.weight"] == sd[p + "post_attention_layernorm.weight"] == (896,)
        assert f"{stack}.{n}.input_layernorm.weight" not in sd
    families = {k.split(".")[0] for k in sd}
    assert families == {"embedding", "layers_pre_nn", "layers", "layers_prefix", "norm", "out_fnn"}
    assert not any("inv_freq" in k for k in sd)  # rotary buffers are non-persistent, as upstream
    assert sum(v.numel() for v in dec.parameters()) == pytest.approx(164.7e6, rel=1e-3)  # facts §1.7


def test_tiny_en_preset_and_config_validation():
    cfg = decoder_tiny_en()
    assert cfg.llm_map == "project" and cfg.llm_hidden == 576 and cfg.vocab_size == 1028
    assert (cfg.bos_id, cfg.sos_id, cfg.eos_id, cfg.pad_id) == (1024, 1025, 1026, 1027)
    with torch.device("meta"):
        dec = SpeechDecoder(cfg)
    assert 8e6 < dec.num_parameters() < 11e6
    assert DecoderConfig.from_dict(cfg.to_dict()) == cfg
    assert build_decoder_config({"preset": "tiny_en", "n_layers": 4}, llm_hidden=960).llm_hidden == 960
    with pytest.raises(ValueError, match="divisible"):
        DecoderConfig(llm_hidden=576, d_model=256, n_heads=4, llm_map="split")
    with pytest.raises(ValueError, match="n_prefix"):
        DecoderConfig(n_layers=2, n_prefix=3)
    with pytest.raises(ValueError, match="unknown decoder config"):
        DecoderConfig.from_dict({"nope": 1})


def test_split_and_project_mapping(make_decoder):
    x = torch.randn(2, 3, 64)
    lens = torch.tensor([3, 1])
    split = make_decoder(llm_hidden=64, llm_map="split")  # 64 = 2 x 32
    assert split.cfg.split_factor == 2 and not hasattr(split, "input_proj")
    y, ylens = split.map_llm(x, lens, "text")
    assert y.shape == (2, 6, 32) and ylens.tolist() == [6, 2]
    assert torch.equal(y[0, 2], x[0, 1, :32]) and torch.equal(y[0, 3], x[0, 1, 32:])  # consecutive pieces
    proj = make_decoder(llm_hidden=64, llm_map="project")
    y, ylens = proj.map_llm(x, lens, "prefix")
    assert y.shape == (2, 3, 32) and ylens.tolist() == [3, 1]
    assert torch.allclose(y, proj.prefix_proj(x))
    with pytest.raises(ValueError, match="width"):
        proj.map_llm(torch.randn(1, 2, 16), torch.tensor([2]), "text")


def test_training_mask():
    # one row: prefix 1 (of 2 padded), semantic 2 (of 3), SOS+codes 3 (of 3)
    m = decoder_mask(torch.tensor([1]), torch.tensor([2]), torch.tensor([3]), P=2, S=3, C=3)[0]
    assert m.shape == (6, 8)
    sem, code = m[:3], m[3:]
    assert not sem[:, 5:].any()  # semantic rows never see codes
    assert sem[:, 0].all() and not sem[:, 1].any()  # real prefix seen, padded prefix not
    assert sem[:, 2:4].all() and not sem[:, 4].any()  # every real semantic position, not the padded one
    assert code[:, 0].all() and code[:, 2:4].all() and not code[:, 4].any()
    assert torch.equal(code[:, 5:], torch.tril(torch.ones(3, 3, dtype=torch.bool)))  # codes are causal


def test_loss_decreases_on_a_tiny_overfit(make_decoder):
    from freeze_omni.llm.testing import tiny_llm

    llm = tiny_llm()
    dec = make_decoder(llm_hidden=llm.hidden_size, use_prefix=True).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 200, (2, 6), generator=g)
    batch = {"text_embeds": llm.embed(ids), "text_lens": torch.tensor([6, 4]),
             "codes": torch.randint(0, 16, (2, 10), generator=g), "code_lens": torch.tensor([10, 7]),
             "prefix": torch.randn(2, 5, llm.hidden_size, generator=g), "prefix_lens": torch.tensor([5, 3])}
    batch["codes"][1, 7:] = dec.cfg.pad_id
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        out = dec(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    assert out["loss"].item() < 0.3 * first
    assert out["acc"].item() > 0.8 and set(out) >= {"loss", "acc", "eos_acc"}
    assert dec.layers_prefix[0].self_attn.k_proj.weight.grad is not None  # the prefix decoder gets gradients


@pytest.mark.parametrize("flags", [dict(use_prefix=False), dict(use_pre_nn=False), dict(n_prefix=1)])
def test_ablation_flags(make_decoder, flags):
    dec = make_decoder(**flags)
    names = {k.split(".")[0] for k in dec.state_dict()}
    assert ("layers_prefix" in names) == dec.cfg.use_prefix
    assert ("layers_pre_nn" in names) == dec.cfg.use_pre_nn
    batch = {"text_embeds": torch.randn(1, 4, 32), "text_lens": torch.tensor([4]),
             "codes": torch.randint(0, 16, (1, 5)), "code_lens": torch.tensor([5]),
             "prefix": torch.randn(1, 3, 32), "prefix_lens": torch.tensor([3])}
    out = dec(batch)
    assert torch.isfinite(out["loss"])


def test_recipe_configs_build():
    from pathlib import Path

    import yaml

    from freeze_omni.decoder.model import GuidedAttention
    from freeze_omni.train.config import TrainConfig

    conf = Path(__file__).resolve().parents[2] / "recipes" / "tiny-en" / "conf"
    for name in ("decoder", "prefix"):
        cfg = yaml.safe_load((conf / f"{name}.yaml").read_text())
        TrainConfig.from_dict(cfg["train"])
        assert set(cfg) <= {"init_bundle", "codec_bundle", "llm", "system_prompt", "decoder", "train_pre_nn", "data",
                            "train", "export", "guided_attention"}
        GuidedAttention.from_dict(cfg.get("guided_attention"))
        dcfg = build_decoder_config(cfg["decoder"] if name == "decoder" else {"preset": "tiny_en", **cfg["decoder"]},
                                    llm_hidden=576, codebook_size=1024)
        with torch.device("meta"):
            SpeechDecoder(dcfg)


def test_kv_cache_appends_in_place_without_autograd_and_concatenates_with_it():
    """KVCache: without autograd the slot grows in reserved room (past several blocks) and always equals the
    concatenation of what was appended; with autograd, gradients reach every appended key."""
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(2, 4, t, 8, generator=g) for t in (3, 1, 1, KVCache.ROOM, 2, 1)]
    cache = KVCache(1)
    with torch.inference_mode():
        for i, p in enumerate(parts):
            k, v = cache.update(p, -p, 0)
            torch.testing.assert_close(k, torch.cat(parts[:i + 1], dim=2), rtol=0, atol=0)
            torch.testing.assert_close(v, -k, rtol=0, atol=0)
    assert cache.length(0) == sum(p.shape[2] for p in parts)
    leaves = [p.clone().requires_grad_(True) for p in parts[:3]]
    cache = KVCache(1)
    for p in leaves:
        k, _ = cache.update(p, p, 0)
    k.sum().backward()
    assert all(p.grad is not None and torch.equal(p.grad, torch.ones_like(p)) for p in leaves)


def test_attention_probs_match_the_layer_and_the_guide_scores_diagonals(make_decoder):
    from freeze_omni.decoder.model import GuidedAttention, attention_probs, guided_attention_loss

    dec = make_decoder(text_input="phonemes", use_prefix=False)
    layer = dec.layers[0]
    x = torch.randn(1, 6, dec.cfg.d_model)
    pos = torch.arange(6)[None]
    pe = dec.rotary_emb(x, pos)
    full = torch.zeros(1, 1, 6, 6)  # an explicit mask, as every pass of the decoder has (None would be causal)
    p = attention_probs(layer, x, pe, full)
    # the probabilities reproduce the layer's own attention output
    attn = layer.self_attn
    v = attn.v_proj(layer.input_layernorm(x)).view(1, 6, -1, attn.head_dim).transpose(1, 2)
    want = attn.o_proj((p @ v).transpose(1, 2).reshape(1, 6, -1))
    got, _ = attn(layer.input_layernorm(x), position_embeddings=pe, attention_mask=full)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)

    # 4 code rows reading 4 text positions: the diagonal costs ~0, the anti-diagonal much more
    S, C, L = 5, 4, 4
    diag = torch.zeros(1, 1, S + C, S + C)
    anti = torch.zeros(1, 1, S + C, S + C)
    for c in range(C):
        diag[0, 0, S + c, 1 + c] = 1.0
        anti[0, 0, S + c, 1 + L - 1 - c] = 1.0
    sem, rows = torch.tensor([1 + L]), torch.tensor([C])
    assert guided_attention_loss(diag, sem, rows, S) < 0.01 < 0.5 < guided_attention_loss(anti, sem, rows, S)

    # in training, the term is reported and added; weight 0 (or no section) disables it
    g = torch.Generator().manual_seed(0)
    batch = {"text_ids": torch.randint(2, dec.cfg.n_symbols, (2, 5), generator=g), "text_lens": torch.tensor([5, 3]),
             "codes": torch.randint(0, 16, (2, 7), generator=g), "code_lens": torch.tensor([7, 4])}
    guide = GuidedAttention(weight=2.0, layers=(0, 1), heads=1)
    out = dec(batch, guide)
    torch.testing.assert_close(out["loss"], out["ce"] + 2.0 * out["guide"])
    out["loss"].backward()
    assert dec.layers[0].self_attn.q_proj.weight.grad is not None
    assert GuidedAttention.from_dict(None) is None and GuidedAttention.from_dict({"weight": 0}) is None
    assert "guide" not in dec(batch)


def test_code_noise_corrupts_the_fed_history_only(make_decoder):
    from freeze_omni.train.decoder import DecoderStage

    dec = make_decoder(text_input="phonemes", use_prefix=False)
    g = torch.Generator().manual_seed(1)
    batch = {"text_ids": torch.randint(2, dec.cfg.n_symbols, (2, 5), generator=g), "text_lens": torch.tensor([5, 3]),
             "codes": torch.randint(0, 16, (2, 9), generator=g), "code_lens": torch.tensor([9, 6])}
    same, _ = dec.compute_logits({**batch, "input_codes": batch["codes"]})
    plain, targets = dec.compute_logits(batch)
    torch.testing.assert_close(same, plain)
    stage = DecoderStage(dec, llm=None, stage="decoder", code_noise=1.0)
    seen = []
    dec.compute_logits = lambda b, capture=None: seen.append(b) or (plain, targets)  # record what the decoder gets
    stage.train()(batch)
    assert torch.equal(seen[-1]["codes"], batch["codes"])  # targets untouched
    assert not torch.equal(seen[-1]["input_codes"], batch["codes"]) and int(seen[-1]["input_codes"].max()) < 16
    stage.eval()(batch)
    assert "input_codes" not in seen[-1]  # evaluation feeds the true history

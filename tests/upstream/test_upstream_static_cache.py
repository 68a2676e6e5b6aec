"""The GPU path's static-cache stack computes what transformers' Qwen2 computes (prefill + cached steps), so the
benchmark times the real function (GQA, QKV biases, RoPE, RMSNorm, SwiGLU)."""

import torch

from freeze_omni.llm.static_cache import LLM, QWEN2_7B, Graphed, Shape, hf_state_dict_to_static
from freeze_omni.llm.testing import tiny_causal_lm


def test_static_cache_llm_equals_hf_qwen2():
    hf = tiny_causal_lm("qwen2", hidden_size=32)
    shape = Shape.from_hf_config(hf.config)
    assert shape.qkv_bias and (shape.heads, shape.kv_heads) == (4, 2)
    ours = LLM(shape).eval()
    ours.load_state_dict(hf_state_dict_to_static(hf.state_dict()), strict=True)
    ids = torch.randint(0, 259, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(ids)
        cache = ours.body.new_cache(2, 16, "cpu", torch.float32)
        pos = torch.arange(6)[None].expand(2, -1)
        h = ours(ours.embed(ids[:, :6]), pos, cache)
        logits = [ours.head(h).float()]
        inputs = [torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long)]  # static buffers
        step = Graphed(lambda t, p: ours.step(t, p, cache), inputs, enabled=False)
        for i in range(6, 10):
            _, lg = step(ids[:, i:i + 1], torch.full((2, 1), i))
            logits.append(lg[:, None])
    torch.testing.assert_close(torch.cat(logits, 1), ref.logits, atol=1e-4, rtol=1e-4)


def test_qwen2_7b_shape_matches_its_config():
    from transformers import Qwen2Config

    cfg = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, rms_norm_eps=1e-6)
    assert Shape.from_hf_config(cfg) == QWEN2_7B


def test_benchmark_decoder_path_equals_the_speech_generator():
    """The benchmark's static-cache speech decoder (prefix slots, pre-net, bidirectional shared pass, separate
    RoPE counters) gives the same first-token logits as our SpeechDecoder + SpeechGenerator."""
    import argparse
    import importlib.util
    import sys
    from pathlib import Path

    from freeze_omni.decoder.generator import SpeechGenerator
    from freeze_omni.decoder.model import DecoderConfig, SpeechDecoder
    from freeze_omni.llm.static_cache import _HF_LAYER_NAMES

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_latency.py"
    spec = importlib.util.spec_from_file_location("gpu_latency_dec", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_latency_dec"] = mod
    spec.loader.exec_module(mod)
    args = argparse.Namespace(tiny=True, no_graphs=True, dtype="fp32")
    bench = mod.Bench(args, torch.device("cpu"))
    torch.manual_seed(0)
    dec = SpeechDecoder(DecoderConfig(llm_hidden=128, d_model=32, n_heads=2, ffn=64, n_layers=4, n_pre=2,
                                      n_prefix=4, codebook_size=1024, dropout=0.0)).eval()
    stacks = {"layers_pre_nn": bench.pre, "layers_prefix": bench.prefix, "layers": bench.shared}
    with torch.no_grad():
        for key, t in dec.state_dict().items():
            stack, rest = key.split(".", 1)
            if stack in stacks:
                i, rest = rest.split(".", 1)
                module, param = rest.rsplit(".", 1)
                getattr(stacks[stack].layers[int(i)], _HF_LAYER_NAMES[module]).get_parameter(param).copy_(t)
        bench.dec_embed.weight.copy_(dec.embedding.weight)
        bench.dec_norm.weight.copy_(dec.norm.weight)
        bench.dec_out.load_state_dict(dec.out_fnn.state_dict())
        hidden, text = torch.randn(1, 3, 128), torch.randn(1, 5, 128)
        ref = SpeechGenerator(dec).start(text[0], hidden[0]).logits
        bench.setup(1, 16, 64)
        slot = bench.decoder_prefill(hidden, text)
        sos = torch.full((1, 1), 1025)
        ours = bench.dec_step(sos, torch.full((1, 1), slot - 12), torch.full((1, 1), slot))[0]
    assert slot == 12 + 21  # prefix 3 x 4, semantic BOS + 5 x 4
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)

"""The upstream codec decoder (TiCodec generator + fixed global tokens): geometry, weight-norm folding, where the
global feature enters, the receptive-field bound, and streaming through our window decoder."""

import pytest
import torch
from torch import nn

from freeze_omni.codec.streaming import StreamingCodecDecoder, StreamingConfig
from freeze_omni.codec.ticodec import TiCodec, TiCodecConfig, fold_weight_norm

TINY = dict(upsample_initial_channel=64, code_dim=32, global_code_dim=2)  # 64 -> 32 -> 16 (global) -> 8 -> 4


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    codec = TiCodec(TiCodecConfig(**TINY)).eval()
    with torch.no_grad():
        for p in codec.parameters():
            p.normal_(0, 0.1)
    return codec


def test_upstream_geometry():
    cfg = TiCodecConfig()
    assert (cfg.hop, cfg.sampling_rate, cfg.global_dim) == (600, 24000, 128)
    assert cfg.stage_channels == [256, 128, 64, 32] and cfg.global_stage == 1
    with torch.device("meta"):
        sd = TiCodec(cfg).state_dict()
    assert sd["quantizer.quantizer_modules.0.embedding.weight"].shape == (1024, 512)
    assert sd["quantizer.quantizer_modules_globaltokens.7.embedding.weight"].shape == (1024, 16)
    assert sd["generator.ups.1.weight"].shape == (256, 128, 11)  # ConvTranspose1d: [in, out, k]
    assert "generator.resblocks.11.convs2.2.weight" in sd and "global_tokens" not in sd
    with pytest.raises(ValueError, match="no generator stage has 100 channels"):
        TiCodecConfig(global_code_num=4, global_code_dim=25, global_tokens=(1, 2, 3, 4))


def test_decode_shape_range_and_token_check(tiny):
    tokens = torch.randint(0, 1024, (2, 7))
    wave = tiny.decode(tokens)
    assert wave.shape == (2, 7 * 600) and wave.abs().max() <= 1
    with pytest.raises(ValueError, match="codec tokens must lie in"):
        tiny.decode(torch.tensor([[5, 1024]]))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.nn.utils.weight_norm: the release's own form
@pytest.mark.parametrize("legacy", [True, False])
def test_fold_equals_weight_normed_convolutions(legacy):
    wn = nn.utils.weight_norm if legacy else nn.utils.parametrizations.weight_norm
    for conv in (nn.Conv1d(4, 6, 3), nn.ConvTranspose1d(6, 4, 5, stride=2)):
        m = wn(conv)
        folded = fold_weight_norm(m.state_dict())
        assert sorted(folded) == ["bias", "weight"]
        torch.testing.assert_close(folded["weight"], m.weight)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_released_generator_file_decodes_like_weight_normed_modules(release):
    """Fold the fake release's weight-normed generator and compare with the same generator run with live
    weight-norm modules loaded from the raw ``weight_g`` / ``weight_v``."""
    import json

    root, _ = release
    raw = torch.load(root / "codec/final.pt", weights_only=True)
    cfg = TiCodecConfig.from_model_json(json.loads((root / "codec/model.json").read_text()), code_dim=32,
                                        global_code_dim=2)
    codec = TiCodec(cfg).eval()
    codec.generator.load_state_dict(fold_weight_norm(raw["generator"]))
    codec.quantizer.load_state_dict(raw["quantizer"])
    ref = TiCodec(cfg).eval()
    for m in ref.generator.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            nn.utils.weight_norm(m)
    ref.generator.load_state_dict(raw["generator"])
    ref.quantizer.load_state_dict(raw["quantizer"])
    tokens = torch.randint(0, 1024, (1, 5))
    torch.testing.assert_close(codec.decode(tokens), ref.decode(tokens), atol=1e-5, rtol=1e-4)


def test_global_feature_enters_after_the_stage_with_its_width(tiny):
    """The input of stage 2's upsampler is lrelu(mean of stage 1's resblocks + global feature)."""
    gen, seen = tiny.generator, {}
    hooks = [gen.resblocks[3 + j].register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(j, o))
             for j in range(3)]
    hooks.append(gen.ups[2].register_forward_pre_hook(lambda m, i: seen.__setitem__("in", i[0])))
    tiny.decode(torch.randint(0, 1024, (1, 3)))
    for h in hooks:
        h.remove()
    g = tiny.quantizer.embed_global(tiny.global_tokens)  # [1, 16]
    stage = (seen[0] + seen[1] + seen[2]) / 3
    torch.testing.assert_close(seen["in"], nn.functional.leaky_relu(stage + g[..., None], 0.1))
    assert g.shape == (1, 16)


def test_receptive_field_bound_holds(tiny):
    tokens = torch.randint(0, 1024, (1, 40), generator=torch.Generator().manual_seed(3))
    other = tokens.clone()
    other[0, 20] = (other[0, 20] + 1) % 1024
    diff = (tiny.decode(tokens) - tiny.decode(other)).abs().reshape(40, 600).amax(1)
    changed = torch.nonzero(diff > 1e-6).flatten()
    assert changed.numel() > 0 and int((changed - 20).abs().max()) <= tiny.receptive_tokens


@pytest.mark.parametrize("splice", [False, True])
def test_streaming_window_decoder_runs_ticodec(tiny, splice):
    """Upstream's windows (first 20 + 10 context, then 40 with 10 either side) keep every sample exactly once;
    without splicing the first window's audio comes after 30 tokens."""
    stream = StreamingCodecDecoder(tiny, StreamingConfig(splice=splice, first_threshold=1.1, threshold=1.1))
    tokens = torch.randint(0, 1024, (95,), generator=torch.Generator().manual_seed(0)).tolist()
    out = [stream.push(tokens[i:i + 1]) for i in range(len(tokens))]
    first = next(i for i, o in enumerate(out) if len(o))
    assert first == 29 if not splice else first >= 29
    total = sum(len(o) for o in out) + len(stream.flush())
    assert total == 95 * 600

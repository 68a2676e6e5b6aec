"""`freeze-omni convert`: every upstream tensor lands on our modules by name; misfits are reported by name."""

import json
import shutil

import pytest
import torch
import yaml

from freeze_omni.cli import main
from freeze_omni.upstream.convert import load_upstream
from freeze_omni.upstream.release import UpstreamError


def test_convert_maps_every_tensor(converted):
    out, report = converted
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    assert report["ignored"] == {"audiollm/final.pt": 2, "codec/final.pt": 2}  # llm_decoder.*, codec encoder
    assert set(report["components"]) == {"encoder", "bridge", "decoder", "codec"}
    cfg = yaml.safe_load((out / "bundle.yaml").read_text())
    assert cfg["encoder"]["family"] == "upstream" and cfg["encoder"]["upstream_pos_lag"] is True
    assert cfg["bridge"]["upstream_left_pad"] is True and cfg["bridge"]["n_states"] == 4
    assert cfg["llm"]["framing"] == "qwen2_upstream"
    assert cfg["llm"]["system_prompt"] == "You are a helpful assistant."
    assert cfg["decoder"]["llm_map"] == "split" and cfg["decoder"]["n_pre"] == 1
    assert cfg["codec"]["kind"] == "ticodec" and cfg["codec"]["global_tokens"] == [473, 975, 419, 219, 565, 121,
                                                                                    550, 616]
    assert cfg["generation"]["top_k"] == 2 and cfg["streaming"]["first_chunk"] == 20
    assert cfg["streaming"]["first_threshold"] == 0.1 and cfg["streaming"]["threshold"] == 0.015
    assert cfg["tts_lang"] == "upstream" and cfg["upstream"]["server"]["decoder_N"] == 2401


def test_converted_tensors_equal_the_release(release, converted):
    """Values survive the mapping (bf16 in, bf16 out; CMVN in fp32)."""
    from freeze_omni.bundle import Bundle
    from freeze_omni.codec.ticodec import fold_weight_norm

    root, _ = release
    out, _ = converted
    b = Bundle(out)
    audio = torch.load(root / "audiollm/final.pt", weights_only=True)
    enc, br = b.tensors("encoder"), b.tensors("bridge")
    pairs = [(enc["encoders.1.self_attn.linear_pos.weight"],
              audio["encoder.enc.1.encoders.1.self_attn.linear_pos.weight"]),
             (enc["front.core.conv.2.weight"], audio["encoder.enc.0.core.conv.2.weight"]),
             (enc["front.embed.1.bias"], audio["encoder.enc.1.embed.1.bias"]),
             (enc["front.cmvn_istd"], audio["encoder.global_cmvn.istd"]),
             (br["adapter.conv1d2.weight"], audio["adpter.conv1d2.weight"]),
             (br["bridge.predictor_head.proj.weight"], audio["predictor_head.weight"]),
             (br["bridge.prompt_embeddings.weight"], audio["prompt_embeddings.weight"])]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=0)
    dec = torch.load(root / "decoder/final.pt", weights_only=True)["model"]
    torch.testing.assert_close(b.tensors("decoder")["layers_prefix.1.mlp.up_proj.weight"],
                               dec["layers_prefix.1.mlp.up_proj.weight"].float())
    gen = fold_weight_norm(torch.load(root / "codec/final.pt", weights_only=True)["generator"])
    torch.testing.assert_close(b.tensors("codec")["generator.resblocks.4.convs1.2.weight"],
                               gen["resblocks.4.convs1.2.weight"].to(torch.bfloat16).float())


def _damaged(release, tmp_path):
    root, _ = release
    bad = tmp_path / "checkpoints"
    shutil.copytree(root, bad)
    a = torch.load(bad / "audiollm/final.pt", weights_only=True)
    del a["adpter.bn2.bias"]
    a["encoder.enc.1.encoders.0.self_attn.extra_gate"] = torch.zeros(3)
    a["prompt_embeddings.weight"] = torch.zeros(24, 128)
    torch.save(a, bad / "audiollm/final.pt")
    d = torch.load(bad / "decoder/final.pt", weights_only=True)
    del d["model"]["layers.0.mlp.up_proj.weight"]
    torch.save(d["model"], bad / "decoder/final.pt")  # also: a bare state dict (no "model" key) is accepted
    c = torch.load(bad / "codec/final.pt", weights_only=True)
    del c["generator"]["ups.1.weight_v"]
    torch.save(c, bad / "codec/final.pt")
    return bad


def test_missing_and_unexpected_tensors_are_named(release, tmp_path):
    bad = _damaged(release, tmp_path)
    r = load_upstream(bad, release[1]).report
    assert not r.ok
    assert "audiollm/final.pt:adpter.bn2.bias" in r.missing
    assert "decoder/final.pt:layers.0.mlp.up_proj.weight" in r.missing
    assert "codec/final.pt:generator.ups.1.weight (weight_g + weight_v)" in r.missing
    assert len(r.missing) == 3
    assert r.unexpected == ["audiollm/final.pt:encoder.enc.1.encoders.0.self_attn.extra_gate",
                            "codec/final.pt:generator.ups.1.weight_g"]
    assert r.mismatched == ["audiollm/final.pt:prompt_embeddings.weight shape [24, 128], expected [25, 128]"]


def test_cli_refuses_to_write_a_misfit(release, tmp_path, capsys):
    bad = _damaged(release, tmp_path)
    out = tmp_path / "bundle"
    assert main(["convert", str(bad), "--llm", str(release[1]), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["bundle"] is None and "audiollm/final.pt:adpter.bn2.bias" in result["missing"]
    assert "adpter.bn2.bias" in captured.err and not out.exists()


def test_wrong_llm_and_incomplete_folder_are_clear_errors(release, tmp_path):
    root, llm = release
    other = tmp_path / "llm"
    shutil.copytree(llm, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["hidden_size"] = 64
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UpstreamError, match="hidden_size 64 .expected 128."):
        load_upstream(root, other)
    partial = tmp_path / "partial"
    shutil.copytree(root, partial)
    (partial / "server.json").unlink()
    with pytest.raises(UpstreamError, match="missing \\['server.json'\\]"):
        load_upstream(partial, llm)

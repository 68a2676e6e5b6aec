"""A fake upstream release (random weights, upstream names and layout) + a tiny Qwen2 LLM folder, and its
conversion through the command line; shared by the upstream tests (built once per session)."""

import json

import pytest
import torch


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """``(checkpoints dir, llm dir)``: tiny Qwen2 with hidden 128 = 4 x 32 (the fake decoder's width)."""
    from freeze_omni.llm.testing import tiny_causal_lm, tiny_tokenizer
    from freeze_omni.upstream.testing import write_fake_release

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("upstream")
    root = write_fake_release(d / "checkpoints")
    tok = tiny_tokenizer()
    tiny_causal_lm("qwen2", vocab_size=len(tok), hidden_size=128).save_pretrained(d / "llm")
    tok.save_pretrained(d / "llm")
    return root, d / "llm"


@pytest.fixture(scope="session")
def converted(release, tmp_path_factory):
    """``(bundle dir, the convert command's JSON)`` via ``freeze-omni convert --json``."""
    import contextlib
    import io

    from freeze_omni.cli import main

    root, llm = release
    out = tmp_path_factory.mktemp("converted") / "bundle"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["convert", str(root), "--llm", str(llm), "--out", str(out), "--json"])
    assert rc == 0, buf.getvalue()
    return out, json.loads(buf.getvalue().strip().splitlines()[-1])

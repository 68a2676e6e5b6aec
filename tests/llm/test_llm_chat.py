"""Chat framing derived from chat templates (ChatML exact; other layouts; templates that must be refused)."""

from __future__ import annotations

import pytest

from freeze_omni.llm.chat import ChatFraming
from freeze_omni.llm.testing import CHATML_TEMPLATE, tiny_tokenizer

# SmolLM2's template: injects a default system prompt only when the conversation has none (we always give one).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Always prepends its own system turn: our system prompt would not be the first thing the LLM reads.
INJECTING_TEMPLATE = "{{ '<|im_start|>system\\nYou are a default bot.<|im_end|>\\n' }}" + CHATML_TEMPLATE
# Llama-3-like layout: the end-of-turn marker is not followed by a newline; contents are trimmed.
LLAMA3_TEMPLATE = (
    "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ m['content'] }}{% endfor %}"
)


def test_chatml_exact_strings():
    f = ChatFraming.from_tokenizer(tiny_tokenizer())
    assert f.system_prefix == "<|im_start|>system\n"
    assert f.user_prefix == "<|im_end|>\n<|im_start|>user\n"
    assert f.assistant_prefix == "<|im_end|>\n<|im_start|>assistant\n"
    assert f.eot == "<|im_end|>"
    assert f == ChatFraming.chatml() == ChatFraming.qwen2_upstream()


def test_default_system_only_when_absent_is_fine():
    assert ChatFraming.from_tokenizer(tiny_tokenizer(SMOLLM2_TEMPLATE)) == ChatFraming.chatml()


def test_injected_default_system_prompt_raises():
    with pytest.raises(ValueError, match="default system prompt.*rendered"):
        ChatFraming.from_tokenizer(tiny_tokenizer(INJECTING_TEMPLATE))


def test_unsplittable_templates_raise():
    with pytest.raises(ValueError, match="cannot render"):
        ChatFraming.from_tokenizer(tiny_tokenizer(NO_SYSTEM_TEMPLATE))
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        ChatFraming.from_tokenizer(tok)


def test_other_layout():
    f = ChatFraming.from_tokenizer(tiny_tokenizer(LLAMA3_TEMPLATE))
    assert f == ChatFraming(system_prefix="<|start_header_id|>system<|end_header_id|>\n\n",
                            user_prefix="<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
                            assistant_prefix="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                            eot="<|eot_id|>")


def test_text_matches_the_template():
    tok = tiny_tokenizer()
    f = ChatFraming.from_tokenizer(tok)
    system, turns = "Be brief.", [("Hi!", "Hello."), ("Capital of France?", "Paris."), ("And Spain?", None)]
    msgs = [{"role": "system", "content": system}]
    for q, a in turns:
        msgs.append({"role": "user", "content": q})
        if a is not None:
            msgs.append({"role": "assistant", "content": a})
    assert f.text(system, turns) == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # A closed last answer ends with the eot alone; the template adds the separator ("\n") that in our framing
    # belongs to the next user_prefix.
    closed = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=False)
    assert f.text(system, turns[:2]) + "\n" == closed
    with pytest.raises(ValueError):
        f.text(system, [("q", None), ("q2", None)])

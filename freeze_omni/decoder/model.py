"""The speech decoder of output stages 2 and 3 (upstream ``LLM2TTSCodecAR``, ``reference/freeze_omni_facts.md`` §1.7).

One text segment becomes codec tokens through three stacks of HF Llama layers (upstream module names, so the
released ``decoder/final.pt`` loads by name):

* ``layers_prefix`` (NAR prefix decoder, stage 3): runs bidirectionally over the LLM final hidden states that
  produced the segment's tokens; its per-layer K/V become the *prefix* of the matching shared layer's KV cache
  (prefix layer ``i`` -> shared layer ``i``; shared layers above ``n_prefix`` get no prefix).
* ``layers_pre_nn`` (NAR pre-network): runs bidirectionally over the LLM *input embeddings* of the segment text.
* ``layers`` (shared NAR/AR decoder): one bidirectional pass over ``[BOS + pre-net output]`` (the "semantic"
  part), then autoregressive codec tokens from SOS, each seeing prefix + semantic + earlier codes.

LLM vectors (width ``H``) reach the decoder width ``d`` by ``llm_map``: ``"split"`` cuts each vector into
``k = H / d`` consecutive ``d``-vectors (upstream: 3584 = 4 x 896, so every LLM token is 4 decoder positions, no
parameters) or ``"project"`` (one ``Linear(H, d)`` per input kind: ``input_proj`` for text embeddings,
``prefix_proj`` for hidden states; one position per token; the default for small LLMs such as SmolLM2's 576).

RoPE counters are separate (parity quirk, facts §8 item 9): the prefix stack uses positions ``0..P-1``, the
pre-network ``0..L-1``, the shared stack ``0..S-1`` for ``S = 1 + L`` semantic positions and ``S, S+1, ...`` for
``[SOS, c1, c2, ...]``. Token ids: codes ``0..codebook-1``, then BOS, SOS, EOS, PAD (1024..1027 upstream).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding,
                                                      apply_rotary_pos_emb)

from freeze_omni.decoder.phonemes import DEFAULT_SYMBOLS, N_SPECIAL, PAD
from freeze_omni.ragged import append_in_room, ragged_layers

LLM_MAPS = ("split", "project")
TEXT_INPUTS = ("llm", "phonemes")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass
class DecoderConfig:
    """Sizes of the speech decoder; ``vocab_size = codebook_size + 4`` (BOS, SOS, EOS, PAD after the codes)."""

    llm_hidden: int = 3584  # H: width of the LLM's embeddings and hidden states
    d_model: int = 896
    n_heads: int = 14
    ffn: int = 4864
    n_layers: int = 4  # shared NAR/AR layers
    n_pre: int = 2  # pre-network layers
    n_prefix: int = 4  # prefix-decoder layers (<= n_layers)
    codebook_size: int = 1024
    llm_map: str = "split"  # one of LLM_MAPS
    dropout: float = 0.1  # input dropout and attention dropout (training only)
    use_prefix: bool = True  # build the prefix decoder (stage 3); False: ablation "w/o prefix" / stage 2
    use_pre_nn: bool = True  # build the pre-network; False: ablation "w/o pre-network"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_positions: int = 2048
    attn_implementation: str = "sdpa"  # masks are always explicit, so "sdpa" == "eager" (upstream) numerically
    text_input: str = "llm"  # "llm": the LLM's token embeddings (upstream); "phonemes": espeak-ng IPA symbols
    symbols: str = ""  # phoneme inventory after PAD/UNK (``phonemes.DEFAULT_SYMBOLS`` when empty)
    phoneme_voice: str = "en-us"  # espeak-ng voice of the phonemizer

    def __post_init__(self) -> None:
        if self.llm_map not in LLM_MAPS:
            raise ValueError(f"llm_map must be one of {LLM_MAPS}, got {self.llm_map!r}")
        if self.text_input not in TEXT_INPUTS:
            raise ValueError(f"text_input must be one of {TEXT_INPUTS}, got {self.text_input!r}")
        if self.text_input == "phonemes" and not self.symbols:
            self.symbols = DEFAULT_SYMBOLS
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.n_heads} heads of even size")
        if self.llm_map == "split" and self.llm_hidden % self.d_model:
            raise ValueError(f"llm_map 'split' needs llm_hidden ({self.llm_hidden}) divisible by d_model "
                             f"({self.d_model}); use llm_map 'project'")
        if self.n_layers < 1 or (self.use_pre_nn and self.n_pre < 1):
            raise ValueError("need n_layers >= 1 and, with the pre-network, n_pre >= 1")
        if self.use_prefix and not 1 <= self.n_prefix <= self.n_layers:
            raise ValueError(f"need 1 <= n_prefix <= n_layers, got {self.n_prefix} and {self.n_layers}")

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 4

    @property
    def bos_id(self) -> int:
        return self.codebook_size

    @property
    def sos_id(self) -> int:
        return self.codebook_size + 1

    @property
    def eos_id(self) -> int:
        return self.codebook_size + 2

    @property
    def pad_id(self) -> int:
        return self.codebook_size + 3

    @property
    def n_symbols(self) -> int:
        """Phoneme ids (PAD, UNK and the inventory); 0 with LLM text input."""
        return len(self.symbols) + N_SPECIAL if self.text_input == "phonemes" else 0

    @property
    def split_factor(self) -> int:
        """Decoder positions per LLM vector: ``H / d`` with ``"split"``, 1 with ``"project"``."""
        return self.llm_hidden // self.d_model if self.llm_map == "split" else 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecoderConfig":
        """Build from a plain dict (a YAML section); unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown decoder config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)


def decoder_upstream() -> DecoderConfig:
    """The released Freeze-Omni decoder: Qwen2-7B (3584) split into 4 x 896, 14 heads, 4 shared + 2 pre + 4 prefix
    layers (about 165 M parameters)."""
    return DecoderConfig()


def decoder_tiny_en(llm_hidden: int = 576) -> DecoderConfig:
    """The tiny-en decoder for SmolLM2-135M (576): d 256, 4 heads of 64 (upstream's head size), FFN 1024, 3 shared +
    2 pre + 3 prefix layers, ``"project"`` mapping; 9.2 M parameters (5.9 M trained in stage 2, 2.4 M in stage 3).

    Sized for a 2-core CPU: a batch of 8 utterances of ~3 s (~150 positions each) takes about a second per
    optimiser step, so a few hours give several thousand steps. 256 = 576 / 2.25 cannot split SmolLM2's vectors;
    a projection also lets stage 2 rescale the LLM's small-norm embedding rows. Every shared layer gets a prefix,
    as upstream; two pre-network layers keep the ablation's best setting (facts §5.2).
    """
    return DecoderConfig(llm_hidden=llm_hidden, d_model=256, n_heads=4, ffn=1024, n_layers=3, n_pre=2, n_prefix=3,
                         llm_map="project", dropout=0.1)


PRESETS = {"upstream": decoder_upstream, "tiny_en": decoder_tiny_en}


def build_decoder_config(spec: str | dict[str, Any] | None, llm_hidden: int | None = None,
                         codebook_size: int | None = None) -> DecoderConfig:
    """A preset name, ``{preset: NAME, ...overrides}`` or a full config dict -> `DecoderConfig`.

    ``llm_hidden`` (the frozen LLM's width) and ``codebook_size`` (the codec's) fill those fields unless the spec
    sets them.
    """
    spec = {"preset": spec} if isinstance(spec, str) else dict(spec or {"preset": "tiny_en"})
    preset = spec.pop("preset", None)
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown decoder preset {preset!r}; known: {sorted(PRESETS)}")
        base = PRESETS[preset]().to_dict()
    if llm_hidden is not None:
        base["llm_hidden"] = llm_hidden
    if codebook_size is not None:
        base["codebook_size"] = codebook_size
    return DecoderConfig.from_dict({**base, **spec})


# ----------------------------------------------------------------------------------------------------- masks
def lengths_mask(lens: torch.Tensor, T: int) -> torch.Tensor:
    """``[B]`` lengths -> ``[B, T]`` bool, True at real positions. ``lengths_mask([2, 0], 3)`` is
    ``[[1, 1, 0], [0, 0, 0]]``."""
    return torch.arange(T, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)


def decoder_mask(prefix_lens: torch.Tensor, sem_lens: torch.Tensor, code_lens: torch.Tensor,
                 P: int, S: int, C: int) -> torch.Tensor:
    """Which keys each shared-layer query may see, for the sequence ``[prefix P | BOS+semantic S | SOS+codes C]``.

    Queries are the ``S + C`` semantic and code rows (the prefix rows belong to the prefix stack). Semantic rows see
    the real prefix and every real semantic position; code row ``c`` sees the real prefix, every real semantic
    position and codes ``0..c``. Padded rows see the same as the last real row would (no empty rows, no NaN).

    Example (one row, prefix 1, semantic 2, codes 2; ``P, S, C = 1, 2, 2``; keys ``p s s c c``)::

        s0: 1 1 1 0 0
        s1: 1 1 1 0 0
        c0: 1 1 1 1 0
        c1: 1 1 1 1 1

    Args:
        prefix_lens, sem_lens, code_lens: ``[B]`` real lengths (``code_lens`` counts SOS + codes).
        P, S, C: padded section lengths.

    Returns:
        ``[B, S + C, P + S + C]`` bool, True = may attend.
    """
    B = sem_lens.shape[0]
    keys = torch.cat([lengths_mask(prefix_lens, P), lengths_mask(sem_lens, S),
                      torch.zeros(B, C, dtype=torch.bool, device=sem_lens.device)], dim=1)  # [B, P+S+C]
    mask = keys.unsqueeze(1).expand(B, S + C, P + S + C).clone()
    causal = torch.tril(torch.ones(C, C, dtype=torch.bool, device=sem_lens.device))  # [C, C]
    mask[:, S:, P + S:] = causal.unsqueeze(0) & lengths_mask(code_lens, C).unsqueeze(1)
    return mask


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, Q, K]`` bool -> ``[B, 1, Q, K]`` additive float mask (0 allowed, dtype-min blocked)."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min).unsqueeze(1)


# ------------------------------------------------------------------------------------------ guided attention
@dataclass
class GuidedAttention:
    """The guided-attention term of stage 2 (Tachibana et al. 2018, DC-TTS): the code rows of the first ``heads``
    heads of shared layers ``layers`` are pushed to read the text near the diagonal; ``weight`` 0 disables it."""

    weight: float = 0.0
    sigma: float = 0.2
    layers: tuple[int, ...] = (0, 1)
    heads: int = 2

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "GuidedAttention | None":
        if not d:
            return None
        g = cls(**{**d, "layers": tuple(d.get("layers", cls.layers))})
        return g if g.weight > 0 else None


def attention_probs(layer: nn.Module, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                    mask: torch.Tensor | None) -> torch.Tensor:
    """The softmax attention of a Llama layer's self-attention over its own input positions: ``[B, heads, T, T]``
    for ``x [B, T, d]`` (``mask``: the additive ``[B, 1, T, K]`` mask of the pass; its last ``T`` keys are these
    positions). Recomputed from the layer's weights (the fused kernels do not return it); no dropout."""
    attn = layer.self_attn
    B, T, _ = x.shape
    h = layer.input_layernorm(x)
    q = attn.q_proj(h).view(B, T, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(B, T, -1, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) * attn.scaling
    if mask is not None:
        scores = scores + mask[..., -T:]
    return scores.float().softmax(-1)


def guided_attention_loss(probs: torch.Tensor, sem_lens: torch.Tensor, code_rows: torch.Tensor, S: int,
                          sigma: float = 0.2) -> torch.Tensor:
    """How far from the diagonal the code rows read the text: the mean over real code rows and heads of
    ``sum_n p(n) * (1 - exp(-(n / L - t / C)^2 / (2 sigma^2)))``, with ``p`` a row's attention over the ``L`` text
    positions renormalised to sum to 1 (where else it looks is free), ``t / C`` the row's place among its ``C``
    code rows. 0 when every row reads exactly its share of the text; at most 1.

    Args:
        probs: ``[B, h, S + C_pad, S + C_pad]`` attention over ``[BOS + text | SOS + codes]``.
        sem_lens: ``[B]`` 1 + text length; ``code_rows``: ``[B]`` SOS + codes; ``S``: the padded semantic width.
    """
    p = probs[:, :, S:, 1:S]  # code rows -> text keys (BOS skipped)
    B, _, C, L = p.shape
    dev = p.device
    text_len = (sem_lens - 1).clamp(min=1)
    text = lengths_mask(sem_lens - 1, L)  # [B, L]
    rows = lengths_mask(code_rows, C).float()  # [B, C]
    p = p * text[:, None, None, :]
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-9)
    n = (torch.arange(L, device=dev) + 0.5)[None, :] / text_len[:, None]  # [B, L]
    t = (torch.arange(C, device=dev) + 0.5)[None, :] / code_rows.clamp(min=1)[:, None]  # [B, C]
    w = 1.0 - torch.exp(-((n[:, None, :] - t[:, :, None]) ** 2) / (2.0 * sigma ** 2))  # [B, C, L]
    per_row = (p * w[:, None]).sum(-1)  # [B, h, C]
    return (per_row * rows[:, None]).sum() / (rows.sum() * p.shape[1]).clamp(min=1.0)


# ----------------------------------------------------------------------------------------------------- cache
class KVCache:
    """Per-layer keys/values of one decode (the prefix K/V first, then semantic and code positions).

    Duck-types the ``update`` call of HF attention layers: layer ``i`` appends its new K/V to slot ``i`` and
    attends over the whole slot. Prefix layer ``i`` and shared layer ``i`` share slot ``i`` (upstream). Without
    autograd, appends go into room reserved behind the slot (blocks of :data:`ROOM`) instead of concatenating,
    which would copy the whole slot every step (a third of a 4-row decoder step); ``keys[i]`` stays a view.
    """

    ROOM = 128

    def __init__(self, n_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self._room: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``[B, heads, T, head_dim]`` K/V to slot ``layer_idx``; returns the whole slot."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if torch.is_grad_enabled() and (key.requires_grad or value.requires_grad):
            if keys is not None:
                key, value = torch.cat([keys, key], dim=2), torch.cat([values, value], dim=2)
            self.keys[layer_idx], self.values[layer_idx], self._room[layer_idx] = key, value, None
            return key, value
        self._room[layer_idx], self.keys[layer_idx], self.values[layer_idx] = append_in_room(
            self._room[layer_idx], keys, values, key, value, self.ROOM)
        return self.keys[layer_idx], self.values[layer_idx]

    def length(self, layer_idx: int) -> int:
        k = self.keys[layer_idx]
        return 0 if k is None else int(k.shape[2])


# ----------------------------------------------------------------------------------------------------- model
class SpeechDecoder(nn.Module):
    """Prefix decoder + pre-network + shared NAR/AR decoder (see the module docstring).

    Args:
        cfg: the sizes.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        lcfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn,
                           num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
                           attention_dropout=cfg.dropout, rms_norm_eps=cfg.rms_norm_eps,
                           max_position_embeddings=cfg.max_positions, rope_theta=cfg.rope_theta)
        lcfg._attn_implementation = cfg.attn_implementation
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        if cfg.use_pre_nn:
            self.layers_pre_nn = nn.ModuleList(LlamaDecoderLayer(lcfg, i) for i in range(cfg.n_pre))
            self.rotary_emb_pre_nn = LlamaRotaryEmbedding(lcfg)
        self.layers = nn.ModuleList(LlamaDecoderLayer(lcfg, i) for i in range(cfg.n_layers))
        self.rotary_emb = LlamaRotaryEmbedding(lcfg)
        self.norm = LlamaRMSNorm(cfg.d_model, eps=cfg.rms_norm_eps)
        self.out_fnn = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.use_prefix:
            self.layers_prefix = nn.ModuleList(LlamaDecoderLayer(lcfg, i) for i in range(cfg.n_prefix))
            self.rotary_emb_prefix = LlamaRotaryEmbedding(lcfg)
        if cfg.text_input == "phonemes":
            self.symbol_embedding = nn.Embedding(cfg.n_symbols, cfg.d_model, padding_idx=PAD)
        if cfg.llm_map == "project":
            if cfg.text_input == "llm":
                self.input_proj = nn.Linear(cfg.llm_hidden, cfg.d_model)
            if cfg.use_prefix:
                self.prefix_proj = nn.Linear(cfg.llm_hidden, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    # ------------------------------------------------------------------------------------ building blocks
    def map_llm(self, x: torch.Tensor, lens: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """LLM vectors ``[B, T, H]`` -> decoder vectors ``[B, T * k, d]`` and lengths ``lens * k``.

        ``kind`` is ``"text"`` (input embeddings) or ``"prefix"`` (final hidden states), selecting the projection.
        """
        B, T, H = x.shape
        if H != self.cfg.llm_hidden:
            raise ValueError(f"LLM vectors of width {H}, the decoder expects {self.cfg.llm_hidden}")
        x = x.to(self.dtype)
        if self.cfg.llm_map == "split":
            k = self.cfg.split_factor
            return x.reshape(B, T * k, self.cfg.d_model), lens * k  # each vector -> k consecutive pieces
        proj = self.input_proj if kind == "text" else self.prefix_proj
        return proj(x), lens

    @staticmethod
    def _run(layers: nn.ModuleList, rotary: nn.Module, x: torch.Tensor, positions: torch.Tensor,
             masks: list[torch.Tensor | None], cache: KVCache | None = None,
             capture: dict | None = None) -> torch.Tensor:
        """``x [B, T, d]`` through ``layers`` at ``positions [B, T]``; ``masks[i]`` is layer ``i``'s additive mask
        ``[B, 1, T, K_i]`` (None: every key; only for ``T == 1``). ``capture[i]`` receives layer ``i``'s attention
        probabilities over this pass's own positions (:func:`attention_probs`) for each ``i`` in
        ``capture["layers"]``."""
        pe = rotary(x, positions)
        for i, (layer, mask) in enumerate(zip(layers, masks)):
            if capture is not None and i in capture["layers"]:
                capture[i] = attention_probs(layer, x, pe, mask)
            x = layer(x, attention_mask=mask, position_ids=positions, cache=cache, use_cache=cache is not None,
                      position_embeddings=pe)
        return x

    @torch.no_grad()
    def step_ragged(self, tokens: list[int], positions: list[int], caches: list[KVCache]) -> torch.Tensor:
        """One AR step of several independent decodes (the sessions of a server) in one pass: row ``b`` feeds
        ``tokens[b]`` at RoPE position ``positions[b]`` on top of ``caches[b]`` (any lengths), attending over all of
        its own cache as :meth:`shared` does for one token (:func:`freeze_omni.ragged.ragged_layers`). Returns
        logits ``[B, V]``; equals one :meth:`shared` call per row up to float rounding (tested)."""
        dev = self.embedding.weight.device
        x = self.embedding(torch.tensor(tokens, device=dev))  # [B, d]: the rows packed
        cos, sin = self.rotary_emb(x[None], torch.tensor(positions, device=dev)[None])
        h = ragged_layers(self.layers, x, (cos[0], sin[0]), caches, [1] * len(caches))
        return self.out_fnn(self.norm(h))

    def encode_text(self, text: torch.Tensor, text_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The semantic part: ``[BOS] + pre-net(map(text))``.

        Args:
            text: ``[B, L, H]`` the LLM's input embeddings of the segment text (padded), or with ``text_input:
                phonemes`` ``[B, L]`` phoneme ids (:mod:`freeze_omni.decoder.phonemes`).
            text_lens: ``[B]`` real lengths.

        Returns:
            ``sem [B, S, d]`` with ``S = 1 + L * k`` and ``sem_lens [B] = 1 + text_lens * k`` (``k = 1`` for
            phonemes).
        """
        if self.cfg.text_input == "phonemes":
            if text.dtype != torch.long or text.dim() != 2:
                raise ValueError(f"this decoder reads phoneme ids [B, L] (long), got {tuple(text.shape)} {text.dtype}")
            x, lens = self.symbol_embedding(text), text_lens
        else:
            x, lens = self.map_llm(text, text_lens, "text")
        x = self.dropout(x)
        if self.cfg.use_pre_nn and x.shape[1] > 0:
            B, L, _ = x.shape
            mask = additive(lengths_mask(lens, L).unsqueeze(1).expand(B, L, L), x.dtype)  # bidirectional
            pos = torch.arange(L, device=x.device).unsqueeze(0).expand(B, L)
            x = self._run(self.layers_pre_nn, self.rotary_emb_pre_nn, x, pos, [mask] * len(self.layers_pre_nn))
        bos = self.embedding.weight[self.cfg.bos_id].expand(x.shape[0], 1, -1)
        return torch.cat([bos, x], dim=1), lens + 1

    def encode_prefix(self, prefix: torch.Tensor, prefix_lens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Run the prefix decoder over LLM hidden states, leaving its K/V in ``cache`` slots ``0..n_prefix-1``.

        Args:
            prefix: ``[B, N, H]`` the LLM final hidden states that produced the segment's tokens (padded).
            prefix_lens: ``[B]`` real lengths.
            cache: an empty cache.

        Returns:
            ``[B]`` prefix lengths in decoder positions (``prefix_lens * k``).
        """
        if not self.cfg.use_prefix:
            raise ValueError("this decoder has no prefix decoder (use_prefix=False)")
        x, lens = self.map_llm(prefix, prefix_lens, "prefix")
        x = self.dropout(x)
        B, P, _ = x.shape
        mask = additive(lengths_mask(lens, P).unsqueeze(1).expand(B, P, P), x.dtype)
        pos = torch.arange(P, device=x.device).unsqueeze(0).expand(B, P)
        self._run(self.layers_prefix, self.rotary_emb_prefix, x, pos, [mask] * len(self.layers_prefix), cache)
        return lens

    def shared(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, cache: KVCache,
               prefix_width: int, capture: dict | None = None) -> torch.Tensor:
        """The shared layers over new positions, appending to ``cache``; returns logits ``[B, T, V]``.

        Args:
            x: ``[B, T, d]`` new inputs; ``positions [B, T]``.
            mask: ``[B, T, P + K]`` bool over ``[prefix | earlier + new positions]`` (None: every key).
            cache: holds the prefix (``prefix_width`` positions, padded, in the slots of the first ``n_prefix``
                layers) and the earlier positions.
        """
        n_pre = len(self.layers_prefix) if self.cfg.use_prefix and prefix_width else 0
        masks: list[torch.Tensor | None] = []
        for i in range(len(self.layers)):
            if mask is None:
                masks.append(None)
            else:
                m = mask if i < n_pre else mask[:, :, prefix_width:]  # upper layers have no prefix
                masks.append(additive(m, x.dtype))
        h = self._run(self.layers, self.rotary_emb, x, positions, masks, cache, capture)
        return self.out_fnn(self.norm(h))

    # ------------------------------------------------------------------------------------------ training
    def compute_logits(self, batch: dict[str, torch.Tensor], capture: dict | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits at the code rows ``[SOS, c1..cN]`` and their targets ``[c1..cN, EOS]``.

        Args:
            batch: ``text_embeds [B, L, H]`` (with ``text_input: phonemes``: ``text_ids [B, L]`` phoneme ids),
                ``text_lens [B]``, ``codes [B, N]`` (padded with PAD),
                ``code_lens [B]``, optionally ``prefix [B, Np, H]`` and ``prefix_lens [B]`` (used when the decoder
                has a prefix decoder) and ``input_codes [B, N]`` (the codes fed as history, when they differ from
                the targets ``codes``).
            capture: ``{"layers": [i, ...]}``: receives the attention probabilities of those shared layers (see
                :meth:`_run`) and ``"sem_lens"``, ``"S"`` (the semantic part's lengths and padded width).

        Returns:
            ``logits [B, N + 1, V]`` and ``targets [B, N + 1]`` (PAD where padded).
        """
        cfg = self.cfg
        codes, code_lens = batch["codes"], batch["code_lens"]
        B, N = codes.shape
        dev = codes.device
        cache = KVCache(len(self.layers))
        # 1. Prefix decoder -> K/V prefix of the shared layers.
        P = 0
        prefix_lens = torch.zeros(B, dtype=torch.long, device=dev)
        if cfg.use_prefix and batch.get("prefix") is not None:
            prefix_lens = self.encode_prefix(batch["prefix"], batch["prefix_lens"], cache)
            P = cache.length(0)
        # 2. Semantic part: BOS + pre-net over the text.
        text = batch["text_ids"] if cfg.text_input == "phonemes" else batch["text_embeds"]
        sem, sem_lens = self.encode_text(text, batch["text_lens"])
        S = sem.shape[1]
        # 3. Code part: SOS + codes in, codes + EOS out.
        pad = torch.full((B, 1), cfg.pad_id, dtype=torch.long, device=dev)
        fed = batch.get("input_codes", codes)  # what the code rows read (a corrupted copy in training: code_noise)
        inp = torch.cat([torch.full((B, 1), cfg.sos_id, dtype=torch.long, device=dev), fed], dim=1)  # [B, N+1]
        inp = inp.masked_fill(~lengths_mask(code_lens + 1, N + 1), cfg.pad_id)
        targets = torch.cat([codes, pad], dim=1)  # [B, N+1]
        targets = targets.masked_fill(~lengths_mask(code_lens, N + 1), cfg.pad_id)
        targets = targets.scatter(1, code_lens.unsqueeze(1), cfg.eos_id)
        # 4. One pass of the shared layers over [sem | codes] under the training mask.
        x = self.dropout(torch.cat([sem, self.embedding(inp)], dim=1))  # [B, S+N+1, d]
        C = N + 1
        pos = torch.cat([torch.arange(S, device=dev).unsqueeze(0).expand(B, S),
                         sem_lens.unsqueeze(1) + torch.arange(C, device=dev).unsqueeze(0)], dim=1)
        mask = decoder_mask(prefix_lens, sem_lens, code_lens + 1, P, S, C)
        if capture is not None:
            capture.update(sem_lens=sem_lens, S=S)
        logits = self.shared(x, pos, mask, cache, P, capture)
        return logits[:, S:], targets

    def forward(self, batch: dict[str, torch.Tensor], guide: "GuidedAttention | None" = None
                ) -> dict[str, torch.Tensor]:
        """Training losses: ``{"loss": mean CE over real targets, "acc": top-1 accuracy, "eos_acc": accuracy at
        the EOS targets}`` (see :meth:`compute_logits` for ``batch``). Upstream sums the CE; the mean keeps the
        learning rate independent of the batch's token count. With ``guide``, ``"guide"`` (the guided-attention
        term, :func:`guided_attention_loss`) is added to the loss, times its weight."""
        capture = {"layers": list(guide.layers)} if guide is not None and guide.weight > 0 else None
        logits, targets = self.compute_logits(batch, capture)
        flat = logits.reshape(-1, logits.shape[-1]).float()
        loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=self.cfg.pad_id)
        out: dict[str, torch.Tensor] = {}
        if capture is not None:
            g = torch.stack([guided_attention_loss(capture[i][:, :guide.heads], capture["sem_lens"],
                                                   batch["code_lens"] + 1, capture["S"], guide.sigma)
                             for i in guide.layers]).mean()
            out.update(ce=loss.detach(), guide=g.detach())
            loss = loss + guide.weight * g
        with torch.no_grad():
            real = targets != self.cfg.pad_id
            hit = (logits.argmax(-1) == targets) & real
            eos = targets == self.cfg.eos_id
            acc = hit.sum() / real.sum().clamp(min=1)
            eos_acc = (hit & eos).sum() / eos.sum().clamp(min=1)
        return {"loss": loss, "acc": acc, "eos_acc": eos_acc, **out}

    @classmethod
    def from_bundle(cls, path: Any) -> "SpeechDecoder":
        """Load the ``decoder`` component of a bundle folder (or an opened :class:`freeze_omni.bundle.Bundle`),
        in eval mode."""
        from freeze_omni.bundle import Bundle

        bundle = path if isinstance(path, Bundle) else Bundle(path)
        if not bundle.has("decoder") or "decoder" not in bundle.config:
            raise FileNotFoundError(f"{bundle.path}: the bundle has no speech decoder "
                                    "(run `freeze-omni train decoder`)")
        decoder = cls(DecoderConfig.from_dict(bundle.config["decoder"]))
        decoder.load_state_dict(bundle.tensors("decoder"), strict=True)
        return decoder.eval()

    def num_parameters(self, prefix: str | None = None) -> int:
        """Parameter count, optionally only of submodules whose name starts with ``prefix``."""
        return sum(p.numel() for n, p in self.named_parameters() if prefix is None or n.startswith(prefix))

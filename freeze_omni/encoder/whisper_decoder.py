"""Whisper's pretrained text decoder as a second pass over the streaming encoder (and as a training signal).

The streaming encoder runs chunk by chunk while the user speaks (its CTC head gives live partial transcripts);
when the utterance ends, Whisper's own text decoder -- frozen, read from the same pip-shipped ``model.bin`` as the
encoder -- attends over the encoder states already computed and writes the final transcript. Nothing is
re-encoded; the cost at the end of the utterance is the decoder's few token steps.

Whisper's decoder was trained on 30 s windows: the encoder states after the speech matter to it (on states of the
speech alone it loops). The streamed states are followed by those of the *original* encoder on a silent 30 s
window (:meth:`WhisperDecoder.silence`), positions ``n .. 1500``; with the original encoder's own speech states,
that reads 40 held-out utterances of voices never in training at WER 2.3 (the real padded window: 2.7).

In training (`train ctc` with ``whisper_decoder.weight``) the frozen decoder's cross-entropy on the transcript,
teacher-forced, flows into the streaming encoder: it learns states the pretrained decoder can read.

Layout of the CTranslate2 variables (``decoder/…``): token and position embeddings (output projection tied to the
token embedding), pre-LN blocks of self-attention (fused QKV ``linear_0``, ``linear_1`` out), cross-attention
(``linear_0`` query, fused KV ``linear_1`` over encoder states, ``linear_2`` out) and a GELU FFN; a final norm.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from freeze_omni.encoder.ct2 import read_ct2, whisper_model_dir
from freeze_omni.encoder.masks import pad_mask

WINDOW_FRAMES = 1500  # encoder states of a 30 s window
SILENT_LOG_MEL = -1.5  # Whisper's normalised log-mel of digital silence: (log10(1e-10) + 4) / 4
BEAM = 5  # the second pass's beam (faster-whisper's default); bundles may set asr.beam


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_ln, self.cross_ln, self.mlp_ln = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.attn_out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.cross_q, self.cross_kv, self.cross_out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, h, T, D/h]
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor], cache: Optional[tuple] = None
                ) -> tuple[torch.Tensor, tuple]:
        """``cross``: this block's keys and values over the window, ``[B or 1, h, 1500, D/h]`` each; with one
        window for several rows (beams), the rows attend to it as query positions of one row (nothing copied)."""
        q, k, v = map(self._split, self.qkv(self.attn_ln(x)).chunk(3, dim=-1))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        causal = cache is None and x.shape[1] > 1
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.attn_out(a.transpose(1, 2).flatten(2))
        q = self._split(self.cross_q(self.cross_ln(x)))
        b, h, n, dh = q.shape
        if cross[0].shape[0] == 1 and b > 1:
            q = q.transpose(0, 1).reshape(1, h, b * n, dh)
            a = F.scaled_dot_product_attention(q, *cross).reshape(h, b, n, dh).transpose(0, 1)
        else:
            a = F.scaled_dot_product_attention(q, *cross)
        x = x + self.cross_out(a.transpose(1, 2).flatten(2))
        x = x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))
        return x, (k, v)


class WhisperDecoder(nn.Module):
    """Whisper's text decoder (frozen by :func:`load_whisper_decoder`).

    ``states``: encoder states ``[B, T, D]`` of the speech (``T <= 1500``), completed to a 30 s window with the
    silent window's states (:meth:`window_kv` does this per layer, after the key/value projection).
    """

    def __init__(self, vocab: int, d: int, heads: int, layers: int, max_tokens: int = 448) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.positions = nn.Parameter(torch.zeros(max_tokens, d))
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.register_buffer("silence", torch.zeros(WINDOW_FRAMES, d), persistent=False)
        self._silence_kv: Optional[list[torch.Tensor]] = None  # per block: the silent window's keys/values

    def set_silence(self, states: torch.Tensor) -> None:
        """The states that complete a window after the speech (``[1500, D]``); their keys/values are cached."""
        self.silence.copy_(states)
        self._silence_kv = None

    def window_kv(self, states: torch.Tensor, lengths: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per block, cross-attention keys and values ``[B, h, 1500, D/h]`` of the speech states followed by
        silence."""
        n = min(states.shape[1], WINDOW_FRAMES)
        speech = pad_mask(lengths.clamp(max=n).to(states.device), WINDOW_FRAMES)[..., None]
        if self._silence_kv is None:  # normal tensors even when first asked under inference mode (training uses them)
            with torch.inference_mode(False), torch.no_grad():
                self._silence_kv = [blk.cross_kv(self.silence)[None] for blk in self.blocks]  # [1, 1500, 2D]
        out = []
        for blk, sil in zip(self.blocks, self._silence_kv):
            kv = F.pad(blk.cross_kv(states[:, :n]), (0, 0, 0, WINDOW_FRAMES - n))
            k, v = (blk._split(t).contiguous() for t in torch.where(speech, kv, sil).chunk(2, dim=-1))
            out.append((k, v))
        return out

    def forward(self, tokens: torch.Tensor, cross: list[tuple[torch.Tensor, torch.Tensor]], cache: Optional[list] = None,
                offset: int = 0) -> tuple[torch.Tensor, list]:
        """``tokens [B, L]`` -> ``(logits [B, L, V], new cache)``."""
        x = self.token_embedding(tokens) + self.positions[offset:offset + tokens.shape[1]]
        new = []
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, cross[i], None if cache is None else cache[i])
            new.append(kv)
        return F.linear(self.ln(x), self.token_embedding.weight), new

    def loss(self, states: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor, prompt_len: int
             ) -> torch.Tensor:
        """Teacher-forced cross-entropy, mean per target token, of ``tokens [B, L]`` (``prompt_len`` prompt ids, the
        text, the end; -100 pads); the prompt itself is not a target."""
        targets = tokens[:, 1:].clone()
        targets[:, : prompt_len - 1] = -100
        logits, _ = self(tokens[:, :-1].clamp(min=0), self.window_kv(states, lengths))
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    @torch.inference_mode()
    def greedy(self, states: torch.Tensor, prompt: Sequence[int], eot: int, max_tokens: int = 128,
               suppress: Sequence[int] = ()) -> list[int]:
        """Greedy decoding of one utterance (``states [1, T, D]``): the token ids after ``prompt``, without the end."""
        cross = self.window_kv(states, torch.tensor([states.shape[1]]))
        ids = list(prompt)
        logits, cache = self(torch.tensor([ids]), cross)
        out: list[int] = []
        sup = torch.tensor(list(suppress), dtype=torch.long)
        for _ in range(max_tokens):
            last = logits[0, -1]
            if len(sup):
                last = last.index_fill(0, sup, -math.inf)
            nxt = int(last.argmax())
            if nxt == eot:
                break
            out.append(nxt)
            cut = loop_start(out)
            if cut is not None:
                return out[:cut]
            logits, cache = self(torch.tensor([[nxt]]), cross, cache, offset=len(ids) + len(out) - 1)
        return out


    @torch.inference_mode()
    def beam_search(self, states: torch.Tensor, prompt: Sequence[int], eot: int, beam: int = BEAM,
                    max_tokens: int = 128, suppress: Sequence[int] = ()) -> list[int]:
        """Beam search for one utterance (``states [1, T, D]``); hypotheses are ranked by mean log-probability per
        token (the end included). A hypothesis that starts looping (:func:`loop_start`) ends there."""
        if beam <= 1:
            return self.greedy(states, prompt, eot, max_tokens, suppress)
        cross1 = self.window_kv(states, torch.tensor([states.shape[1]]))
        logits, cache = self(torch.tensor([list(prompt)]), cross1)
        hyps: list[list[int]] = [[]]
        scores = torch.zeros(1)
        done: list[tuple[float, list[int]]] = []
        sup = torch.tensor(list(suppress), dtype=torch.long)
        for step in range(max_tokens):
            logp = logits[:, -1].float().log_softmax(-1)
            if len(sup):
                logp = logp.index_fill(1, sup, -math.inf)
            cand = (scores[:, None] + logp).flatten()
            top = cand.topk(2 * beam)
            keep_rows, keep_ids, keep_scores = [], [], []
            for sc, flat in zip(top.values.tolist(), top.indices.tolist()):
                row, tok = divmod(flat, logp.shape[1])
                seq = hyps[row] + [tok]
                if tok == eot:
                    done.append((sc / len(seq), hyps[row]))
                elif (cut := loop_start(seq)) is not None:
                    done.append((sc / len(seq), seq[:cut]))
                else:
                    keep_rows.append(row), keep_ids.append(tok), keep_scores.append(sc)
                if len(keep_rows) == beam:
                    break
            if len(done) >= beam or not keep_rows:
                break
            idx = torch.tensor(keep_rows)
            hyps = [hyps[r] + [t] for r, t in zip(keep_rows, keep_ids)]
            scores = torch.tensor(keep_scores)
            cache = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in cache]
            logits, cache = self(torch.tensor(keep_ids)[:, None], cross1, cache, offset=len(prompt) + step)
        if not done:  # ran out of tokens: the best open hypothesis
            done = [(float(scores[0]) / max(1, len(hyps[0])), hyps[0])]
        return max(done, key=lambda d: d[0])[1]


def loop_start(ids: list[int], times: int = 3, longest: int = 8) -> Optional[int]:
    """Where a loop begins when the tail of ``ids`` is one n-gram (n <= ``longest``) said ``times`` times in a row
    (Whisper's failure on degraded input): the index after its first occurrence; None when there is no loop."""
    for n in range(1, longest + 1):
        if len(ids) < n * times:
            break
        tail = ids[-n * times:]
        if all(tail[i] == tail[i % n] for i in range(len(tail))):
            return len(ids) - n * (times - 1)
    return None


class WhisperTokenizer:
    """Whisper's byte-level BPE (``tokenizer.json`` next to ``model.bin``) and the prompt of an English transcript
    without timestamps."""

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        tid = self.tok.token_to_id
        self.sot, self.eot, self.no_timestamps = tid("<|startoftranscript|>"), tid("<|endoftext|>"), tid(
            "<|notimestamps|>")
        if None in (self.sot, self.eot, self.no_timestamps):
            raise ValueError(f"{model_dir}: tokenizer.json lacks Whisper's special tokens")
        self.prompt = [self.sot, self.no_timestamps]
        # never written in a transcript: every special token (timestamps, task and language markers)
        self.special = list(range(self.eot + 1, self.tok.get_vocab_size()))

    def encode(self, text: str) -> list[int]:
        """Ids of a transcript as Whisper writes one (a leading space)."""
        return self.tok.encode(" " + text.strip(), add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids)).strip()

    def targets(self, text: str) -> list[int]:
        """``prompt + text + end`` as a training sequence."""
        return self.prompt + self.encode(text) + [self.eot]


def _ct2_decoder_state_dict(t: dict, n_layers: int) -> dict[str, torch.Tensor]:
    g = {k: torch.from_numpy(v.copy()) for k, v in t.items()}
    sd = {"token_embedding.weight": g["decoder/embeddings/weight"],
          "positions": g["decoder/position_encodings/encodings"],
          "ln.weight": g["decoder/layer_norm/gamma"], "ln.bias": g["decoder/layer_norm/beta"]}
    names = {"attn_ln": "self_attention/layer_norm", "qkv": "self_attention/linear_0",
             "attn_out": "self_attention/linear_1", "cross_ln": "attention/layer_norm", "cross_q": "attention/linear_0",
             "cross_kv": "attention/linear_1", "cross_out": "attention/linear_2", "mlp_ln": "ffn/layer_norm",
             "fc1": "ffn/linear_0", "fc2": "ffn/linear_1"}
    for i in range(n_layers):
        for dst, src in names.items():
            w, b = ("gamma", "beta") if dst.endswith("_ln") else ("weight", "bias")
            sd[f"blocks.{i}.{dst}.weight"] = g[f"decoder/layer_{i}/{src}/{w}"]
            sd[f"blocks.{i}.{dst}.bias"] = g[f"decoder/layer_{i}/{src}/{b}"]
    return sd


@functools.lru_cache(maxsize=2)
def _silent_window(name: str) -> torch.Tensor:
    """The original (full-attention) encoder's states of a silent 30 s window ``[1500, D]``."""
    from freeze_omni.encoder.whisper_init import load_whisper_encoder

    enc = load_whisper_encoder(name, causal_convs=False, dropout=0.0).eval()
    feats = torch.full((1, 2 * WINDOW_FRAMES, enc.cfg.input_dim), SILENT_LOG_MEL)
    with torch.inference_mode():
        out, _ = enc(feats, torch.tensor([feats.shape[1]]), chunk_size=None)
    return out[0].clone()


def load_whisper_decoder(name: str = "tiny.en") -> tuple[WhisperDecoder, WhisperTokenizer]:
    """Whisper ``name``'s text decoder, frozen (``requires_grad=False``, eval), with its tokenizer."""
    d = whisper_model_dir(name)
    t = read_ct2(d / "model.bin", prefix="decoder/")
    n_layers = len({k.split("/")[1] for k in t if re.match(r"decoder/layer_\d+/", k)})
    vocab, dim = t["decoder/embeddings/weight"].shape
    dec = WhisperDecoder(vocab, dim, int(t["decoder/num_heads"][0]), n_layers,
                         t["decoder/position_encodings/encodings"].shape[0])
    dec.load_state_dict(_ct2_decoder_state_dict(t, n_layers), strict=True)
    dec.set_silence(_silent_window(name))
    return dec.eval().requires_grad_(False), WhisperTokenizer(d)

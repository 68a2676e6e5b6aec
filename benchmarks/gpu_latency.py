"""GPU latency and capacity of an upstream-shaped Freeze-Omni, random weights: one JSON line on stdout.

What runs (bf16 on one CUDA device, nothing downloaded):

* the frozen LLM: a Qwen2-7B-shaped decoder (28 layers, 3584 wide, 28 heads / 4 KV heads, FFN 18944, vocab
  152064, QKV bias, RoPE theta 1e6) in plain torch with a **static KV cache**; the per-token step is captured once
  per batch size as a **CUDA graph** (``--no-graphs``: eager);
* our upstream-family speech encoder (24 x 1024) and adapter (``freeze_omni.encoder`` / ``freeze_omni.llm.adapter``),
  chunk by chunk with their streaming caches;
* the speech decoder (prefix 4 + pre-net 2 + shared 4 Llama layers, 896 wide, split mapping 3584 = 4 x 896), static
  cache, graphed AR step, top-k 2;
* the TiCodec generator (``freeze_omni.codec.ticodec``), 600 samples per token, first window of 20 + 10 tokens and
  upstream's low-energy splice search.

Measured, per turn (``--turns``, default 20, fresh session each): the paper's latency breakdown
(``reference/freeze_omni_facts.md`` §5.4) from the state head's decision: (1) -> first text-token chunk
(assistant prefix + ``--first-segment-tokens`` sampled tokens), (2) -> decoder prefill (prefix decoder over the
chunk's hidden states, pre-net over its embeddings, shared bidirectional pass), (3) -> first speech-token chunk
(30 AR tokens: first window + right context), (4) -> first PCM (codec decode + splice search); p50 / p90 / mean.
Then the number of **real-time users per GPU**: the largest N (doubling, then bisection) for which one 160 ms tick
of full-duplex work for N users fits in 160 ms: one listening chunk each (encoder + adapter + 2 LLM positions,
batched) + 160 ms worth of speaking each (6.4 decoder steps, ``--text-rate`` x 0.16 LLM steps, 0.16 codec windows
of 60 tokens), all batched over the N users.

Imports only torch and this package's torch-only modules (no transformers, no numpy): it runs on a bare machine
with PyTorch (``make gpu-bench``). Without CUDA it prints ``{"skipped": true, ...}`` and exits 0. ``--dry-run``
(tiny shapes, CPU, 1 turn, N <= 2) checks the script itself in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from freeze_omni.codec.ticodec import TiCodec, TiCodecConfig  # noqa: E402
from freeze_omni.encoder.encoder import EncoderCache, EncoderConfig, SpeechEncoder, upstream_config  # noqa: E402
from freeze_omni.llm.adapter import Adapter  # noqa: E402
from freeze_omni.llm.sampling import SamplingConfig, sample_next  # noqa: E402
from freeze_omni.llm.static_cache import (LLM, QWEN2_7B, UPSTREAM_DECODER, Graphed, RMSNorm, Shape,  # noqa: E402
                                          Stack, init_)

TINY_LLM = Shape(1000, 128, 2, 4, 2, 256, True, 1e6)
TINY_DECODER = Shape(1028, 32, 2, 2, 2, 64, False, 1e4)

OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def qwen2_7b_shape() -> tuple[Shape, str]:
    """Qwen2-7B-Instruct's shape, from a transformers ``Qwen2Config`` when transformers is installed (no download:
    the 7B values are given here), else the built-in table; and where it came from."""
    try:
        from transformers import Qwen2Config

        cfg = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, rms_norm_eps=1e-6)
        shape = Shape.from_hf_config(cfg)
    except Exception:  # no (or an incompatible) transformers: the same numbers, built in
        return QWEN2_7B, "built-in"
    return (shape, "transformers.Qwen2Config") if shape == QWEN2_7B else (QWEN2_7B, "built-in")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    i = (len(s) - 1) * q
    lo, hi = math.floor(i), math.ceil(i)
    return s[lo] + (s[hi] - s[lo]) * (i - lo)


def summary(xs: list[float]) -> dict:
    return {"p50": round(pct(xs, 0.5), 2), "p90": round(pct(xs, 0.9), 2), "mean": round(sum(xs) / len(xs), 2),
            "n": len(xs)}


class Bench:
    """All models, caches and graphs for one batch size at a time (see the module docstring)."""

    def __init__(self, a: argparse.Namespace, device: torch.device) -> None:
        self.a, self.dev, self.dt = a, device, torch.bfloat16 if device.type == "cuda" else torch.float32
        self.graphs = device.type == "cuda" and not a.no_graphs
        self.dt = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(a.dtype, self.dt)
        self.autocast = torch.autocast(device.type, dtype=self.dt, enabled=self.dt != torch.float32)
        (llm_s, self.shape_source), dec_s = ((TINY_LLM, "tiny"), TINY_DECODER) if a.tiny else \
            (qwen2_7b_shape(), UPSTREAM_DECODER)
        enc_cfg = (EncoderConfig(family="upstream", d_model=64, n_heads=4, d_ff=128, n_layers=2, chunk_size=4,
                                 left_chunks=16) if a.tiny else upstream_config())
        enc_cfg = replace(enc_cfg, dropout=0.0, upstream_pos_lag=True)
        codec_cfg = (TiCodecConfig(upsample_initial_channel=64, code_dim=32, global_code_dim=2) if a.tiny
                     else TiCodecConfig())
        self.shapes = {"llm": asdict(llm_s), "decoder": asdict(dec_s), "encoder": asdict(enc_cfg),
                       "codec": codec_cfg.to_dict()}
        mk = lambda m: init_(m.to(self.dt)).eval()  # noqa: E731
        default = torch.get_default_dtype()
        try:  # build every weight directly in its final dtype, on the device (old torch: fp32, then cast)
            torch.set_default_dtype(self.dt)
        except TypeError:
            pass
        with torch.device(device):
            self.llm = mk(LLM(llm_s))
            self.enc = mk(SpeechEncoder(enc_cfg))
            self.adapter = mk(Adapter(enc_cfg.d_model, llm_s.hidden, 2, 5, upstream_left_pad=True))
            self.prompt = torch.randn(25, llm_s.hidden, dtype=self.dt) * 0.02
            self.state_head = mk(nn.Linear(llm_s.hidden, 4))
            self.pre, self.prefix, self.shared = mk(Stack(dec_s, 2)), mk(Stack(dec_s, 4)), mk(Stack(dec_s, 4))
            self.dec_embed, self.dec_norm = mk(nn.Embedding(dec_s.vocab, dec_s.hidden)), mk(RMSNorm(dec_s.hidden, 1e-6))
            self.dec_out = mk(nn.Linear(dec_s.hidden, dec_s.vocab))
            self.codec = mk(TiCodec(codec_cfg))
        torch.set_default_dtype(default)
        self.llm_s, self.dec_s, self.enc_cfg = llm_s, dec_s, enc_cfg
        self.split = llm_s.hidden // dec_s.hidden
        self.turn_len, self.dec_len = (256, 256) if a.tiny else (2048, 1024)
        self.sampling = SamplingConfig(temperature=0.8, top_k=20, top_p=0.8)
        self.batch = 0

    def sync(self) -> float:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    # -------------------------------------------------------------------------------------------- per batch size
    def setup(self, b: int, llm_len: int, dec_len: int) -> None:
        """Static caches (``llm_len`` / ``dec_len`` slots per user) and graphed per-token steps for ``b`` users."""
        self.batch, dev, dt = b, self.dev, self.dt
        self.llm_cache = self.graph_inputs = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        self.llm_cache = self.llm.body.new_cache(b, llm_len, dev, dt)
        self.dec_cache = self.shared.new_cache(b, dec_len, dev, dt)  # prefix K/V first, shared after
        zl = lambda n=1: torch.zeros(b, n, dtype=torch.long, device=dev)  # noqa: E731
        x2 = torch.zeros(b, 2, self.llm_s.hidden, device=dev, dtype=dt)
        with torch.no_grad():
            self.llm_step = Graphed(lambda t, p: self.llm.step(t, p, self.llm_cache), [zl(), zl()], self.graphs)
            self.llm_listen = Graphed(lambda x, p: self.llm(x, p, self.llm_cache), [x2, zl(2)], self.graphs)
            self.dec_step = Graphed(self._dec_step, [zl(), zl(), zl()], self.graphs)

    def _dec_step(self, tok, pos, slot):
        h = self.shared(self.dec_embed(tok), pos, slot, slot + 1, self.dec_cache)
        return self.dec_out(self.dec_norm(h[:, -1])).float()

    # -------------------------------------------------------------------------------------------- pieces
    @torch.no_grad()
    def listen_chunk(self, enc_cache: EncoderCache, ad_cache, llm_pos: int, first: bool):
        """One 160 ms chunk for every user: fbank [B, 16, 80] -> encoder -> adapter -> LLM -> state head."""
        b = self.batch
        feats = torch.randn(b, 16, 80, device=self.dev, dtype=self.dt)
        with self.autocast:
            enc, enc_cache = self.enc.forward_chunk(feats, enc_cache)
            emb, ad_cache = self.adapter.forward_chunk(enc, ad_cache)
        if first:  # user prefix (5 tokens) + 25 prompt embeddings + audio: eager, variable length
            lead = torch.cat([self.llm.embed(torch.randint(0, 100, (b, 5), device=self.dev)),
                              self.prompt[None].expand(b, -1, -1)], 1)
            x = torch.cat([lead, emb.to(self.dt)], 1)
            pos = torch.arange(llm_pos, llm_pos + x.shape[1], device=self.dev)[None].expand(b, -1)
            h = self.llm(x, pos, self.llm_cache)
        else:
            pos = torch.arange(llm_pos, llm_pos + 2, device=self.dev)[None].expand(b, -1)
            h = self.llm_listen(emb.to(self.dt), pos)
        probs = self.state_head(h[:, -1]).float()[:, :3].softmax(-1)
        return enc_cache, ad_cache, llm_pos + pos.shape[1], probs

    def full_encoder_cache(self) -> EncoderCache:
        c, b = self.enc_cfg, self.batch
        shape = (b, c.n_heads, c.cache_frames, c.d_model // c.n_heads)
        return EncoderCache(conv=[torch.zeros(b, 3, 80, device=self.dev, dtype=self.dt)],
                            k=[torch.randn(shape, device=self.dev, dtype=self.dt) for _ in range(c.n_layers)],
                            v=[torch.randn(shape, device=self.dev, dtype=self.dt) for _ in range(c.n_layers)],
                            offset=c.cache_frames * 4)

    @torch.no_grad()
    def decoder_prefill(self, hidden: torch.Tensor, text_emb: torch.Tensor) -> int:
        """Prefix stack over the split hidden states, pre-net over the split text embeddings, shared pass over
        [BOS + pre-net] (bidirectional, separate RoPE counters); returns the next cache slot."""
        b, d, dev = self.batch, self.dec_s.hidden, self.dev
        p = hidden.reshape(b, -1, d)  # each LLM vector -> `split` decoder positions
        P = p.shape[1]
        ar = torch.arange(P, device=dev)[None].expand(b, -1)
        self.prefix(p, ar, ar, torch.full_like(ar, P), self.dec_cache)
        t = text_emb.reshape(b, -1, d)
        L = t.shape[1]
        sem = self.pre(t, torch.arange(L, device=dev)[None].expand(b, -1), None, None, None)
        sem = torch.cat([self.dec_embed.weight[1024].expand(b, 1, d), sem], 1)
        S = L + 1
        pos = torch.arange(S, device=dev)[None].expand(b, -1)
        self.shared(sem, pos, pos + P, torch.full_like(pos, P + S), self.dec_cache)
        return P + S

    @torch.no_grad()
    def speech_tokens(self, n: int, slot: int, rope_pos: int) -> list[int]:
        """AR codec tokens (top-k 2 sampling, a host sync per token as a streaming server needs)."""
        toks, tok = [], torch.full((self.batch, 1), 1025, dtype=torch.long, device=self.dev)  # SOS
        for i in range(n):
            s = torch.full((self.batch, 1), slot + i, device=self.dev)
            logits = self.dec_step(tok, torch.full_like(s, rope_pos + i), s)
            top, idx = logits[:, :1024].softmax(-1).topk(2, -1)
            tok = idx.gather(-1, torch.multinomial(top / top.sum(-1, keepdim=True), 1))
            toks.append(int(tok[0, 0]))
        return toks

    @torch.no_grad()
    def first_pcm(self, tokens: torch.Tensor, first_chunk: int = 20) -> bool:
        """Decode a window, keep its first ``first_chunk`` tokens' audio, search upstream's low-energy cut."""
        wave = self.codec.decode(tokens)[0, : first_chunk * self.codec.hop].float()
        n = 2401
        mag = wave[max(len(wave) // 2 - n // 2, 0):].abs()
        if len(mag) < n:
            return False
        means = F.avg_pool1d(mag[None, None], n, 1)[0, 0]
        return bool(means.min() < 0.1)

    # -------------------------------------------------------------------------------------------- measurements
    @torch.no_grad()
    def turn(self, gen: torch.Generator) -> dict:
        """One spoken turn for one user: listen, decide, then the four stages of the paper's table (ms)."""
        a, dev = self.a, self.dev
        enc_cache, ad_cache = self.enc.init_cache(1, dev), self.adapter.init_cache(1, dev).to(self.dt)
        sys_ids = torch.randint(0, 100, (1, 20), device=dev)
        self.llm(self.llm.embed(sys_ids), torch.arange(20, device=dev)[None], self.llm_cache)
        pos, listen = 20, []
        n_chunks = int(torch.randint(a.min_chunks, a.max_chunks + 1, (1,), generator=gen))
        for c in range(n_chunks):
            t = self.sync()
            enc_cache, ad_cache, pos, _ = self.listen_chunk(enc_cache, ad_cache, pos, c == 0)
            listen.append((self.sync() - t) * 1e3)
        t0 = self.sync()  # the state head's decision
        asst = self.llm.embed(torch.randint(0, 100, (1, 5), device=dev))
        h = self.llm(asst, torch.arange(pos, pos + 5, device=dev)[None], self.llm_cache)[:, -1]
        logits, pos = self.llm.head(h).float(), pos + 5
        hidden, ids = [h], []  # hidden[i]: the state that produced token i (the decoder's prefix input)
        for i in range(a.first_segment_tokens):
            tok = sample_next(logits, self.sampling)
            ids.append(int(tok[0]))  # a host sync per token: the segmenter reads the text
            if i == a.first_segment_tokens - 1:
                break
            h, logits = self.llm_step(tok[:, None], torch.tensor([[pos]], device=dev))
            hidden.append(h.clone())  # graph outputs are overwritten by the next replay
            pos += 1
        t1 = self.sync()
        h = torch.stack(hidden, 1)  # [1, K, H]
        text = self.llm.embed(torch.tensor([ids], device=dev))
        slot = self.decoder_prefill(h, text)
        t2 = self.sync()
        n_first = 30  # first window (20) + right context (10)
        toks = self.speech_tokens(n_first, slot, slot - h.shape[1] * self.split)
        t3 = self.sync()
        with self.autocast:
            found = self.first_pcm(torch.tensor([toks], device=dev))
        t4 = self.sync()
        return {"listen_chunks_ms": listen, "stages": [(t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                                                        (t4 - t3) * 1e3, (t4 - t0) * 1e3], "splice_found": found,
                "llm_token_ms": (t1 - t0) * 1e3 / max(1, a.first_segment_tokens),
                "decoder_token_ms": (t3 - t2) * 1e3 / n_first}

    @torch.no_grad()
    def tick(self, users: int, reps: int) -> dict:
        """Batched work of one 160 ms full-duplex tick for ``users`` users (ms, median of ``reps``), every user at
        ``--context`` LLM positions (attention always reads the whole static cache: an upper bound)."""
        a, b, dev = self.a, users, self.dev
        ctx = a.context
        self.setup(users, ctx + 8, 512)
        enc_cache, ad_cache = self.full_encoder_cache(), self.adapter.init_cache(b, dev).to(self.dt)
        tok = torch.zeros(b, 1, dtype=torch.long, device=dev)
        codes = torch.randint(0, 1024, (b, 60), device=dev)
        times: dict[str, list[float]] = {"listen": [], "llm_step": [], "decoder_step": [], "codec_window": []}
        for r in range(reps + 1):
            t = self.sync()
            self.listen_chunk(enc_cache, ad_cache, ctx, False)
            t1 = self.sync()
            self.llm_step(tok, torch.full((b, 1), ctx + 2, device=dev))
            t2 = self.sync()
            s = torch.full((b, 1), 200, device=dev)
            self.dec_step(tok, s, s)
            t3 = self.sync()
            with self.autocast:
                self.codec.decode(codes)
            t4 = self.sync()
            if r:  # the first repetition warms up
                for k, v in zip(times, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
                    times[k].append(v * 1e3)
        m = {k: pct(v, 0.5) for k, v in times.items()}
        tick = m["listen"] + 6.4 * m["decoder_step"] + a.text_rate * 0.16 * m["llm_step"] + 0.16 * m["codec_window"]
        return {"users": users, **{f"{k}_ms": round(v, 3) for k, v in m.items()}, "tick_ms": round(tick, 2),
                "realtime": tick <= 160.0 * a.budget}


def capacity(bench: Bench, a: argparse.Namespace, deadline: float) -> dict:
    """Largest N whose tick fits real time: doubling, then bisection (stops early at the deadline)."""
    trials, lo, hi, n = [], 0, None, 1
    while n <= a.max_users and time.perf_counter() < deadline:
        try:
            r = bench.tick(n, a.reps)
        except OOM:
            r = {"users": n, "realtime": False, "oom": True}
        trials.append(r)
        if not r["realtime"]:
            hi = n
            break
        lo, n = n, n * 2
    while hi is not None and hi - lo > max(1, lo // 8) and time.perf_counter() < deadline:
        n = (lo + hi) // 2
        try:
            r = bench.tick(n, a.reps)
        except OOM:
            r = {"users": n, "realtime": False, "oom": True}
        trials.append(r)
        lo, hi = (n, hi) if r["realtime"] else (lo, n)
    return {"realtime_users": lo, "capped": lo >= a.max_users, "budget_ms": 160.0 * a.budget,
            "text_tokens_per_s": a.text_rate, "context": a.context, "trials": trials,
            "complete": time.perf_counter() < deadline}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--tiny", action="store_true", help="tiny shapes (checks the script, numbers meaningless)")
    p.add_argument("--dry-run", action="store_true", help="--tiny on the CPU, 1 turn, at most 2 users")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument("--no-graphs", action="store_true", help="eager per-token steps instead of CUDA graphs")
    p.add_argument("--first-segment-tokens", type=int, default=6, help="text tokens of the first text chunk")
    p.add_argument("--min-chunks", type=int, default=8, help="shortest question, 160 ms chunks")
    p.add_argument("--max-chunks", type=int, default=30, help="longest question, 160 ms chunks")
    p.add_argument("--max-users", type=int, default=1024)
    p.add_argument("--context", type=int, default=512, help="LLM positions per user in the capacity test")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="weights dtype (auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--reps", type=int, default=10, help="repetitions per capacity measurement")
    p.add_argument("--text-rate", type=float, default=5.0, help="answer text tokens per second of speech")
    p.add_argument("--budget", type=float, default=1.0, help="fraction of the 160 ms tick that may be used")
    p.add_argument("--time-limit", type=float, default=420.0, help="seconds; the user search stops at this")
    a = p.parse_args(argv)
    start = time.perf_counter()
    if a.dry_run:
        a.tiny, a.turns, a.max_users, a.reps, a.min_chunks, a.max_chunks, a.context = True, 1, 2, 1, 2, 3, 64
        a.device = a.device or "cpu"
    device = torch.device(a.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": True, "reason": "CUDA is not available on this machine; this benchmark needs "
                          "one GPU (use --dry-run to check the script on the CPU)"}))
        return 0
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    bench = Bench(a, device)
    bench.setup(1, bench.turn_len, bench.dec_len)
    bench.turn(gen)  # warm-up (kernels, allocator)
    turns = [bench.turn(gen) for _ in range(a.turns)]
    names = ["llm_decision_to_first_text_chunk", "first_text_chunk_to_decoder_prefill",
             "decoder_prefill_to_first_speech_chunk", "first_speech_chunk_to_first_pcm", "total"]
    result = {
        "benchmark": "gpu_latency", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(bench.dt).replace("torch.", ""), "cuda_graphs": bench.graphs, "tiny": a.tiny, "turns": a.turns,
        "latency_ms": {n: summary([t["stages"][i] for t in turns]) for i, n in enumerate(names)},
        "paper_ms": {"llm_decision_to_first_text_chunk": {"p50": 468, "p90": 750},
                     "first_text_chunk_to_decoder_prefill": {"p50": 15, "p90": 17},
                     "decoder_prefill_to_first_speech_chunk": {"p50": 235, "p90": 252},
                     "first_speech_chunk_to_first_pcm": {"p50": 11, "p90": 13}, "total": {"p50": 753, "p90": 1020}},
        "listen_chunk_ms": summary([x for t in turns for x in t["listen_chunks_ms"][1:] or t["listen_chunks_ms"]]),
        "listen_first_chunk_ms": summary([t["listen_chunks_ms"][0] for t in turns]),
        "llm_token_ms": summary([t["llm_token_ms"] for t in turns]),
        "decoder_token_ms": summary([t["decoder_token_ms"] for t in turns]),
        "splice_found": sum(t["splice_found"] for t in turns) / len(turns),
        "first_segment_tokens": a.first_segment_tokens,
    }
    result["capacity"] = capacity(bench, a, start + a.time_limit)
    result["shapes"] = {**bench.shapes, "llm_source": bench.shape_source}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

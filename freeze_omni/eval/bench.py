"""`freeze-omni bench encoder`: per-chunk cost of the streaming encoder (front end included) on N threads."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from freeze_omni.audio.features import StreamingFrontend
from freeze_omni.bundle import Bundle
from freeze_omni.encoder.encoder import SpeechEncoder, upstream_config

CHUNK_SECONDS = 0.16


def _percentiles(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000.0
    return {"ms_p50": round(float(np.percentile(a, 50)), 2), "ms_p90": round(float(np.percentile(a, 90)), 2)}


@torch.inference_mode()
def time_encoder(enc: SpeechEncoder, chunks: int, warmup: int = 20) -> dict:
    """Steady-state timing: the cache is filled first (``left_chunks`` chunks), then ``chunks`` chunks timed,
    each including the front end on 2560 new samples."""
    enc.eval()
    rng = np.random.default_rng(0)
    fe = StreamingFrontend(enc.cfg.frontend)
    cache = enc.init_cache()
    times, fe_times = [], []
    for i in range(max(warmup, enc.cfg.left_chunks) + chunks):
        pcm = (0.1 * rng.standard_normal(2560)).astype(np.float32)
        t0 = time.perf_counter()
        feats = fe.accept(pcm)
        t1 = time.perf_counter()
        _, cache = enc.forward_chunk(torch.from_numpy(feats)[None], cache)
        t2 = time.perf_counter()
        if i >= max(warmup, enc.cfg.left_chunks):
            times.append(t2 - t0)
            fe_times.append(t1 - t0)
    r = _percentiles(times)
    r["rtf"] = round(r["ms_p50"] / (CHUNK_SECONDS * 1000.0), 4)
    r["frontend_ms_p50"] = _percentiles(fe_times)["ms_p50"]
    r["params_m"] = round(sum(p.numel() for p in enc.parameters()) / 1e6, 1)
    return r


def bench_encoder(args: argparse.Namespace) -> dict:
    result = {"threads": torch.get_num_threads(), "chunk_ms": int(CHUNK_SECONDS * 1000)}
    result["tiny"] = time_encoder(Bundle(args.model).load_encoder(), args.chunks)
    if not args.no_upstream:
        torch.manual_seed(0)
        result["upstream"] = time_encoder(SpeechEncoder(upstream_config()), max(10, args.chunks // 5))
    return result


def bench_latency(args: argparse.Namespace) -> dict:
    """Listening cost per 160 ms chunk (encoder + adapter + LLM prefill + state head) of the bundle's model, and,
    when the bundle can speak, the response latency from the end-of-turn decision to the first audio sample
    (streaming vs cascade, :mod:`freeze_omni.eval.latency`).

    Listening: speech-like noise is fed for ``--chunks`` chunks into one listening session (the first chunk of a
    turn also carries the user prefix and prompt embeddings, and is reported apart).
    """
    from freeze_omni.dialogue.speech import SpeechOutput, has_speech
    from freeze_omni.llm.loader import load_speech_llm
    from freeze_omni.llm.model import Listener

    model, system = load_speech_llm(args.model)
    if getattr(args, "int8", False):
        model.llm.quantize_int8()
    listener = Listener(model, system)
    rng = np.random.default_rng(0)
    session = listener.new_session()
    listener.timings = []
    for _ in range(args.chunks):
        listener.accept(session, (0.05 * rng.standard_normal(2560)).astype(np.float32))
    steady = [t for t in listener.timings if not t["first"]]
    total = [t["encoder"] + t["adapter"] + t["llm"] for t in steady]
    result = {"threads": torch.get_num_threads(), "chunks": len(steady), "listen": _percentiles(total)}
    result["listen"]["rtf"] = round(result["listen"]["ms_p50"] / (CHUNK_SECONDS * 1000.0), 4)
    for k in ("encoder", "adapter", "llm"):
        result[f"{k}_ms_p50"] = _percentiles([t[k] for t in steady])["ms_p50"]
    result["first_chunk_ms"] = round(1000.0 * sum(listener.timings[0][k] for k in ("encoder", "adapter", "llm")), 2)
    listener.timings = None
    bundle = Bundle(args.model)
    if has_speech(bundle):
        from freeze_omni.eval.latency import latency_table_rows, question_waves, response_latency
        from freeze_omni.eval.table import print_table

        speech = SpeechOutput.from_bundle(bundle, model.llm)
        waves = question_waves(getattr(args, "manifest", None), getattr(args, "questions", 20))
        resp = response_latency(listener, speech, waves, getattr(args, "max_new_tokens", 64),
                                getattr(args, "seed", 0))
        result["response"] = resp
        print_table(f"Decision -> first audio, ms ({resp['n']} questions, {result['threads']} threads; "
                    f"streaming/cascade p50 {resp['ratio_p50']})",
                    ["stage", "stream p50", "stream p90", "cascade p50", "cascade p90"], latency_table_rows(resp),
                    to_stderr=getattr(args, "json", False))
    else:
        result["response"] = None
    return result

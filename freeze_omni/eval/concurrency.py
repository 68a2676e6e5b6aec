"""`freeze-omni bench concurrency`: how many simultaneous users stay real-time, with and without batching.

Simulated users talk to a real server over loopback websockets (``/ws``): each streams a spoken question
(speech-like audio, :func:`freeze_omni.server.testing.speech_like`, after 2 s of silence) in 160 ms frames at
real-time pace, ends it with ``input.flush`` right after the speech (so an answer follows unless the state head said *ignore*), receives
the answer, and starts over until the run's time is up. The users' first questions start spread evenly over one
question's length (people do not all start talking at the same instant; ``--lockstep``: all at once, the worst
case). A run with N users is **real-time** when

* every chunk was processed within its 160 ms (the server's ``chunk_latency_seconds`` histogram: a chunk's last
  sample in -> its state-head verdict; ``--late-tolerance`` allows a fraction over), and
* no answer's audio stalled: playing each answer from its first audio frame on, no frame arrived more than
  ``--jitter-ms`` after the moment it was due (the server paces audio ahead of playback, so only a server that
  falls behind makes a gap), and no protocol error and no unanswered question.

User counts are tried doubling (1, 2, 4, ...) up to ``--max-users``, then bisected between the last real-time
count and the first that was not. Cross-user batching is switched per run on the same engine (the scheduler's
``max_batch``), so both modes share one loaded model. The clients run in the server's process (an asyncio loop
in the main thread; they only sleep, send and receive): on a small machine their cost is part of the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import numpy as np

FRAME_S = 0.16
SR = 16000
LEAD_SILENCE_S = 2.0  # silence before each question


def _hist(engine: Any, name: str) -> tuple[list[int], float, int, tuple]:
    h = engine.metrics.histogram(name)
    if h is None:
        return [], 0.0, 0, ()
    return list(h.counts), h.sum, h.count, h.buckets


def _hist_delta(engine: Any, name: str, before: tuple) -> dict:
    counts, total, n, buckets = _hist(engine, name)
    c0, s0, n0, _ = before
    c0 = c0 or [0] * len(counts)
    d = [a - b for a, b in zip(counts, c0)]
    count = n - n0
    return {"count": count, "mean_ms": round(1000 * (total - s0) / count, 2) if count else None,
            "counts": d, "buckets": buckets}


async def _user(url: str, idx: int, until: float, question_s: float, jitter_s: float, stats: dict,
                answer_timeout: float = 60.0, start_timeout: float = 5.0, offset_s: float = 0.0) -> None:
    """One simulated user: questions at real-time pace until ``until`` (``time.monotonic``).

    One reader follows the whole connection. After a question's ``input.flush`` the user waits until an answer
    finished (not cut by a barge-in) since the question began and no answer is running; a question whose turn
    the state head dismissed (``ignore`` / ``no_decision``) and that sees no answer within ``start_timeout``
    counts as ``ignored``, one with no answer within ``answer_timeout`` as ``unanswered`` (the user then stops).
    Each answer's audio is played, in this model, from its first frame on: a frame later than ``jitter_s`` after
    it was due is a gap."""
    from websockets.asyncio.client import connect

    from freeze_omni.server.testing import pcm16, speech_like

    frame = int(FRAME_S * SR)
    async with connect(url, max_size=None, open_timeout=30, ping_interval=None) as ws:
        hello = json.loads(await ws.recv())
        if hello.get("type") != "session.created":
            stats["errors"].append(hello.get("code", hello.get("type")))
            return
        rate = (hello.get("output_audio") or {}).get("sample_rate")
        st = {"running": None, "first": None, "audio_s": 0.0, "underrun": 0.0, "finished": 0, "started": 0,
              "ignored": False}
        changed = asyncio.Event()

        async def reader() -> None:
            while True:
                msg = await ws.recv()
                now = time.monotonic()
                if isinstance(msg, bytes):
                    if st["running"] is None or not rate:
                        continue
                    if st["first"] is None:
                        st["first"] = now
                    st["underrun"] = max(st["underrun"], now - (st["first"] + st["audio_s"]))
                    st["audio_s"] += len(msg) / 2 / rate
                    continue
                m = json.loads(msg)
                kind = m["type"]
                if kind == "error":
                    stats["errors"].append(m.get("code"))
                elif kind == "input.turn_ended" and m["decision"] not in ("respond", "end_of_input"):
                    st["ignored"] = True
                elif kind == "response.started":
                    st.update(running=m["response_id"], first=None, audio_s=0.0, underrun=0.0)
                    st["started"] += 1
                elif kind == "response.done":
                    stats["answer_audio_s"] += st["audio_s"]
                    stats["max_underrun_ms"] = max(stats["max_underrun_ms"], round(1000 * st["underrun"], 1))
                    if st["underrun"] > jitter_s:
                        stats["gaps"] += 1
                    lat = m.get("latency_ms") or {}
                    if m["status"] != "interrupted":
                        st["finished"] += 1
                        if lat.get("first_audio") is not None:
                            stats["first_audio_ms"].append(lat["first_audio"])
                    st["running"] = None
                changed.set()

        async def wait_for(pred: Any, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except asyncio.TimeoutError:
                    return pred()
            return True

        task = asyncio.create_task(reader())
        try:
            await asyncio.sleep(offset_s)  # users do not all start speaking at the same instant
            q = 0
            while time.monotonic() < until:
                # LEAD_SILENCE_S first (the VAD hears the previous question end: more than its 1.5 s default),
                # none after: the flush comes while the turn is open, so it is answered (end_of_input) even if the
                # state head never fires on synthetic speech
                wave = np.concatenate([np.zeros(int(LEAD_SILENCE_S * SR), np.float32),
                                       speech_like(question_s, seed=1000 * idx + q)])
                q += 1
                finished0, started0 = st["finished"], st["started"]
                st["ignored"] = False
                t0 = time.monotonic()
                for i in range(0, len(wave), frame):
                    await asyncio.sleep(max(0.0, t0 + (i // frame) * FRAME_S - time.monotonic()))
                    await ws.send(pcm16(wave[i:i + frame]))
                await ws.send(json.dumps({"type": "input.flush"}))
                stats["questions"] += 1
                if not await wait_for(lambda: st["started"] > started0 or st["finished"] > finished0,
                                      start_timeout) and st["ignored"]:
                    stats["ignored"] = stats.get("ignored", 0) + 1
                    continue
                if not await wait_for(lambda: st["finished"] > finished0 and st["running"] is None, answer_timeout):
                    stats["unanswered"] += 1
                    return
                stats["answers"] += 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def run_users(srv: Any, engine: Any, users: int, seconds: float, question_s: float = 1.5,
              jitter_ms: float = 100.0, late_tolerance: float = 0.0, stagger: bool = True) -> dict:
    """``users`` simulated users for ``seconds`` against a running server (a ``ServerThread``) of ``engine``;
    with ``stagger`` their first questions start spread evenly over one question's length (silence + speech),
    else all at once (every user's turn in lockstep: the worst case)."""
    stats = {"questions": 0, "answers": 0, "unanswered": 0, "gaps": 0, "max_underrun_ms": 0.0, "errors": [],
             "first_audio_ms": [], "answer_audio_s": 0.0}
    m = engine.metrics
    before = _hist(engine, "chunk_latency_seconds")
    counters0 = {k: m.value(k) for k in ("listen_compute_seconds_total", "listen_audio_seconds_total",
                                         "answer_compute_seconds_total", "answer_audio_seconds_total",
                                         "batches_total", "batched_chunks_total", "llm_passes_total",
                                         "llm_rows_total", "decoder_rounds_total", "decoder_rows_total")}

    async def main() -> None:
        until = time.monotonic() + seconds
        spread = (LEAD_SILENCE_S + question_s) / users if stagger else 0.0
        await asyncio.gather(*(_user(srv.url, i, until, question_s, jitter_ms / 1000, stats, offset_s=i * spread)
                               for i in range(users)))

    t0 = time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - t0
    lat = _hist_delta(engine, "chunk_latency_seconds", before)
    late, over = 0, False
    for b, c in zip(lat["buckets"], lat["counts"]):
        if over:
            late += c
        over = over or b >= FRAME_S
    late += lat["counts"][-1] if lat["counts"] and lat["buckets"] else 0
    d = {k: m.value(k) - v for k, v in counters0.items()}
    ratio = lambda a, b: round(d[a] / d[b], 4) if d[b] > 0 else None  # noqa: E731
    chunks = lat["count"]
    fa = stats["first_audio_ms"]
    ok = (chunks > 0 and late <= late_tolerance * chunks and stats["gaps"] == 0 and not stats["errors"]
          and stats["unanswered"] == 0 and stats["answers"] > 0)
    return {"users": users, "realtime": ok, "wall_s": round(wall, 2), "chunks": chunks, "chunks_late": late,
            "chunk_ms_mean": lat["mean_ms"], "listen_rtf": ratio("listen_compute_seconds_total",
                                                                 "listen_audio_seconds_total"),
            "answer_rtf": ratio("answer_compute_seconds_total", "answer_audio_seconds_total"),
            "chunks_per_round": ratio("batched_chunks_total", "batches_total"),
            "rows_per_llm_pass": ratio("llm_rows_total", "llm_passes_total"),
            "rows_per_decoder_pass": ratio("decoder_rows_total", "decoder_rounds_total"),
            "questions": stats["questions"], "answers": stats["answers"], "unanswered": stats["unanswered"],
            "ignored": stats.get("ignored", 0),
            "answer_audio_s": round(stats["answer_audio_s"], 2), "audio_gaps": stats["gaps"],
            "max_underrun_ms": stats["max_underrun_ms"],
            "first_audio_ms_mean": round(float(np.mean(fa)), 1) if fa else None,
            "errors": sorted(set(map(str, stats["errors"])))}


def find_max_users(engine: Any, max_users: int, seconds: float, batching: bool, **kw: Any) -> dict:
    """The largest real-time user count (doubling, then bisection) in one batching mode."""
    from freeze_omni.server.app import ServerSettings, create_app
    from freeze_omni.server.testing import ServerThread

    engine.scheduler.max_batch = engine.cfg.max_batch if batching else 1
    runs: dict[int, dict] = {}
    with ServerThread(create_app(engine, ServerSettings(max_users=max_users, idle_timeout_s=600.0))) as srv:
        def probe(n: int) -> bool:
            if n not in runs:
                runs[n] = run_users(srv, engine, n, seconds, **kw)
            return runs[n]["realtime"]

        good, bad, n = 0, None, 1
        while n <= max_users:
            if not probe(n):
                bad = n
                break
            good = n
            if n == max_users:
                break
            n = min(2 * n, max_users)
        while bad is not None and bad - good > 1:
            mid = (good + bad) // 2
            if probe(mid):
                good = mid
            else:
                bad = mid
    return {"batching": batching, "max_realtime_users": good, "runs": [runs[k] for k in sorted(runs)]}


def concurrency(engine: Any, max_users: int, seconds: float, modes: tuple = (True, False), **kw: Any) -> dict:
    """Both batching modes on one engine; ``batching_gain``: max users with / without."""
    out: dict[str, Any] = {"max_users_tried": max_users, "seconds_per_run": seconds, "chunk_ms": int(FRAME_S * 1000),
                           "workers": engine.cfg.workers, "threads": _threads()}
    for b in modes:
        out["batching" if b else "no_batching"] = find_max_users(engine, max_users, seconds, b, **kw)
    if len(modes) == 2:
        a, b = out["batching"]["max_realtime_users"], out["no_batching"]["max_realtime_users"]
        out["batching_gain"] = round(a / b, 3) if b else None
    return out


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_concurrency(args: argparse.Namespace) -> dict:
    """The CLI entry: load ``--model`` with ``--workers`` workers, warm it up, measure both modes."""
    from freeze_omni.dialogue.engine import DialogueEngine, EngineConfig

    from freeze_omni.server.cli import host_engine

    engine = DialogueEngine.from_bundle(args.model, EngineConfig(workers=args.workers),
                                        vad=getattr(args, "vad", "silero"), device=getattr(args, "device", "cpu"),
                                        int8=getattr(args, "int8", False))
    engine.warmup()
    modes = (True,) if args.batching_only else (False,) if args.no_batching else (True, False)
    out: dict = {}

    def measure() -> None:  # the server and the users in a thread; this (main) thread is a worker, as in `serve`
        out["result"] = concurrency(engine, args.max_users, args.seconds, modes, question_s=args.question_seconds,
                                    jitter_ms=args.jitter_ms, late_tolerance=args.late_tolerance,
                                    stagger=not args.lockstep)

    host_engine(engine, measure, lambda: None)
    if "result" not in out:
        raise RuntimeError("the concurrency measurement did not finish")
    return out["result"]


def add_args(b: argparse.ArgumentParser) -> None:
    """The ``bench concurrency`` options (on the shared ``bench`` parser)."""
    b.add_argument("--max-users", type=int, default=16, help="concurrency: most simultaneous users tried")
    b.add_argument("--seconds", type=float, default=20.0, help="concurrency: seconds per user count")
    b.add_argument("--workers", type=int, default=1,
                   help="concurrency: server model workers (default: %(default)s, the main thread, as `serve`)")
    b.add_argument("--question-seconds", type=float, default=1.5, help="concurrency: speech per question")
    b.add_argument("--jitter-ms", type=float, default=100.0,
                   help="concurrency: answer audio may arrive this late before it counts as a gap")
    b.add_argument("--late-tolerance", type=float, default=0.0,
                   help="concurrency: fraction of chunks allowed over 160 ms (default: none)")
    b.add_argument("--vad", choices=("silero", "energy"), default="silero", help="concurrency: the server's speech gate")
    b.add_argument("--lockstep", action="store_true",
                   help="concurrency: all users start their questions at the same instant (default: spread over "
                        "one question)")
    b.add_argument("--no-batching", action="store_true", help="concurrency: only without cross-user batching")
    b.add_argument("--batching-only", action="store_true", help="concurrency: only with cross-user batching")

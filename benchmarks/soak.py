"""Soak test: N simulated users talk to a `freeze-omni serve` for T minutes; one JSON line comes out.

    python benchmarks/soak.py --model models/default --users 16 --minutes 5     # starts the server itself
    python benchmarks/soak.py --url ws://127.0.0.1:8765/ws --pid 1234          # an already running server

Each user streams spoken questions in 160 ms frames at real-time pace, ends each with ``input.flush`` and waits
for the answer (the users of ``freeze-omni bench concurrency``); a dropped connection is counted and reopened.
Reported: questions, answers, unanswered questions, protocol errors (``error`` events and dropped connections, by
code), answer-audio gaps (a frame later than ``--jitter-ms`` after it was due for playback), and the server's
resident memory sampled every ``--rss-every`` seconds: ``rss_growth_mb`` compares the mean of the last quarter
of the run with the second quarter (after warm-up), ``rss_flat`` is true when it grew less than ``--rss-slack-mb``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freeze_omni.eval.concurrency import _user  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workers: int, users: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """``freeze-omni serve`` on a free loopback port; returns (process, ws url) once ``/health`` answers."""
    port = _free_port()
    cmd = [sys.executable, "-m", "freeze_omni.server.cli", "--model", model, "--port", str(port), "--workers",
           str(workers), "--max-users", str(users + 1), "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, f"ws://127.0.0.1:{port}/ws"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not come up")


def rss_mb(pid: int) -> Optional[float]:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        try:
            with open(f"/proc/{pid}/status") as f:
                return next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS"))
        except Exception:
            return None


async def soak(url: str, users: int, seconds: float, pid: Optional[int], rss_every: float, question_s: float,
               jitter_ms: float) -> dict:
    stats: dict[str, Any] = {"questions": 0, "answers": 0, "unanswered": 0, "gaps": 0, "max_underrun_ms": 0.0,
                             "errors": [], "first_audio_ms": [], "answer_audio_s": 0.0}
    until = time.monotonic() + seconds
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()

    async def user(i: int) -> None:
        while time.monotonic() < until:
            try:
                await _user(url, i, until, question_s, jitter_ms / 1000, stats)
            except Exception as e:  # a dropped connection: count it, reconnect
                stats["errors"].append(f"connection:{type(e).__name__}")
                await asyncio.sleep(0.5)

    async def sampler() -> None:
        while time.monotonic() < until:
            if pid is not None and (m := rss_mb(pid)) is not None:
                rss.append((round(time.monotonic() - t0, 1), round(m, 1)))
            await asyncio.sleep(rss_every)

    await asyncio.gather(sampler(), *(user(i) for i in range(users)))
    errors: dict[str, int] = {}
    for e in stats["errors"]:
        errors[str(e)] = errors.get(str(e), 0) + 1
    out = {"users": users, "seconds": round(time.monotonic() - t0, 1), "questions": stats["questions"],
           "answers": stats["answers"], "unanswered": stats["unanswered"], "ignored": stats.get("ignored", 0),
           "protocol_errors": sum(errors.values()), "errors_by_code": errors, "audio_gaps": stats["gaps"],
           "max_underrun_ms": stats["max_underrun_ms"], "answer_audio_s": round(stats["answer_audio_s"], 1),
           "first_audio_ms_mean": (round(sum(stats["first_audio_ms"]) / len(stats["first_audio_ms"]), 1)
                                   if stats["first_audio_ms"] else None)}
    if rss:
        vals = [m for _, m in rss]
        q = max(1, len(vals) // 4)
        second, last = vals[q:2 * q] or vals[:q], vals[-q:]
        out.update(rss_mb_start=vals[0], rss_mb_end=vals[-1], rss_mb_max=max(vals),
                   rss_growth_mb=round(sum(last) / len(last) - sum(second) / len(second), 1),
                   rss_samples=rss[:: max(1, len(rss) // 30)])
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/default", help="bundle to serve (when no --url)")
    p.add_argument("--url", default=None, help="an already running server's ws://.../ws")
    p.add_argument("--pid", type=int, default=None, help="with --url: the server's pid, for its memory")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=1, help="server workers (when the script starts it)")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `freeze-omni serve` argument")
    p.add_argument("--question-seconds", type=float, default=1.5)
    p.add_argument("--jitter-ms", type=float, default=100.0)
    p.add_argument("--rss-every", type=float, default=5.0, help="seconds between memory samples")
    p.add_argument("--rss-slack-mb", type=float, default=50.0, help="growth still called flat")
    a = p.parse_args(argv)
    proc = None
    url, pid = a.url, a.pid
    if url is None:
        proc, url = start_server(a.model, a.workers, a.users, a.serve_arg)
        pid = proc.pid
    try:
        out = asyncio.run(soak(url, a.users, a.minutes * 60, pid, a.rss_every, a.question_seconds, a.jitter_ms))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if "rss_growth_mb" in out:
        out["rss_flat"] = out["rss_growth_mb"] < a.rss_slack_mb
    out["ok"] = (out["protocol_errors"] == 0 and out["audio_gaps"] == 0 and out["unanswered"] == 0
                 and out["answers"] > 0 and out.get("rss_flat", True))
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())

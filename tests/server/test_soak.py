"""benchmarks/soak.py for ~10 s with 2 users against the tiny engine (served in this process: its state head is
forced to answer, so every question gets one), and its server-starting path against `freeze-omni serve`."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def soak(*args, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--users", "2", "--rss-every", "1",
                        "--question-seconds", "0.8", *args], capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=ROOT)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_soak_two_users_ten_seconds(bundle):
    from freeze_omni.server.app import create_app
    from freeze_omni.server.testing import ServerThread, tiny_engine

    engine = tiny_engine(bundle, answer_tokens=12)
    engine.warmup()
    with ServerThread(create_app(engine)) as srv:
        out = soak("--url", srv.url, "--pid", str(os.getpid()), "--minutes", str(10 / 60))
    assert out["users"] == 2 and out["questions"] >= 4 and out["answers"] >= 4 and out["unanswered"] == 0
    assert out["protocol_errors"] == 0, out["errors_by_code"]
    assert out["rss_mb_start"] > 0 and len(out["rss_samples"]) >= 5 and "rss_flat" in out
    assert out["ok"] == (out["audio_gaps"] == 0 and out["rss_flat"])


def test_soak_starts_the_server(bundle):
    out = soak("--model", str(bundle), "--minutes", str(4 / 60), "--serve-arg=--threads=1",
               "--serve-arg=--vad=energy")
    assert out["questions"] >= 2 and out["protocol_errors"] == 0, out
    assert out["answers"] + out["ignored"] + out["unanswered"] >= 1 and out["rss_mb_start"] > 0

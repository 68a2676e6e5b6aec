"""`bench concurrency` on the tiny random engine (2 users, a few seconds per count) and its CLI registration."""

import json

from freeze_omni.server.testing import tiny_engine


def test_concurrency_bench_tiny(bundle):
    from freeze_omni.eval.concurrency import concurrency

    engine = tiny_engine(bundle, answer_tokens=12)
    engine.warmup()
    out = concurrency(engine, max_users=2, seconds=3.0, question_s=0.8, jitter_ms=400.0, late_tolerance=0.2)
    json.dumps(out)
    for mode in ("batching", "no_batching"):
        r = out[mode]
        assert 0 <= r["max_realtime_users"] <= 2 and r["runs"]
        first = r["runs"][0]
        assert first["users"] == 1 and first["questions"] >= 1 and first["answers"] >= 1 and first["chunks"] > 0
        assert not first["errors"] and first["chunk_ms_mean"] > 0
    assert "batching_gain" in out


def test_concurrency_is_a_bench():
    from freeze_omni.cli import build_parser
    from freeze_omni.eval.cli import BENCHES

    assert BENCHES["concurrency"] == "freeze_omni.eval.concurrency:bench_concurrency"
    args = build_parser().parse_args(["bench", "concurrency", "--json", "--max-users", "3", "--seconds", "5",
                                      "--workers", "2"])
    assert (args.max_users, args.seconds, args.workers) == (3, 5.0, 2)

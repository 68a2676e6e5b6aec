"""`benchmarks/gpu_latency.py` runs on the CPU in its dry-run mode (tiny shapes, 1 turn) and skips cleanly
without CUDA."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_latency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_latency", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_latency"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(bench, capsys, *args) -> dict:
    assert bench.main(list(args)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_dry_run_on_cpu(bench, capsys, dtype):
    t0 = time.perf_counter()
    r = _run(bench, capsys, "--dry-run", "--dtype", dtype)
    assert time.perf_counter() - t0 < 20
    assert r["device"] == "cpu" and r["tiny"] and r["turns"] == 1
    stages = ["llm_decision_to_first_text_chunk", "first_text_chunk_to_decoder_prefill",
              "decoder_prefill_to_first_speech_chunk", "first_speech_chunk_to_first_pcm", "total"]
    assert list(r["latency_ms"]) == stages and all(r["latency_ms"][s]["p50"] > 0 for s in stages)
    cap = r["capacity"]
    assert cap["realtime_users"] in (0, 1, 2) and cap["trials"][0]["users"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_skips_without_cuda(bench, capsys):
    r = _run(bench, capsys)
    assert r["skipped"] is True and "CUDA" in r["reason"]

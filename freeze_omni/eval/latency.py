"""Response latency (part of `freeze-omni bench latency`): end-of-turn decision -> first audio sample.

Every spoken question goes through the live path (:func:`freeze_omni.dialogue.turn.run_turn`: 160 ms packets,
encoder, adapter, frozen LLM) and is answered twice in the same run, each time in a fresh session with greedy text
and the same codec-token seed: **streaming** (segments decoded as soon as they are complete, codec windows) and
the **cascade** (the whole answer text first, then the whole synthesis). The turn is answered at the end of the
file (``use_state_head=False``): the clock starts at the end-of-turn decision whichever way it is made, and every
question then gets an answer. One unmeasured warm-up turn comes first.

Reported per mode: p50 / p90 of each stage of the paper's latency table (facts §5.4,
:data:`freeze_omni.dialogue.answer.STAGES`) and of the total; the ratio streaming / cascade of the total (p50,
p90); how many answers differ between the two modes (they should not: greedy text, same seed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from freeze_omni.audio.io import AudioError, load_audio
from freeze_omni.dialogue.answer import STAGES, stage_breakdown

QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What is two plus three?",
    "Can you tell me a fun fact about the moon?",
    "What colour is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "How do I boil an egg?",
    "What is the largest ocean on Earth?",
    "Name three kinds of fruit.",
    "Why do leaves change colour in autumn?",
    "What is the boiling point of water?",
    "How many days are there in a week?",
    "What language is spoken in Brazil?",
    "Give me a tip for sleeping better.",
    "What is the opposite of hot?",
    "How far away is the sun?",
    "What do bees make?",
    "Can you suggest a name for a cat?",
    "What is the tallest animal?",
    "How are you today?",
)
VOICE = "espeak:en-us"


def question_waves(manifest: Optional[str], n: int, workdir: Optional[str] = None) -> list[np.ndarray]:
    """Up to ``n`` spoken questions (16 kHz): the first turns' audio of a Q&A manifest, the ``audio`` of plain
    rows, or (no manifest) :data:`QUESTIONS` spoken by espeak-ng into ``workdir`` (default: a temporary folder)."""
    if manifest:
        from freeze_omni.data.manifest import read_manifest

        paths = [t["audio"] for r in read_manifest(manifest) for t in (r.get("turns") or [r]) if t.get("audio")]
        waves = []
        for p in paths:
            try:
                waves.append(load_audio(p))
            except AudioError:
                continue
            if len(waves) == n:
                break
        return waves
    from freeze_omni.data.synth import synthesize

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        waves = []
        for i in range(n):
            path = Path(tmp) / f"q{i:02d}.wav"
            synthesize(QUESTIONS[i % len(QUESTIONS)], VOICE, out_path=path)
            waves.append(load_audio(path))
    return waves


def _pct(xs: list[float]) -> dict[str, Optional[float]]:
    if not xs:
        return {"p50": None, "p90": None}
    return {"p50": round(float(np.percentile(xs, 50)), 1), "p90": round(float(np.percentile(xs, 90)), 1)}


def response_latency(listener: Any, speech: Any, waves: list[np.ndarray], max_new_tokens: int = 64,
                     seed: int = 0) -> dict[str, Any]:
    """Answer every wave in streaming and cascade mode; percentiles of the latency stages (ms)."""
    import torch

    from freeze_omni.dialogue.turn import run_turn
    from freeze_omni.llm.sampling import SamplingConfig

    greedy = SamplingConfig(greedy=True, max_new_tokens=max_new_tokens)
    modes = ("streaming", "cascade")
    stages: dict[str, dict[str, list[float]]] = {m: {k: [] for k in STAGES} for m in modes}
    audio_s: dict[str, list[float]] = {m: [] for m in modes}
    differ = silent = 0

    def turn(wave: np.ndarray, cascade: bool):
        res, _ = run_turn(listener, listener.new_session(), wave, greedy, use_state_head=False,
                          generator=torch.Generator().manual_seed(seed), speech=speech, speech_seed=seed,
                          cascade=cascade)
        return res

    if waves:
        turn(waves[0], False)  # warm-up
    for wave in waves:
        answers = []
        for m in modes:
            res = turn(wave, m == "cascade")
            answers.append(res.speech_tokens)
            if "first_audio" not in res.latency_ms:
                silent += 1
                continue
            for k, v in stage_breakdown(res.latency_ms).items():
                if v is not None:
                    stages[m][k].append(v)
            audio_s[m].append(len(res.audio) / res.sample_rate)
        differ += answers[0] != answers[1]
    out: dict[str, Any] = {"n": len(waves), "max_new_tokens": max_new_tokens, "silent": silent,
                           "differ": differ, "stages": list(STAGES)}
    for m in modes:
        out[m] = {k: _pct(v) for k, v in stages[m].items()}
        out[m]["audio_seconds_p50"] = _pct(audio_s[m])["p50"]
    for q in ("p50", "p90"):
        s, c = out["streaming"]["total"][q], out["cascade"]["total"][q]
        out[f"ratio_{q}"] = round(s / c, 3) if s is not None and c else None
    return out


def latency_table_rows(resp: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[stage, streaming p50, p90, cascade p50, p90]`` for :func:`freeze_omni.eval.table.print_table`."""
    return [[k, resp["streaming"][k]["p50"], resp["streaming"][k]["p90"], resp["cascade"][k]["p50"],
             resp["cascade"][k]["p90"]] for k in resp["stages"]]

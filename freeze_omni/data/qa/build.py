"""The whole stage-3 data set (:func:`build_qa`): question speech, state-2 clips, the training manifests, and
their readers (:func:`read_qa_manifest`, :func:`read_state2_manifest`). See :mod:`freeze_omni.data.qa`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import soundfile as sf

from freeze_omni.data import corpus as C
from freeze_omni.data.manifest import read_manifest, write_manifest
from freeze_omni.data.qa.answers import generate_answers, read_answers
from freeze_omni.data.qa.labels import CHUNK_SECONDS, SAMPLE_RATE, speech_end
from freeze_omni.data.qa.questions import SPLITS, Dialogue, plan_dialogues
from freeze_omni.data.qa.state2 import (_SPOKEN, STATE2_KINDS, State2Item, babble_clip, cough_clip, knock_clip,
                                        noise_clip, plan_state2)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# Reading manifests back


def _audio_ok(path: Any) -> bool:
    if not isinstance(path, str):
        return False
    try:
        return sf.info(path).frames > 0
    except Exception:  # soundfile raises several types
        return False


def read_qa_manifest(path: str | os.PathLike, check_audio: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Read a Q&A manifest, skipping dialogues that cannot be used.

    A row is skipped when it has no turns, a turn lacks a ``question`` or ``answer`` string, or (with
    ``check_audio``) a turn's ``audio`` is missing, unreadable or empty. Rows without any ``audio`` (made with
    ``--skip-speech``) are kept. Audio paths come back absolute.

    Returns:
        ``(rows, skipped)``.
    """
    rows, skipped = [], 0
    for r in read_manifest(path):
        turns = r.get("turns")
        ok = isinstance(turns, list) and len(turns) > 0 and all(
            isinstance(t, dict) and isinstance(t.get("question"), str) and isinstance(t.get("answer"), str)
            and (not check_audio or "audio" not in t or _audio_ok(t["audio"])) for t in turns)
        if ok:
            rows.append(r)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unusable dialogue(s)", path, skipped)
    return rows, skipped


def read_state2_manifest(path: str | os.PathLike, check_audio: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Read a state-2 manifest; rows with missing/unreadable ``audio`` (when ``check_audio``) are skipped.

    Returns:
        ``(rows, skipped)``.
    """
    rows, skipped = [], 0
    for r in read_manifest(path):
        if "audio" in r and (not check_audio or _audio_ok(r["audio"])):
            rows.append(r)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: skipped %d unusable clip(s)", path, skipped)
    return rows, skipped


# --------------------------------------------------------------------------------------------------------------
# Speech and the whole pipeline


def _voice_pools(voices: Sequence[str], heldout_voices: Sequence[str]) -> dict[str, list[str]]:
    train = [v for v in voices if v not in set(heldout_voices)]
    if not train:
        raise ValueError("no voices left for the train split")
    return {"train": train, "heldout": list(heldout_voices) or train}


def _plan_speech(dialogues: Sequence[Dialogue], pools: Mapping[str, list[str]], seed: int,
                 engine_weights: Mapping[str, float] | None) -> list[Any]:
    """One :class:`SynthJob` per question turn; one voice per dialogue, rate/pitch jittered per turn."""
    from freeze_omni.data.synth import SynthJob, plan_jobs

    jobs = []
    for idx, d in enumerate(dialogues):
        base = plan_jobs([(idx, d.id)], pools[d.split], 1, seed, engine_weights)[0]
        rng = np.random.default_rng([seed, 301, idx])
        for k, q in enumerate(d.questions):
            rate = float(np.clip(base.rate * rng.uniform(0.93, 1.07), 0.6, 1.4))
            pitch = base.pitch + float(rng.uniform(-0.5, 0.5)) if not base.voice.startswith("piper:") else 0.0
            jobs.append(SynthJob(f"{d.id}_t{k}", q, base.voice, round(rate, 3), round(pitch, 2)))
    return jobs


def _speech_rows(manifest: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_manifest(manifest)} if manifest.exists() else {}


def _end_of(path: str) -> float:
    from freeze_omni.audio.io import load_audio

    return round(speech_end(load_audio(path, SAMPLE_RATE), SAMPLE_RATE), 3)


def make_state2(items: Sequence[State2Item], out_dir: str | os.PathLike, pools: Mapping[str, list[str]],
                babble_sources: Mapping[str, Sequence[str]] = {}, jobs: int = 2, seed: int = 0,
                engine_weights: Mapping[str, float] | None = None, timeout: float = 60.0,
                progress: bool = True) -> dict[str, Any]:
    """Make the state-2 clips into ``out_dir/wav`` and write ``out_dir/manifest.jsonl`` (resumable).

    Spoken kinds go through :func:`~freeze_omni.data.synth.synth_corpus` (``out_dir/tts_manifest.jsonl``)
    with the split's voices; sound kinds are generated here from a per-clip seed; babble mixes the clip's
    split's spoken state-2 clips plus ``babble_sources[split]`` (wav paths; e.g. the Q&A question audio).

    Returns:
        A summary with ``manifest``, ``total``, ``made`` per kind and ``failed``.
    """
    from freeze_omni.audio.io import load_audio, save_wav
    from freeze_omni.data.synth import SynthJob, plan_jobs, synth_corpus

    out_dir = Path(out_dir).resolve()
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    plan = []
    for idx, it in enumerate(items):
        if it.kind in _SPOKEN:
            j = plan_jobs([(idx, it.id)], pools[it.split], 1, seed + 7, engine_weights)[0]
            plan.append(SynthJob(it.id, it.spoken, j.voice, j.rate, j.pitch))
    tts = synth_corpus([], out_dir, [v for p in pools.values() for v in p], jobs=jobs, timeout=timeout,
                       progress=progress, plan=plan, manifest_name="tts_manifest.jsonl") if plan else \
        {"failed": 0, "errors": []}
    tts_rows = _speech_rows(out_dir / "tts_manifest.jsonl")
    sources: dict[str, list[str]] = {s: list(babble_sources.get(s, ())) for s in SPLITS}
    for it in items:
        if it.id in tts_rows:
            sources[it.split].append(tts_rows[it.id]["audio"])
    cache: dict[str, np.ndarray] = {}

    def src_waves(split: str, rng: np.random.Generator) -> list[np.ndarray]:
        paths = sources[split] or sources["train"]
        chosen = [paths[int(i)] for i in rng.choice(len(paths), size=min(8, len(paths)), replace=False)]
        for p in chosen:
            if p not in cache:
                try:
                    cache[p] = load_audio(p, SAMPLE_RATE)
                except Exception:
                    cache[p] = np.zeros(0, dtype=np.float32)
        return [cache[p] for p in chosen if len(cache[p])]

    rows, failed, made = [], int(tts.get("failed", 0)), {k: 0 for k in STATE2_KINDS}
    for idx, it in enumerate(items):
        wav = wav_dir / f"{it.id}.wav"
        speaker = ""
        if it.kind in _SPOKEN:
            r = tts_rows.get(it.id)
            if r is None:
                continue
            speaker = r.get("speaker", "")
        elif not _audio_ok(os.fspath(wav)):
            rng = np.random.default_rng([seed, 401, idx])
            if it.kind == "noise":
                x = noise_clip(rng)
            elif it.kind == "cough":
                x = cough_clip(rng)
            elif it.kind == "knock":
                x = knock_clip(rng)
            else:
                srcs = src_waves(it.split, rng) if any(sources.values()) else []
                if not srcs:
                    failed += 1
                    continue
                x = babble_clip(rng, srcs)
            save_wav(wav, x, SAMPLE_RATE)
        info = sf.info(os.fspath(wav))
        made[it.kind] += 1
        rows.append({"id": it.id, "audio": os.fspath(wav), "kind": it.kind, "text": it.text, "split": it.split,
                     "duration": round(info.frames / info.samplerate, 3), "speech_end": _end_of(os.fspath(wav)),
                     "speaker": speaker})
    write_manifest(out_dir / "manifest.jsonl", rows)
    return {"manifest": os.fspath(out_dir / "manifest.jsonl"), "total": len(items), "made": made,
            "failed": failed, "errors": tts.get("errors", [])[:5], "rows": rows}


def build_qa(out: str | os.PathLike, n: int = 3000, multi_frac: float = 0.3, heldout_frac: float = 0.1,
             llm: Any | Callable[[], Any] | None = None, llm_name: str = "", system: str = "",
             sampling: Any = None, batch_size: int = 16, state2: int = 400, voices: Sequence[str] = (),
             heldout_voices: Sequence[str] = (), jobs: int = 2, seed: int = 0, skip_speech: bool = False,
             engine_weights: Mapping[str, float] | None = None, wordnet_dir: str = C.WORDNET_DIR,
             timeout: float = 60.0, progress: bool = True, limit: Optional[int] = None) -> dict[str, Any]:
    """The whole stage-3 data set under ``out`` (see :mod:`freeze_omni.data.qa`); every step resumes.

    Args:
        llm: a FrozenLLM or a function returning one (loaded only when answers are missing).
        llm_name, system, sampling: what the answers are generated with (``sampling.max_new_tokens`` is the
            answer budget); the name and prompt are recorded in ``qa_meta.json``.
        voices: voice specs for the train split; ``heldout_voices`` (kept out of ``voices`` for training)
            speak the held-out split, or the train voices when empty.
        skip_speech: text only (no wav, no state-2 clips; manifest turns have no ``audio``).
        limit: only the first ``limit`` dialogues of the ``n`` planned (a quick first set; a later run without
            it completes the same plan, reusing what is done).

    Returns:
        A JSON-able summary.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    planned = plan_dialogues(n, multi_frac, heldout_frac, seed, wordnet_dir)
    write_manifest(out / "dialogues.jsonl", [d.to_row() for d in planned])
    dialogues = planned[:limit]
    ans = generate_answers(dialogues, llm, out / "answers.jsonl", system, sampling, batch_size, llm_name, progress)
    answers = read_answers(out / "answers.jsonl")
    kept = [d for d in dialogues if d.id in answers and answers[d.id].get("dropped") is None
            and answers[d.id].get("questions") == d.questions and len(answers[d.id]["answers"]) == len(d.questions)]
    summary: dict[str, Any] = {"out": os.fspath(out), "planned": len(dialogues), "answers": {
        k: v for k, v in ans.items() if k != "answers"}}
    speech: dict[str, dict[str, Any]] = {}
    if not skip_speech:
        from freeze_omni.data.synth import synth_corpus

        pools = _voice_pools(voices, heldout_voices)
        plan = _plan_speech(kept, pools, seed, engine_weights)
        res = synth_corpus([], out, [v for p in pools.values() for v in p], jobs=jobs, timeout=timeout,
                           progress=progress, plan=plan, manifest_name="speech_manifest.jsonl")
        speech = _speech_rows(out / "speech_manifest.jsonl")
        summary["speech"] = {k: res[k] for k in ("total", "existing", "synthesized", "failed", "hours", "errors")}
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    no_audio = 0
    for d in kept:
        a = answers[d.id]["answers"]
        turns = []
        for k, (q, ans_k) in enumerate(zip(d.questions, a)):
            t: dict[str, Any] = {"question": q, "answer": ans_k}
            if not skip_speech:
                r = speech.get(f"{d.id}_t{k}")
                if r is None:
                    break
                t.update(audio=r["audio"], duration=r["duration"], speech_end=_end_of(r["audio"]))
            turns.append(t)
        if len(turns) < len(d.questions):
            no_audio += 1
            continue
        speaker = speech.get(f"{d.id}_t0", {}).get("speaker", "")
        by_split[d.split].append({"id": d.id, "split": d.split, "kind": d.kind, "speaker": speaker, "turns": turns})
    for s in SPLITS:
        write_manifest(out / f"qa_{s}.jsonl", by_split[s])
    summary.update(qa_train=len(by_split["train"]), qa_heldout=len(by_split["heldout"]),
                   multi_round=sum(len(r["turns"]) > 1 for rows in by_split.values() for r in rows),
                   missing_audio=no_audio)
    if not skip_speech and state2 > 0:
        items = plan_state2(state2, heldout_frac, seed, avoid=[q for d in planned for q in d.questions])
        src = {s: [t["audio"] for r in by_split[s] for t in r["turns"]] for s in SPLITS}
        res2 = make_state2(items, out / "state2", pools, src, jobs, seed, engine_weights, timeout, progress)
        for s in SPLITS:
            write_manifest(out / f"state2_{s}.jsonl", [r for r in res2["rows"] if r["split"] == s])
        summary["state2"] = {"train": sum(r["split"] == "train" for r in res2["rows"]),
                             "heldout": sum(r["split"] == "heldout" for r in res2["rows"]),
                             "by_kind": res2["made"], "failed": res2["failed"], "errors": res2["errors"]}
    meta = {"llm": llm_name, "system": system, "sampling": {k: getattr(sampling, k) for k in (
        "greedy", "temperature", "top_k", "top_p", "max_new_tokens") if hasattr(sampling, k)},
        "chunk_seconds": CHUNK_SECONDS, "seed": seed, "n": n, "multi_frac": multi_frac, "heldout_frac": heldout_frac,
        "voices": {"train": len(voices) - len(set(heldout_voices) & set(voices)), "heldout": list(heldout_voices)}}
    (out / "qa_meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    summary["files"] = sorted(p.name for p in out.glob("*.jsonl"))
    return summary

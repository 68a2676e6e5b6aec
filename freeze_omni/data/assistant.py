"""Output stage 3 data: the frozen LLM's own answers, cut into segments as a live answer is, in the assistant voice.

Input: the ``answers.jsonl`` of ``freeze-omni data qa`` (``{"id", "questions", "answers", "dropped"}``, answers
written by the frozen LLM from the text questions) and the ``dialogues.jsonl`` beside it (the train / held-out
split of each dialogue). Only each dialogue's first round is used: the prefix stage frames an answer as the reply
to its question alone (:func:`freeze_omni.decoder.generator.answer_hidden`), which later rounds are not.

Each answer is tokenised by the frozen LLM and cut by :class:`~freeze_omni.decoder.segmenter.TextSegmenter`
exactly as the live path cuts a generated answer; every segment becomes one row
``{"id", "question", "answer", "answer_before", "text", "audio"}``: ``answer`` the segment's raw text,
``answer_before`` the answer's text before it (the prefix stage's teacher-forced pass covers
``question + answer_before + answer``), ``text`` its normalised form (:func:`~freeze_omni.decoder.segmenter.normalize_tts`),
which is what is spoken, with one fixed voice and prosody (``piper:joe`` by default).

Output under ``OUT``: ``wav/`` + ``manifest.jsonl`` (synthesis, resumable), ``train.jsonl`` and ``eval.jsonl``
(the rows of train / held-out dialogues whose audio was made).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

from freeze_omni.data.manifest import read_manifest, write_manifest
from freeze_omni.decoder.segmenter import TextSegmenter

ASSISTANT_VOICE = "piper:joe"


def answer_segments(answers: list[dict[str, Any]], tokenize: Callable[[str], list[int]],
                    decode: Callable[[list[int]], str], splits: Optional[dict[str, str]] = None) -> list[dict]:
    """One row per segment of each kept dialogue's first answer (module docstring), with its ``split``."""
    rows = []
    for a in answers:
        if a.get("dropped") or not a.get("answers") or not a.get("questions"):
            continue
        answer = a["answers"][0].strip()
        seg = TextSegmenter(decode)
        pieces = [s for t in tokenize(answer) for s in seg.push(t)]
        last = seg.flush()
        pieces += [last] if last is not None else []
        before = ""
        for k, s in enumerate(pieces):
            if s.tts_text:
                rows.append({"id": f"{a['id']}_s{k}", "question": a["questions"][0], "answer": s.text,
                             "answer_before": before, "text": s.tts_text,
                             "split": (splits or {}).get(a["id"], "train")})
            before += s.text
    return rows


def build_answer_speech(answers_path: str | os.PathLike, out: str | os.PathLike, tokenize: Callable[[str], list[int]],
                        decode: Callable[[list[int]], str], voice: str = ASSISTANT_VOICE, jobs: int = 2,
                        timeout: float = 60.0, limit: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
    """Segment the answers, speak every segment, write ``train.jsonl`` / ``eval.jsonl`` (module docstring)."""
    from freeze_omni.data.qa.answers import read_answers
    from freeze_omni.data.synth import SynthJob, synth_corpus

    answers_path, out = Path(answers_path), Path(out)
    answers = list(read_answers(answers_path).values())[:limit]
    plan = answers_path.parent / "dialogues.jsonl"
    splits = {r["id"]: r.get("split", "train") for r in read_manifest(plan, resolve_audio=False)} \
        if plan.is_file() else {}
    rows = answer_segments(answers, tokenize, decode, splits)
    if not rows:
        raise ValueError(f"{answers_path}: no usable answers")
    jobs_ = [SynthJob(r["id"], r["text"], voice, 1.0, 0.0) for r in rows]
    summary = synth_corpus([], out, [voice], jobs=jobs, timeout=timeout, progress=progress, plan=jobs_)
    audio = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    made = [{**r, "audio": audio[r["id"]]["audio"], "duration": audio[r["id"]].get("duration")}
            for r in rows if r["id"] in audio]
    train = [r for r in made if r["split"] == "train"]
    heldout = [r for r in made if r["split"] != "train"]
    write_manifest(out / "train.jsonl", train)
    write_manifest(out / "eval.jsonl", heldout)
    return {"dialogues": len(answers), "segments": len(rows), "train": len(train), "eval": len(heldout),
            "failed": summary["failed"], "hours": summary["hours"], "errors": summary["errors"],
            "out": os.fspath(out)}

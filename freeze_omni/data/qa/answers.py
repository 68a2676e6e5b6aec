"""Self-distilled answers: the frozen LLM answers each planned dialogue round by round, appended to a
resumable ``answers.jsonl``. See :mod:`freeze_omni.data.qa`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from freeze_omni.data.manifest import append_rows, read_manifest
from freeze_omni.data.qa.questions import Dialogue

# --------------------------------------------------------------------------------------------------------------
# Answers from the frozen LLM


def _gen_fingerprint(llm_name: str, system: str, sampling: Any) -> str:
    fields = {k: getattr(sampling, k) for k in ("greedy", "temperature", "top_k", "top_p", "max_new_tokens")
              if hasattr(sampling, k)}
    blob = json.dumps({"llm": llm_name, "system": system, "sampling": fields}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


def _answer_batch(llm: Any, questions: list[str], histories: list[list[tuple[str, str]]], system: str,
                  sampling: Any, batch_size: int) -> list[tuple[str, bool]]:
    """``(answer, finished)`` per question; ``finished`` is False when the answer ran into ``max_new_tokens``.

    Uses ``FrozenLLM.answer_ids`` (which says whether the end-of-turn token was sampled) when the LLM has it.
    With ``answer_text`` alone, an answer counts as unfinished when its re-tokenized length reaches
    ``max_new_tokens - 1`` (one token of slack for a decode/encode round trip that merges two tokens).
    """
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    if any(histories):
        kwargs["history"] = histories
    if hasattr(llm, "answer_ids"):
        return [(llm.decode(ids).strip(), bool(fin))
                for ids, fin in llm.answer_ids(questions, system, sampling, **kwargs)]
    answers = llm.answer_text(questions, system, sampling, **kwargs)
    limit = max(1, int(sampling.max_new_tokens) - 1)
    return [(a, len(llm.tokenize(a)) < limit) for a in answers]


def read_answers(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The rows of an ``answers.jsonl`` by id (the last row of an id wins; a truncated last line is skipped)."""
    path = Path(path)
    return {r["id"]: r for r in read_manifest(path, resolve_audio=False) if "id" in r} if path.exists() else {}


def generate_answers(dialogues: Sequence[Dialogue], llm: Any | Callable[[], Any], out_path: str | os.PathLike,
                     system: str, sampling: Any, batch_size: int = 16, llm_name: str = "",
                     progress: bool = True) -> dict[str, Any]:
    """Answer every dialogue with the frozen LLM, round by round, appending each finished dialogue to
    ``out_path`` as ``{"id", "questions", "answers", "dropped", "gen"}``.

    Resumable: ids already in ``out_path`` with the same questions and generation settings (``llm_name``,
    ``system``, ``sampling``) are skipped. ``dropped`` is ``null``, ``"empty"`` or ``"truncated"`` (the answer
    hit ``sampling.max_new_tokens``); a dropped dialogue stops at that round and is not retried.

    Args:
        llm: a :class:`~freeze_omni.llm.backbone.FrozenLLM` (``answer_text``) or a function that returns one,
            called only when something is left to generate.
        batch_size: questions per forward pass; dialogues are processed ``4 · batch_size`` at a time.

    Returns:
        ``{"answers": path, "total", "existing", "generated", "dropped_empty", "dropped_truncated", "kept"}``.
    """
    out_path = Path(out_path)
    gen = _gen_fingerprint(llm_name, system, sampling)
    old = read_answers(out_path)
    todo = [d for d in dialogues
            if not (d.id in old and old[d.id].get("questions") == d.questions and old[d.id].get("gen") == gen)]
    if todo and callable(llm) and not hasattr(llm, "answer_text"):
        llm = llm()
    group = max(1, 4 * batch_size)
    todo_ids = {d.id for d in todo}
    rows = {d.id: old[d.id] for d in dialogues if d.id in old and d.id not in todo_ids}
    if todo:
        from tqdm import tqdm

        with tqdm(total=len(todo), desc="answers", unit="dlg", disable=not progress) as bar:
            for g in range(0, len(todo), group):
                part = todo[g:g + group]
                answers: dict[str, list[str]] = {d.id: [] for d in part}
                dropped: dict[str, str | None] = {d.id: None for d in part}
                for r in range(max(len(d.questions) for d in part)):
                    live = [d for d in part if dropped[d.id] is None and len(d.questions) > r]
                    if not live:
                        break
                    live.sort(key=lambda d: len(d.questions[r]))  # similar lengths batch together
                    hist = [list(zip(d.questions[:r], answers[d.id])) for d in live]
                    res = _answer_batch(llm, [d.questions[r] for d in live], hist, system, sampling, batch_size)
                    for d, (a, finished) in zip(live, res):
                        a = a.strip()
                        if not a:
                            dropped[d.id] = "empty"
                        elif not finished:
                            dropped[d.id] = "truncated"
                        else:
                            answers[d.id].append(a)
                new = [{"id": d.id, "questions": d.questions, "answers": answers[d.id], "dropped": dropped[d.id],
                        "gen": gen} for d in part]
                append_rows(out_path, new)
                rows.update({r["id"]: r for r in new})
                bar.update(len(part))
    kept = [r for r in rows.values() if r.get("dropped") is None]
    return {"answers": os.fspath(out_path), "total": len(dialogues), "existing": len(dialogues) - len(todo),
            "generated": len(todo), "kept": len(kept),
            "dropped_empty": sum(r.get("dropped") == "empty" for r in rows.values()),
            "dropped_truncated": sum(r.get("dropped") == "truncated" for r in rows.values())}


"""`freeze-omni eval qa` (speech vs text modality) and `freeze-omni eval state` (end of turn, rejection).

qa: every held-out dialogue is answered twice with greedy decoding and the same system prompt: once from the
spoken questions through the live chunk-by-chunk path (the answer starts when the audio ends, so the number
measures the bridge, not the state head), once from the typed questions (`ask`). Reported: the share of turns
whose two answers are identical, and, for turns with known answers (``expected``: acceptable strings), the
accuracy of each modality (an answer is right when it contains one of them as whole words, case-insensitively),
and each modality's *topic recall*: the share of the question's content words that its answer repeats (the same
word, or the same first five letters: "country" / "countries"), averaged over turns. The bridge can teach the LLM
the shape of a question long before its words ("What is the capital of France?" answered "The capital of the
Southeastern United States is New Orleans.": 1 of 2); this number shows whether the words got through.
Rows without ``expected`` get the known answers of their templated questions
(:func:`freeze_omni.data.qa.known.known_answers`: capitals, arithmetic, ...).

state: each user turn (Q&A turns should get RESPOND, state-2 clips IGNORE) is followed by 1 s of silence and
fed chunk by chunk; the first non-LISTEN decision is compared with the chunk holding the end of speech.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional

import numpy as np
from tqdm import tqdm

from freeze_omni.audio.io import AudioError, load_audio
from freeze_omni.data.manifest import read_manifest
from freeze_omni.data.qa.known import contains_answer, known_answers
from freeze_omni.dialogue.turn import run_turn
from freeze_omni.llm.bridge import UserState
from freeze_omni.llm.loader import load_speech_llm
from freeze_omni.llm.model import Listener
from freeze_omni.llm.sampling import SamplingConfig

CHUNK_SECONDS = 0.16


# Words that carry no topic (question words, auxiliaries, pronouns, articles, prepositions).
FUNCTION_WORDS = frozenset("""
a an the and or but if of to in on at by for with from about into over under as is are was were be been being am
do does did done have has had can could will would shall should may might must what which who whom whose when
where why how that this these those there here it its i me my we our you your he him his she her they them their
not no yes so than then too very just also some any all each every much many more most one tell give please say
name let lets know like get make thing things something anything
""".split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` that carry its topic (not function words; 3 letters or more)."""
    from freeze_omni.data.text import normalize_text

    return {w for w in normalize_text(text).split() if len(w) >= 3 and w not in FUNCTION_WORDS}


def topic_recall(question: str, answer: str) -> float:
    """Share of the question's content words found in ``answer`` (the word or its first five letters); 1.0 for a
    question without content words."""
    q, a = content_words(question), content_words(answer)
    if not q:
        return 1.0
    stems = {w[:5] for w in a}
    return sum(w in a or w[:5] in stems for w in q) / len(q)


def _correct(answer: str, expected: Optional[list[str]]) -> Optional[bool]:
    return contains_answer(answer, expected) if expected else None


def evaluate_qa(args: argparse.Namespace) -> dict:
    model, system = load_speech_llm(args.model)
    listener = Listener(model, system)
    greedy = SamplingConfig(greedy=True, max_new_tokens=getattr(args, "max_new_tokens", None) or 96)
    rows = read_manifest(args.manifest)[: args.limit]
    n = same = skipped = 0
    right = {"speech": 0, "text": 0}
    known = 0
    recall = {"speech": 0.0, "text": 0.0}
    out = open(args.out, "w") if args.out else None
    for row in tqdm(rows, desc="eval qa", unit="dialogue"):
        try:
            waves = [load_audio(t["audio"]) for t in row["turns"]]
        except AudioError:
            skipped += 1
            continue
        session = listener.new_session()
        history: list[tuple[str, str]] = []
        for turn, wave in zip(row["turns"], waves):
            res, session = run_turn(listener, session, wave, greedy, use_state_head=False)
            text = model.llm.answer_text([turn["question"]], system, greedy,
                                         history=[history] if history else None)[0]
            history.append((turn["question"], text))
            n += 1
            same += int(res.answer.strip() == text.strip())
            recall["speech"] += topic_recall(turn["question"], res.answer)
            recall["text"] += topic_recall(turn["question"], text)
            expected = turn.get("expected") or known_answers(turn["question"])
            ok_s, ok_t = _correct(res.answer, expected), _correct(text, expected)
            if ok_s is not None:
                known += 1
                right["speech"] += int(ok_s)
                right["text"] += int(ok_t)
            if out:
                out.write(json.dumps({"id": row.get("id"), "question": turn["question"], "speech": res.answer,
                                      "text": text, "expected": expected}) + "\n")
    if out:
        out.close()
    result = {"n": n, "skipped": skipped, "identical": round(100.0 * same / max(n, 1), 2), "n_known": known,
              "topic_recall_speech": round(100.0 * recall["speech"] / max(n, 1), 2),
              "topic_recall_text": round(100.0 * recall["text"] / max(n, 1), 2)}
    if known:
        result["acc_speech"] = round(100.0 * right["speech"] / known, 2)
        result["acc_text"] = round(100.0 * right["text"] / known, 2)
        result["acc_gap"] = round(result["acc_text"] - result["acc_speech"], 2)
    return result


def evaluate_state(args: argparse.Namespace) -> dict:
    from freeze_omni.data.qa import speech_end

    model, system = load_speech_llm(args.model)
    listener = Listener(model, system)
    rows = read_manifest(args.manifest)[: args.limit]
    items = []  # (audio path, expected state)
    for row in rows:
        if "turns" in row:
            items += [(t["audio"], UserState.RESPOND) for t in row["turns"]]
        else:
            items.append((row["audio"], UserState(int(row.get("state", 2)))))
    stats = {"respond_turns": 0, "on_time": 0, "early": 0, "late_or_missed": 0, "state2": 0, "rejected": 0,
             "ignore_fired": 0, "skipped": 0}
    offsets = []
    for path, want in tqdm(items, desc="eval state", unit="turn"):
        try:
            wave = load_audio(path)
        except AudioError:
            stats["skipped"] += 1
            continue
        end_chunk = int(speech_end(wave, 16000) / CHUNK_SECONDS)
        wave = np.concatenate([wave, np.zeros(16000, np.float32)])
        session = listener.new_session()
        fired, state = None, None
        for s in range(0, len(wave), 2560):
            for st, _ in listener.accept(session, wave[s:s + 2560]):
                if fired is None:
                    if st != UserState.LISTEN:
                        fired, state = session.chunks - 1, st
            if fired is not None:
                break
        if want == UserState.RESPOND:
            stats["respond_turns"] += 1
            if fired is not None and fired < end_chunk:
                stats["early"] += 1
            elif fired is not None and state == UserState.RESPOND and fired <= end_chunk + 2:
                stats["on_time"] += 1
            else:
                stats["late_or_missed"] += 1
            if fired is not None:
                offsets.append(fired - end_chunk)
        else:
            stats["state2"] += 1
            stats["rejected"] += int(state != UserState.RESPOND)
            stats["ignore_fired"] += int(state == UserState.IGNORE)
    r = stats["respond_turns"] or 1
    result = {"n": stats["respond_turns"] + stats["state2"], **stats,
              "end_within_2_chunks": round(100.0 * stats["on_time"] / r, 2),
              "early_fires": round(100.0 * stats["early"] / r, 2)}
    if stats["state2"]:
        result["state2_rejected"] = round(100.0 * stats["rejected"] / stats["state2"], 2)
    if offsets:
        result["fire_offset_chunks_median"] = float(np.median(offsets))
    return result

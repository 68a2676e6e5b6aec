"""Q&A data for input stage 3 (DESIGN.md §1, §5; facts §1.6, §2.1): "self-distilled" answers and state labels.

What is made, and how:

1. **Questions** (:func:`plan_dialogues`). Single-round questions are the question/request lines of the corpus
   builder (:func:`freeze_omni.data.corpus.build_corpus` with the kinds ``questions``, ``countries``,
   ``wordnet``, ``numbers``, ``chitchat``; statements such as definitions and "I had a long day" are left
   out, :func:`is_request`). Multi-round dialogues (2–3 rounds) chain related questions about one entity
   ("What is the capital of Peru?" -> "How many people live there?" -> "And what currency does it use?") and
   generic follow-ups ("Why?", "Can you say that again more briefly?").
2. **Held-out split**: each dialogue's first question has an *entity key* (:func:`entity_key`: a country, a
   word, an animal, a machine, a topic, ... or else the normalized question), and a seeded hash of that key
   decides the split, so every question about a held-out entity is held out. Follow-up *templates* are split
   the same way (held-out dialogues use only held-out follow-up phrasings). Finally, any train dialogue that
   shares a question (after :func:`~freeze_omni.data.text.normalize_text`) with a held-out one is dropped, so
   held-out questions never appear in train. All of it is a deterministic function of the arguments.
3. **Answers** (:func:`generate_answers`) are written by the frozen LLM itself from the *text* question with
   the system prompt (greedy by default), round by round so that later rounds see the earlier (question,
   answer) pairs. Every finished dialogue is appended to ``answers.jsonl``; a rerun skips the ids already
   there (when their questions and generation settings match). A dialogue whose answer is empty or ran into
   ``max_new_tokens`` without finishing is recorded as dropped (and not retried).
4. **Speech** for the questions: :func:`freeze_omni.data.synth.synth_corpus` (resumable, parallel) with one
   voice per dialogue (each turn with its own small rate/pitch jitter) drawn from the train voices or, for
   the held-out split, from the held-out voices.
5. **State labels** (facts §1.6): :func:`chunk_labels` gives one label per 160 ms chunk of a user turn: 0
   for every chunk but the last, which is 1 (answer now) or, for state-2 clips, 2 (do not answer).

Trailing silence (TTS leaves 0.1–0.3 s): the end of the turn is the end of speech found by an energy
threshold (:func:`speech_end`, stored per turn as ``speech_end``), **not** the end of the file. The chunk
that contains the end of speech is the last chunk of the turn and gets the final label; the chunks after it
are **trimmed** from the turn (:func:`turn_audio` cuts the wave to ``len(labels)`` chunks, zero-padding a short
one). So the label-1 chunk holds the last 0–160 ms of speech plus what silence follows inside that chunk,
and an end detected within that chunk or the next one is within the "2 chunks of the true end" aim.
``end_pad_chunks=k`` keeps ``k`` more chunks after it, labelled with the final label too (a softer target
when the live model should also answer on the silence right after speech).

State-2 material (:func:`plan_state2`, :func:`make_state2`): stationary noise (white/pink/brown), babble made
of other utterances of the same split, cough-like bursts, knocks, backchannels ("uh-huh", "mm-hmm", ...) and
side talk not addressed to the assistant ("Honey, did you feed the dog?"), the spoken kinds synthesized with
the user voices; held-out clips use held-out texts (backchannels and side-talk templates are split) and
held-out voices.

Files under ``OUT`` (:func:`build_qa`): ``dialogues.jsonl`` (the plan), ``answers.jsonl`` (resumable LLM
output), ``wav/`` + ``speech_manifest.jsonl`` (question speech), ``state2/wav/`` + ``state2/manifest.jsonl``,
and the manifests for training: ``qa_train.jsonl``, ``qa_heldout.jsonl`` (one dialogue per line,
``{"id", "split", "kind", "speaker", "turns": [{"question", "answer", "audio", "duration", "speech_end"}]}``),
``state2_train.jsonl``, ``state2_heldout.jsonl`` (``{"id", "audio", "kind", "text", "split", "duration",
"speech_end", "speaker"}``). Audio paths are relative to the manifest's folder. Read them back with
:func:`read_qa_manifest` / :func:`read_state2_manifest`, which skip rows whose audio is unreadable.

The code: :mod:`~freeze_omni.data.qa.labels` (state labels, end of speech),
:mod:`~freeze_omni.data.qa.questions` (questions, dialogues, entity keys, held-out split),
:mod:`~freeze_omni.data.qa.answers` (answers from the frozen LLM), :mod:`~freeze_omni.data.qa.state2` (state-2
texts, plan and sounds) and :mod:`~freeze_omni.data.qa.build` (speech, the pipeline, manifest readers).
"""

from __future__ import annotations

from freeze_omni.data.qa.answers import generate_answers, read_answers
from freeze_omni.data.qa.build import build_qa, make_state2, read_qa_manifest, read_state2_manifest
from freeze_omni.data.qa.labels import CHUNK_SECONDS, SAMPLE_RATE, chunk_labels, speech_end, turn_audio
from freeze_omni.data.qa.questions import (GENERIC_FOLLOWUPS, QA_KINDS, SPLITS, Dialogue, entity_key, is_request,
                                           plan_dialogues, single_questions)
from freeze_omni.data.qa.state2 import (BACKCHANNELS, SIDE_TALK, STATE2_KINDS, State2Item, babble_clip, cough_clip,
                                        knock_clip, noise_clip, plan_state2)

__all__ = [
    "BACKCHANNELS", "CHUNK_SECONDS", "GENERIC_FOLLOWUPS", "QA_KINDS", "SAMPLE_RATE", "SIDE_TALK", "SPLITS",
    "STATE2_KINDS", "Dialogue", "State2Item", "babble_clip", "build_qa", "chunk_labels", "cough_clip",
    "entity_key", "generate_answers", "is_request", "knock_clip", "make_state2", "noise_clip", "plan_dialogues",
    "plan_state2", "read_answers", "read_qa_manifest", "read_state2_manifest", "single_questions", "speech_end",
    "turn_audio"]

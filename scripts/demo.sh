#!/usr/bin/env bash
# `make demo`: the shipped model answers a bundled spoken question (assets/question.wav, espeak-ng:
# "What is the capital of France?"). If the bundle cannot answer speech yet (no trained bridge), it says so and
# shows what works: the streaming transcript of the same wav, and the frozen LLM answering its text.
# Env: PY (python of the venv), MODEL (bundle folder), WAV (question audio), OUT (answer audio), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-models/tiny-en}
WAV=${WAV:-assets/question.wav}
OUT=${OUT:-exp/demo/answer.wav}
THREADS=${THREADS:-$(nproc 2>/dev/null || echo 2)}
QUESTION=$(cat "${WAV%.wav}.txt" 2>/dev/null || echo "What is the capital of France?")
fo() { "$PY" -m freeze_omni.cli "$@"; }
say() { printf '\n== %s\n' "$*"; }

# the bundle's trained components, e.g. "encoder bridge decoder codec" ("" when there is no bundle.yaml)
PARTS=$("$PY" - "$MODEL" <<'PYEOF'
import pathlib, sys, yaml
p = pathlib.Path(sys.argv[1]) / "bundle.yaml"
print(" ".join((yaml.safe_load(p.read_text()) or {}).get("components", {})) if p.is_file() else "")
PYEOF
)
has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

say "question: $WAV (\"$QUESTION\"), model: $MODEL [${PARTS:-no bundle}]"
if has encoder && has bridge; then
  SPEAK=(); has decoder && has codec && SPEAK=(--out "$OUT")
  # chat ARGS...: one spoken turn; prints the decision, the answer and the answer audio; fails on no answer
  chat() {
    local json
    json=$(fo chat "$WAV" --model "$MODEL" --threads "$THREADS" --json "${SPEAK[@]}" "$@" | tail -n 1)
    "$PY" - "$json" <<'PYEOF'
import json, sys
r = json.loads(sys.argv[1])
print(f"decision: {r['decision']}   answer: {r['answer']!r}")
lat = {k: v for k, v in (r.get("latency_ms") or {}).items() if k in ("first_text", "first_audio") and v is not None}
if r.get("audio"):
    print(f"answer audio: {r['audio']} ({r.get('audio_seconds')} s at {r['sample_rate']} Hz)")
print(f"latency after the end of the question (ms): {lat}   listening real-time factor: {r.get('rtf')}")
sys.exit(0 if r["answer"].strip() else 3)
PYEOF
  }
  say "freeze-omni chat $WAV   (speech in, 160 ms chunks; the state head decides when the question is over)"
  if ! chat; then
    say "the state head did not take this as a question for the assistant; again, answering at the end of the file:"
    chat --no-state-head || true
  fi
  if [ ${#SPEAK[@]} -gt 0 ]; then
    say "the spoken answer is in $OUT (play it: aplay $OUT)"
  else
    say "this bundle has no speech decoder yet (freeze-omni train decoder / codec): the answer is text only"
  fi
else
  say "NOTE: $MODEL cannot answer spoken questions yet: it has no trained bridge (the adapter and state head"
  echo "   that feed speech to the frozen LLM; recipes/tiny-en/run.sh trains it). What works today:"
  if has encoder; then
    say "freeze-omni transcribe $WAV   (the streaming speech encoder, 160 ms chunks)"
    fo transcribe "$WAV" --model "$MODEL" --threads "$THREADS"
  else
    say "(no speech encoder in $MODEL either: run recipes/tiny-en/run.sh to train one)"
  fi
  say "freeze-omni ask \"$QUESTION\"   (the frozen LLM answering the same question typed)"
  fo ask "$QUESTION" --model "$MODEL" --threads "$THREADS"
fi

cat <<MSG

== talk to it live
   .venv/bin/freeze-omni serve --model $MODEL        # then open http://localhost:8765/ in a browser,
   press Start and speak (Chrome/Firefox; localhost needs no certificate). Other machines: --host 0.0.0.0
   with --tls-cert/--tls-key (browsers only give the microphone to https or localhost pages).
MSG

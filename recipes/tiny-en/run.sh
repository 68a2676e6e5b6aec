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
  log "Stage 3: measure on unseen voices, streaming vs full attention"
  for s in asr_unseen asr_unseen_espeak asr_seen; do
    $FO eval asr --model $E/ctc/bundle --manifest $D/$s/manifest.jsonl --json | tail -1 | tee $E/ctc/eval_$s.json
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: ship the bundle into models/tiny-en"
  mkdir -p models/tiny-en
  cp $E/ctc/bundle/encoder.safetensors $E/ctc/bundle/ctc.safetensors models/tiny-en/
  .venv/bin/python - <<'PY'
import yaml
from freeze_omni.bundle import write_bundle_config
cfg = yaml.safe_load(open("exp/tiny-en/ctc/bundle/bundle.yaml"))
write_bundle_config("models/tiny-en", cfg)
PY
fi

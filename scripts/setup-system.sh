#!/usr/bin/env bash
# System packages the project needs (data tools: espeak-ng, flite, sox; WordNet glosses; Debian Chromium for the
# web client's browser test, driven by the pip package playwright: never `playwright install`).
# Installs them through apt when run as root; otherwise prints the exact command.
set -euo pipefail
PKGS="espeak-ng sox flite wordnet-base chromium"
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing; }
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
else
  echo "Missing system packages:$missing" >&2
  echo "Run: sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi

#!/usr/bin/env bash
# The real-text dataset of scripts/subword_experiment.sh and scripts/ablations.sh: the
# reStructuredText sources of the Python 3.11 documentation (Debian's python3.11-doc, installed
# if missing), a 4000-piece SentencePiece tokenizer, and the token dataset (5% of the bytes to val).
# Builds the release memoryformer tool if needed. Writes OUT/tok.model and OUT/data/; a dataset
# already in OUT is kept.
#
#   scripts/python_docs_dataset.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/python_docs_dataset.sh OUT}"

corpus=/usr/share/doc/python3.11/html/_sources
if [[ ! -d "$corpus" ]]; then
  sudo_if_needed=(); [[ "$(id -u)" -ne 0 ]] && sudo_if_needed=(sudo)
  "${sudo_if_needed[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq --no-install-recommends python3.11-doc
fi
tool=build/release/tools/memoryformer
[[ -x "$tool" ]] || cmake --workflow --preset release
if "$tool" --help | grep -q "this build lacks"; then
  echo "python_docs_dataset.sh: $tool was built without SentencePiece (bash scripts/install-deps.sh, then rebuild)" >&2
  exit 1
fi
mkdir -p "$out"
if [[ -f "$out/data/meta.json" && -f "$out/tok.model" ]]; then
  echo "python_docs_dataset.sh: keeping the dataset in $out/data"
  exit 0
fi
"$tool" tokenizer-train --input "$corpus" --vocab-size 4000 --out "$out/tok.model"
"$tool" tokenize --tokenizer "$out/tok.model" --input "$corpus" --out "$out/data" --val-fraction 0.05

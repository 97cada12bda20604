#!/usr/bin/env bash
# MemoryFormer against the dense Transformer on real English text with subwords, as
# docs/training.md ("Subword text: results") reports: the Python 3.11 documentation sources
# (Debian's python3.11-doc, 11 MB of reStructuredText) tokenised with a 4000-piece SentencePiece
# vocabulary; each architecture at the best of three learning rates (150-step runs), then trained
# for the same wall-clock budget with 3 seeds. Writes the CSV curves, the PNG plots and a summary
# table under OUT.
#
#   scripts/subword_experiment.sh [--budget SECONDS] [--out DIR]     (defaults: 240, build/release/subword)
set -euo pipefail
cd "$(dirname "$0")/.."

budget=240 out=build/release/subword
while [[ $# -gt 0 ]]; do
  case "$1" in
    --budget) budget="${2:?--budget needs seconds}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "subword_experiment.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || { echo "subword_experiment.sh: --budget '$budget': expected whole seconds" >&2; exit 2; }

bash scripts/python_docs_dataset.sh "$out"
tool=build/release/tools/memoryformer

shape=(--layers 2 --d-model 128 --heads 4 --tau 8 --seq 128 --batch 16)
json_field() { tail -n 1 "$1" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

# Learning rates: the best val bpb after 150 steps of each; its tokens/s sizes the budgeted runs.
declare -A best_lr tokens_per_s
for arch in memoryformer dense; do
  if [[ $arch == memoryformer ]]; then lrs="1e-2 3e-2 5e-2"; else lrs="1e-3 3e-3 1e-2"; fi
  best=""
  for lr in $lrs; do
    run="$out/sweep_${arch}_$lr"
    "$tool" train --data "$out/data" --arch "$arch" "${shape[@]}" --lr "$lr" --steps 150 --eval-every 150 \
      --seed 1 --out "$run.safetensors" > "$run.json" 2> "$run.log"
    bpb=$(json_field "$run.json" val_bpb)
    echo "sweep: $arch lr $lr -> val bpb $bpb"
    if [[ -z "$best" ]] || /usr/bin/python3 -c "import sys; sys.exit(0 if $bpb < $best else 1)"; then
      best=$bpb best_lr[$arch]=$lr tokens_per_s[$arch]=$(json_field "$run.json" tokens_per_s)
    fi
  done
done

for arch in memoryformer dense; do
  steps=$(/usr/bin/python3 -c "print(max(10, int($budget * ${tokens_per_s[$arch]} / (16 * 128))))")
  every=$(( steps / 10 > 0 ? steps / 10 : 1 ))
  for seed in 1 2 3; do
    run="$out/${arch}_seed$seed"
    echo "run: $arch lr ${best_lr[$arch]} seed $seed, $steps steps (~${budget} s of training)"
    "$tool" train --data "$out/data" --arch "$arch" "${shape[@]}" --lr "${best_lr[$arch]}" --steps "$steps" \
      --eval-every "$every" --seed "$seed" --out "$run.safetensors" --log "$run.csv" > "$run.json" 2> "$run.log"
    tail -n 1 "$run.json"
  done
done
/usr/bin/python3 scripts/plot_subword.py "$out"

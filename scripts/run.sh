#!/usr/bin/env bash
# The main job: optimised build, the Memory Layer example, the dense-vs-lookup benchmark, and a short
# training demo: the same small character LM as MemoryFormer and as a dense Transformer on Debian's
# fortunes (docs/training.md). Extra arguments go to the benchmark binary (e.g. --benchmark_filter=N:1/).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake --workflow --preset release
build=build/release

echo "=== example: memory_layer"
"$build/examples/memory_layer"

echo "=== benchmark: dense GEMM vs Memory Layer, and dense vs MemoryFormer block"
bash benchmarks/run.sh --quick --out "$build/benchmark.json" -- "$@"

# Each architecture at its best learning rate on this task (docs/training.md). Validation curves go
# to build/release/train_<arch>.csv; the last line of each run is its JSON summary.
for run in "memoryformer 5e-2" "dense 3e-3"; do
  set -- $run
  echo "=== training demo: $1 (lr $2), 2 layers, d_model 128, 300 steps of 16 x 64 characters"
  "$build/examples/train_char_lm" --arch "$1" --lr "$2" --steps 300 --sample 160 --log "$build/train_$1.csv"
done

# Real text with subwords (docs/training.md, "Subword text"): the fortunes as documents (the "%"
# separators become blank lines), a SentencePiece vocabulary, a token dataset, both architectures
# trained for a few steps, and sampled lines. Skipped where the tool was built without SentencePiece.
tool="$build/tools/memoryformer"
if ! "$tool" --help | grep -q "this build lacks" && [[ -d /usr/share/games/fortunes ]]; then
  demo="$build/subword_demo"
  mkdir -p "$demo"
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' -print0 | sort -z |
    xargs -0 sed 's/^%$//' > "$demo/fortunes.txt"
  echo "=== subword demo: tokenizer (vocab 2000) and dataset from $(wc -c < "$demo/fortunes.txt") bytes of fortunes"
  "$tool" tokenizer-train --input "$demo/fortunes.txt" --vocab-size 2000 --out "$demo/tok.model"
  "$tool" tokenize --tokenizer "$demo/tok.model" --input "$demo/fortunes.txt" --out "$demo/data" --val-fraction 0.05
  for run in "memoryformer 5e-2" "dense 3e-3"; do
    set -- $run
    echo "=== subword demo: $1 (lr $2), 2 layers, d_model 128, 200 steps of 16 x 64 tokens"
    "$tool" train --data "$demo/data" --arch "$1" --lr "$2" --seq 64 --steps 200 --eval-every 100 \
      --out "$demo/$1.safetensors"
    for seed in 1 2 3; do
      "$tool" generate --weights "$demo/$1.safetensors" --tokenizer "$demo/tok.model" --prompt "The " \
        --max-new 24 --temperature 0.8 --top-p 0.9 --seed "$seed" | head -n 2
    done
  done
fi

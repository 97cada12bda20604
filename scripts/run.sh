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

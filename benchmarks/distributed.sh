#!/usr/bin/env bash
# docs/distributed.md §3: on one machine over loopback, a sharded decoding step (MF-tiny and
# MF-small, int8 tables, written by memoryformer init) against one process, and data-parallel
# training throughput against one process, for MemoryFormer and dense. Needs the release build with
# MPI (cmake --workflow --preset release) and, for training, a token dataset (scripts/python_docs_dataset.sh).
#
#   benchmarks/distributed.sh DATA_DIR [OUT_DIR]      (default OUT_DIR: build/release/distributed)
#
# Prints JSON lines; the decode bench times one process (rank 0 alone) and the sharded model in the
# same run. 2 ranks x 1 thread against 1 process x 2 threads: the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: benchmarks/distributed.sh DATA_DIR [OUT_DIR]}"
out="${2:-build/release/distributed}"
tool=build/release/tools/memoryformer bench=build/release/benchmarks/memoryformer_sharded_decode_bench
[[ -x "$tool" && -x "$bench" ]] || { echo "distributed.sh: build the release preset with MPI first" >&2; exit 1; }
mpirun=(mpirun -np 2 --oversubscribe --bind-to core)
[[ "$(id -u)" -eq 0 ]] && mpirun+=(--allow-run-as-root)
mkdir -p "$out"

for size in tiny small; do
  weights="$out/mf_${size}_int8.safetensors"
  [[ -f "$weights" ]] || "$tool" init --config "$size" --tables int8 --seed 1 --out "$weights" >&2
  echo "# decode, MF-$size int8: one process, 2 threads"
  "$bench" --weights "$weights" --threads 2 --repetitions 5
  echo "# decode, MF-$size int8: 2 ranks x 1 thread (one_process: rank 0 alone, 1 thread)"
  "${mpirun[@]}" "$bench" --weights "$weights" --threads 1 --repetitions 5
done

train=(train --data "$data" --layers 2 --d-model 160 --heads 4 --seq 128 --batch 16 --steps 12 --eval-every 1000
       --eval-tokens 2048 --out "$out/train.safetensors")
for arch in memoryformer dense; do
  lr=3e-2; [[ $arch == dense ]] && lr=3e-3
  echo "# train, $arch: one process, 2 threads"
  "$tool" "${train[@]}" --arch $arch --lr $lr --threads 2 2> /dev/null | tail -n 1
  echo "# train, $arch: 2 ranks x 1 thread, --data-parallel"
  "${mpirun[@]}" "$tool" "${train[@]}" --arch $arch --lr $lr --threads 1 --data-parallel 2> /dev/null | tail -n 1
done

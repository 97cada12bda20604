#!/usr/bin/env bash
# The main job: optimised build, the Memory Layer example, and the dense-vs-lookup benchmark.
# Extra arguments go to the benchmark binary (e.g. --benchmark_filter=N:1/).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake --workflow --preset release
build=build/release

echo "=== example: memory_layer"
"$build/examples/memory_layer"

# Debian's OpenBLAS mis-detects this CPU and runs several times slower unless told its core type
# (docs/performance.md); the dense baseline must not be crippled.
if grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-SkylakeX}"; fi
echo "=== benchmark: dense GEMM vs Memory Layer (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset})"
"$build/benchmarks/memoryformer_bench" --benchmark_min_time=0.2 "$@"

#!/usr/bin/env bash
# Builds the libFuzzer targets (preset fuzz: clang, ASan+UBSan) and runs each for a bounded time,
# starting from its committed seeds (tests/fuzz/corpus/<target>/, read only; new inputs go to
# build/fuzz/run/<target>/corpus). Any crash, leak, timeout, out-of-memory or sanitizer report
# stops the run with a non-zero status and leaves the input in build/fuzz/run/<target>/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET=30] [extra libFuzzer flags, e.g. -jobs=1]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-30}
shift $(($# > 0 ? 1 : 0))
targets=(safetensors json)

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j2
for target in "${targets[@]}"; do
  run=$root/build/fuzz/run/$target
  mkdir -p "$run/corpus"
  echo "=== fuzz: $target for ${seconds}s"
  # Run inside $run: with -jobs, libFuzzer writes its fuzz-N.log files to the working directory.
  # -timeout: one input may take 10 s at most (a hang); -rss_limit_mb/-malloc_limit_mb: a hostile
  # file must not make the reader allocate more than 1 GB.
  (cd "$run" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$root/build/fuzz/tests/fuzz/mf_fuzz_$target" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=1024 -malloc_limit_mb=1024 -max_len=8192 -dict="$root/tests/fuzz/safetensors.dict" \
    -print_final_stats=1 -artifact_prefix="$run/" "$@" "$run/corpus" "$root/tests/fuzz/corpus/$target")
done
echo "=== fuzz: no crash in ${targets[*]} (${seconds}s each)"

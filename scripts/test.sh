#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: dependencies, then configure, build and ctest
# for the Debug (gcc), ASan+UBSan (clang) and scalar-only builds, then 60 s of libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --interop  # the interop tests need PyTorch (tests/interop)
for preset in dev asan scalar; do
  echo "=== preset: $preset"
  start=$SECONDS
  cmake --workflow --preset "$preset"
  echo "=== preset $preset: configured, built and tested in $((SECONDS - start)) s"
done
echo "=== all test presets passed: dev asan scalar"
# Bounded fuzzing (about 30 s per target plus a short build): a crash fails CI.
bash scripts/fuzz.sh 30

#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: dependencies, then configure, build and ctest
# for the Debug (gcc), ASan+UBSan (clang) and scalar-only builds.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --interop  # the interop tests need PyTorch (tests/interop)
for preset in dev asan scalar; do
  echo "=== preset: $preset"
  cmake --workflow --preset "$preset"
done
echo "=== all test presets passed: dev asan scalar"

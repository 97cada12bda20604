#!/usr/bin/env bash
# Installs everything the build, tests, benchmarks and examples need, from Debian only.
# --interop adds PyTorch and numpy for the cross-checks against tools/memoryformer_ref.py (the dev
# preset's MF_INTEROP_TESTS); scripts/test.sh asks for them, scripts/run.sh does not.
set -euo pipefail

interop=0
for arg in "$@"; do
  case "$arg" in
    --interop) interop=1 ;;
    *) echo "install-deps: unknown argument '$arg', expected --interop or nothing" >&2; exit 2 ;;
  esac
done

packages=(
  cmake ninja-build g++ clang libclang-rt-14-dev pkg-config  # toolchain; clang runs the sanitizer build
  libeigen3-dev libxxhash-dev                                # the library's dependencies
  libgtest-dev libgmock-dev                                  # tests
  libbenchmark-dev libbenchmark-tools libopenblas-dev        # benchmarks and the BLAS baseline
  python3-matplotlib                                         # benchmarks/plot.py
  fortunes                                                   # text corpus for the training demo
  libsentencepiece-dev                                       # subword tokenizer of the memoryformer tool (optional)
  libopenmpi-dev openmpi-bin                                 # MemoryFormer::mpi: sharded inference, data-parallel training (optional)
)
if [ "$interop" -eq 1 ]; then
  packages+=(python3-torch python3-numpy)  # for /usr/bin/python3: the PyTorch reference and its checks
fi

sudo_if_needed=()
if [ "$(id -u)" -ne 0 ]; then sudo_if_needed=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
"${sudo_if_needed[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_if_needed[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

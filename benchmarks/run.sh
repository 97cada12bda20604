#!/usr/bin/env bash
# Runs memoryformer_bench by the protocol of docs/performance.md and writes the results as JSON.
#
#   benchmarks/run.sh [--quick | --full] [--reps N] [--out FILE] [-- extra benchmark flags]
#
#   --quick  the default grid's layers (d = h = 1024, tau 8, N in {1, 64, 4096}), the blocks at
#            d 1024 on 2 threads and whole-model decoding of the tiny size (the headline's points);
#            3 short repetitions, the main job's choice (scripts/run.sh)
#   --full   the whole grid of the issue (N, d, tau, table, cold, threads); takes hours
#   default  the default grid with 5 repetitions, and whole-model decoding up to MF-base (model files
#            are written once into build/release/bench_models, ~40 GB; MF_BENCH_MODELS moves them)
# The raw results go to FILE (JSON, every repetition) and FILE.log (the console table); this prints
# the headline table (plot.py --markdown: medians, and speedups as ranges over the repetitions)
# and the paths of the plots.
# Without extra flags it also runs the dense and MemoryFormer blocks of memoryformer_bench_blas_block
# (every Eigen product done by the system BLAS) into FILE_blas_block.json. Builds the release
# preset first if the binary is missing. Then draws the results with plot.py (PNGs and the
# headline table beside the JSON; each block at the faster of the two builds). Compare two result
# files with compare.py from Debian's libbenchmark-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

grid=default reps=5 out=build/release/benchmark.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) grid=quick; reps=3; shift ;;
    --full) grid=full; shift ;;
    --reps) reps="${2:?--reps needs a number}"; shift 2 ;;
    --out) out="${2:?--out needs a file}"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "benchmarks/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "benchmarks/run.sh: --reps '$reps': expected a positive integer" >&2; exit 2; }

bin=build/release/benchmarks/memoryformer_bench
[[ -x "$bin" ]] || cmake --workflow --preset release

# Debian's OpenBLAS mis-detects this CPU and runs several times slower unless told its core type;
# the dense baseline must not be crippled. It reads the variable when it is loaded, so set it here.
# On AMD, Zen beats SkylakeX at N = 1 and ties at N = 4096 (docs/performance.md, "Dense
# baselines"); on Intel CPUs with AVX-512, SkylakeX.
if grep -q AuthenticAMD /proc/cpuinfo; then export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Zen}"
elif grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-SkylakeX}"; fi
[[ "$grid" == full ]] && export MF_BENCH_GRID=full
[[ "$grid" == quick ]] && export MF_BENCH_GRID=quick  # BM_ModelDecode: MF-tiny and Pythia-70M only

echo "memoryformer_bench: grid $grid, $reps repetition(s), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} -> $out"
mkdir -p "$(dirname "$out")"
flags=(--benchmark_out="$out" --benchmark_out_format=json --benchmark_counters_tabular=true)
if [[ "$reps" -gt 1 ]]; then
  flags+=(--benchmark_repetitions="$reps" --benchmark_display_aggregates_only=true)
fi
if [[ "$grid" == quick ]]; then flags+=(--benchmark_min_time=0.1); fi
echo "memoryformer_bench: console table in $out.log"
"$bin" "${flags[@]}" "$@" > "$out.log"

# The block benchmarks again with every Eigen product done by the system BLAS (single-threaded
# inside the library's pool): the dense block at its best. plot.py keeps the faster of the two.
# Skipped when extra benchmark flags (a filter) were given.
results=("$out")
blas_bin=build/release/benchmarks/memoryformer_bench_blas_block
if [[ -x "$blas_bin" && $# -eq 0 ]]; then
  blas_out="${out%.json}_blas_block.json"
  flags[0]=--benchmark_out="$blas_out"
  OPENBLAS_NUM_THREADS=1 "$blas_bin" "${flags[@]}" --benchmark_filter='^BM_Block(Forward|Decode)/' "$@" \
    > "$blas_out.log"
  results+=("$blas_out")
fi
/usr/bin/python3 benchmarks/plot.py "${results[@]}" --out-dir "$(dirname "$out")" --markdown

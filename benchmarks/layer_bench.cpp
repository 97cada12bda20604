// Microbenchmarks (docs/performance.md): MemoryLayer<float>::forward against the dense projection
// y = xW it replaces, with the same arguments on both sides: tokens N, in d, out h. The file also
// holds the main() of memoryformer_bench (this and the block, train, model, thread-pool and
// row-read benchmarks), with the context it records.
//
// Dense baselines: Eigen's GEMM, and cblas_sgemm from the system BLAS when the build found one
// (MF_BENCH_HAVE_CBLAS). Report the faster of the two as "best dense".
//
// OpenBLAS: Debian's build mis-detects this CPU and runs several times slower unless
// OPENBLAS_CORETYPE is set (Zen on AMD, SkylakeX on Intel with AVX-512). OpenBLAS reads it when the
// shared library is loaded, before main() runs, so setting it here would be too late: run.sh sets
// it. The value, or a warning that it is unset, goes into the benchmark context (and the JSON output).
//
// Eigen: the binary is built with -march=native (MF_BENCH_NATIVE, on by default) so that Eigen's GEMM
// uses this CPU's widest vectors; the context records the instruction sets Eigen was compiled for.
// Eigen threads its GEMM only through OpenMP (the build adds it to this target), and never its
// matrix-vector product, i.e. N = 1.
//
// Arguments: cold:1 cycles through independent weight sets of >= 512 MiB in all, so that every
// call starts from DRAM as in a deep model; cold:0 reuses one set. Batches of N <= 64 cycle through
// a ring of pre-generated inputs so that every call hashes to different rows. All setup happens
// before the timed loop.
//
// Counters (rates over real time; FLOPs count 2 per multiply-accumulate, the MACs of flops.hpp:
// dense 2 N d h, lookup 2 N (d / tau) h, hashing not counted):
//   time_per_token  elapsed / (iterations * N), in seconds (printed as e.g. "19.6us")
//   tokens_per_s  N per call
//   FLOP_per_s    as above
//   bytes_per_s   weight bytes read: dense d h 4 per call; lookup N K h b (K = d / tau rows per
//                 token, b = 4, 2, 1 bytes per fp32, bf16, int8 value; an upper bound, since tokens
//                 can pick the same row)
#include "allocator.hpp"
#include "cold.hpp"
#include "counters.hpp"
#include "environment.hpp"
#include "grid.hpp"

#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#if MF_BENCH_HAVE_CBLAS
#include <cblas.h>
// OpenBLAS extensions, declared weak so that the benchmark also links against another CBLAS: they
// are then null and the BLAS runs with its own thread count.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" char* openblas_get_corename(void) __attribute__((weak));
#endif

namespace mf = memoryformer;

namespace {

using Matrix = mf::RowMatrix<float>;
using Index = Eigen::Index;

// Tiny shapes would need millions of sets for 512 MiB; beyond this cap "cold" falls short.
constexpr std::size_t kMaxWeightSets = 4096;
constexpr Index kSmallBatch = 64;
constexpr std::int64_t kMaxRingBytes = std::int64_t{64} << 20;

// Fills p[0, n) with uniform values in [-scale, scale) from SplitMix64: fast enough for hundreds of
// MiB of weights. Random signs spread the hash codes over all buckets.
void fill_uniform(float* p, Index n, std::uint64_t seed, float scale) {
  std::uint64_t state = seed;
  for (Index i = 0; i < n; ++i) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    // 24 random bits -> [0, 1) -> [-1, 1).
    p[i] = scale * (static_cast<float>(z >> 40) * 0x1.0p-23f - 1.0f);
  }
}

// Inputs for one benchmark: `ring` distinct batches of n rows, stacked. The ring length is prime so
// that its cycle never falls in step with the weight-set cycle (see weight_sets).
class Inputs {
 public:
  Inputs(Index n, Index d) : n_(n), ring_(ring_length(n, d)), x_(ring_ * n, d) {
    fill_uniform(x_.data(), x_.size(), 0x1234567ULL + static_cast<std::uint64_t>(n), 1.0f);
  }

  Index ring() const { return ring_; }
  // Batch r: contiguous rows, so it binds to Eigen::Ref<const RowMatrix> and BLAS without a copy.
  auto batch(Index r) const { return x_.middleRows(r * n_, n_); }
  const float* data(Index r) const { return x_.data() + r * n_ * x_.cols(); }

 private:
  static Index ring_length(Index n, Index d) {
    if (n > kSmallBatch) return 1;
    for (Index p : {257, 127, 61, 31, 13, 7, 3})
      if (p * n * d * static_cast<Index>(sizeof(float)) <= kMaxRingBytes) return p;
    return 1;
  }

  Index n_;
  Index ring_;
  Matrix x_;
};

// How many weight sets of set_bytes to cycle through: 1 when hot; when cold, enough for 512 MiB
// (at least 2), and never a multiple of the input ring, which would pair each input with a fixed
// set and let the rows read repeat.
std::size_t weight_sets(bool cold, std::int64_t set_bytes, Index ring) {
  if (!cold) return 1;
  std::size_t sets = static_cast<std::size_t>((mf_bench::kColdBytes + set_bytes - 1) / set_bytes);
  sets = std::min(std::max<std::size_t>(sets, 2), kMaxWeightSets);
  if (ring > 1 && sets % static_cast<std::size_t>(ring) == 0) ++sets;
  return sets;
}

// Cycles i over [0, n) without a division in the timed loop.
struct Cycle {
  std::size_t n;
  std::size_t i = 0;
  std::size_t next() {
    const std::size_t current = i;
    if (++i == n) i = 0;
    return current;
  }
};

// ---- Dense y = xW -------------------------------------------------------------------------------

// Args N, d, h, cold, threads, with the inputs and weight sets they call for.
struct DenseCase {
  Index n = 0, d = 0, h = 0;
  bool cold = false;
  int threads = 1;
  std::vector<Matrix> weights;

  // False (and the benchmark marked as failed) for arguments that make no sense.
  bool read(benchmark::State& state) {
    n = state.range(0);
    d = state.range(1);
    h = state.range(2);
    cold = state.range(3) != 0;
    threads = static_cast<int>(state.range(4));
    if (n < 1 || d < 1 || h < 1 || threads < 1) {
      state.SkipWithError("N, d, h and threads must be >= 1");
      return false;
    }
    return true;
  }

  void make_weights(Index ring) {
    const std::int64_t set_bytes = static_cast<std::int64_t>(d) * h * sizeof(float);
    weights.resize(weight_sets(cold, set_bytes, ring));
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (std::size_t s = 0; s < weights.size(); ++s) {
      weights[s].resize(d, h);
      fill_uniform(weights[s].data(), weights[s].size(), 0xd1ce0000ULL + s, scale);
    }
  }

  void finish(benchmark::State& state) const {
    mf_bench::set_counters(state, static_cast<double>(n), static_cast<double>(mf::dense_layer_macs(n, d, h)),
                 static_cast<double>(d) * static_cast<double>(h) * sizeof(float));
  }
};

void BM_DenseEigen(benchmark::State& state) {
  DenseCase c;
  if (!c.read(state)) return;
  const Inputs inputs(c.n, c.d);
  c.make_weights(inputs.ring());
  Matrix y(c.n, c.h);
  Eigen::setNbThreads(c.threads);
  // Without OpenMP Eigen ignores setNbThreads; with it, GEMV (N = 1) still runs on one thread.
  if (Eigen::nbThreads() < c.threads)
    state.SetLabel("Eigen built without OpenMP: 1 thread");
  else if (c.n == 1 && c.threads > 1)
    state.SetLabel("Eigen GEMV: 1 thread");

  Cycle w{c.weights.size()};
  Cycle r{static_cast<std::size_t>(inputs.ring())};
  for (auto _ : state) {
    y.noalias() = inputs.batch(static_cast<Index>(r.next())) * c.weights[w.next()];
    float* out = y.data();
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  c.finish(state);
}

#if MF_BENCH_HAVE_CBLAS
void BM_DenseBlas(benchmark::State& state) {
  DenseCase c;
  if (!c.read(state)) return;
  const Inputs inputs(c.n, c.d);
  c.make_weights(inputs.ring());
  Matrix y(c.n, c.h);
  if (openblas_set_num_threads != nullptr)
    openblas_set_num_threads(c.threads);
  else
    state.SetLabel("BLAS thread count not settable (not OpenBLAS)");

  const int n = static_cast<int>(c.n), d = static_cast<int>(c.d), h = static_cast<int>(c.h);
  Cycle w{c.weights.size()};
  Cycle r{static_cast<std::size_t>(inputs.ring())};
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, h, d, 1.0f,
                inputs.data(static_cast<Index>(r.next())), d, c.weights[w.next()].data(), h, 0.0f, y.data(),
                h);
    float* out = y.data();
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  c.finish(state);
}
#endif

// ---- MemoryLayer --------------------------------------------------------------------------------

// The layers of one BM_MemoryLayer run: `sets` independent weight sets (1 when hot). fp32 runs the
// MemoryLayer itself; bf16 and int8 its compressed copies (table: 1, 2 = mf::TableType).
void run_layers(benchmark::State& state, const std::vector<mf::MemoryLayer<float>>& layers, const Inputs& inputs) {
  // forward() returns a new matrix: its allocation is part of what a caller pays, so it is timed.
  Cycle w{layers.size()};
  Cycle r{static_cast<std::size_t>(inputs.ring())};
  for (auto _ : state) {
    Matrix y = layers[w.next()].forward(inputs.batch(static_cast<Index>(r.next())));
    float* out = y.data();
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
}

void BM_MemoryLayer(benchmark::State& state) {
  const Index n = state.range(0);
  const Index d = state.range(1);
  const Index h = state.range(2);
  const int tau = static_cast<int>(state.range(3));
  const std::int64_t table = state.range(4);
  const bool cold = state.range(5) != 0;
  const int threads = static_cast<int>(state.range(6));
  if (table < 0 || table > 2) {
    state.SkipWithError("table: 0 (fp32), 1 (bf16) or 2 (int8)");
    return;
  }
  if (n < 1 || threads < 1) {
    state.SkipWithError("N and threads must be >= 1");
    return;
  }
  const auto type = static_cast<mf::TableType>(table);
  const int value_bytes = mf::table_value_bytes(type);

  const Inputs inputs(n, d);
  std::vector<mf::MemoryLayer<float>> layers;
  std::vector<mf::MemoryLayer<float>> compressed;
  std::size_t sets = 0;
  try {
    sets = weight_sets(cold, mf::memory_layer_table_bytes(d, h, tau, value_bytes), inputs.ring());
    mf::MemoryLayerOptions opt;
    opt.in_dim = static_cast<int>(d);
    opt.out_dim = static_cast<int>(h);
    opt.tau = tau;
    layers.reserve(type == mf::TableType::fp32 ? sets : 1);  // no reallocation: copies come from front()
    layers.emplace_back(opt);
  } catch (const mf::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  // Drawing normals for every cold set would slow the setup; the other cold sets get fresh values
  // from the fast uniform generator (same spread as the default init). Compressed sets are converted
  // one at a time from a single float layer.
  const float scale = std::sqrt(6.0f / (5.0f * static_cast<float>(d)));
  for (std::size_t set = 0; set < sets; ++set) {
    if (type != mf::TableType::fp32) {
      if (set > 0)
        fill_uniform(layers[0].tables().data(), layers[0].tables().size(), 0x7ab1e000ULL + set, scale);
      compressed.push_back(layers[0].compressed(type));
    } else if (set > 0) {
      layers.push_back(layers.front());
      fill_uniform(layers.back().tables().data(), layers.back().tables().size(), 0x7ab1e000ULL + set, scale);
    }
  }
  const mf::Context ctx(threads);
  for (auto* set : {&layers, &compressed})
    for (mf::MemoryLayer<float>& layer : *set) layer.set_context(ctx);
  if (type == mf::TableType::fp32)
    run_layers(state, layers, inputs);
  else
    run_layers(state, compressed, inputs);
  const std::int64_t k = d / tau;
  mf_bench::set_counters(state, static_cast<double>(n), static_cast<double>(mf::memory_layer_macs(n, d, h, tau)),
               static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(h) * value_bytes);
}

// ---- Backward (training) -----------------------------------------------------------------------
// Hot weights; dy and x fixed. Dense: dx = dy W^T and dW += x^T dy with Eigen's GEMM (what Linear
// does). Lookup: MemoryLayer::backward, i.e. hashing x again, the scatter-add into the table
// gradient, the row dots for the score gradient and the hash's backward (Eq. 12). MACs: dense
// 2 N d h; lookup 2 N (d / tau) h (scatter and dots).

void BM_DenseBackward(benchmark::State& state) {
  const Index n = state.range(0), d = state.range(1), h = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  Matrix x(n, d), dy(n, h), w(d, h), dx(n, d), dw = Matrix::Zero(d, h);
  fill_uniform(x.data(), x.size(), 1, 1.0f);
  fill_uniform(dy.data(), dy.size(), 2, 1.0f);
  fill_uniform(w.data(), w.size(), 3, 1.0f / std::sqrt(static_cast<float>(d)));
  Eigen::setNbThreads(threads);
  for (auto _ : state) {
    dx.noalias() = dy * w.transpose();
    dw.noalias() += x.transpose() * dy;
    benchmark::DoNotOptimize(dx.data());
    benchmark::DoNotOptimize(dw.data());
    benchmark::ClobberMemory();
  }
  mf_bench::set_counters(state, static_cast<double>(n), 2.0 * static_cast<double>(mf::dense_layer_macs(n, d, h)),
               static_cast<double>(d) * static_cast<double>(h) * sizeof(float) * 2);
}

void BM_MemoryLayerBackward(benchmark::State& state) {
  const Index n = state.range(0), d = state.range(1), h = state.range(2);
  const int tau = static_cast<int>(state.range(3)), threads = static_cast<int>(state.range(4));
  mf::MemoryLayerOptions opt;
  opt.in_dim = static_cast<int>(d);
  opt.out_dim = static_cast<int>(h);
  opt.tau = tau;
  std::optional<mf::MemoryLayer<float>> layer;
  try {
    layer.emplace(opt);
    layer->set_context(mf::Context(threads));
  } catch (const mf::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  Matrix x(n, d), dy(n, h);
  fill_uniform(x.data(), x.size(), 1, 1.0f);
  fill_uniform(dy.data(), dy.size(), 2, 1.0f);
  layer->zero_grad();
  for (auto _ : state) {
    Matrix dx = layer->backward(x, dy);
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  const std::int64_t k = d / tau;
  // Bytes: every selected row read (dots) and read + written (scatter).
  mf_bench::set_counters(
      state, static_cast<double>(n), 2.0 * static_cast<double>(mf::memory_layer_macs(n, d, h, tau)),
      3.0 * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(h) * sizeof(float));
}

// ---- Grids -----------------------------------------------------------------------------------

// Quick (default): d = h = 1024, tau = 8; N = 1 (decode), 64, 4096; cold and hot at N = 1, hot
// otherwise; 1 thread and 2 (all cores of the reference machine).
// Full (MF_BENCH_GRID=full, benchmarks/run.sh --full): N in {1, 8, 64, 256, 1024, 4096},
// d = h in {512, 1024, 2048}, tau in {4, 8, 10} (10 only where it divides d: never for these d, so
// tau 10 runs at d = h = 1020), cold and hot everywhere.
struct GridPoint {
  std::int64_t n, dim, cold, threads;
};

bool full_grid() { return mf_bench::bench_grid() == mf_bench::Grid::full; }

std::vector<GridPoint> grid_points() {
  std::vector<GridPoint> points;
  const bool full = full_grid();
  const std::vector<std::int64_t> ns =
      full ? std::vector<std::int64_t>{1, 8, 64, 256, 1024, 4096} : std::vector<std::int64_t>{1, 64, 4096};
  const std::vector<std::int64_t> dims =
      full ? std::vector<std::int64_t>{512, 1024, 2048} : std::vector<std::int64_t>{1024};
  for (std::int64_t dim : dims)
    for (std::int64_t n : ns)
      for (std::int64_t cold = 0; cold <= (full || n == 1 ? 1 : 0); ++cold)
        for (std::int64_t threads : {1, 2}) points.push_back({n, dim, cold, threads});
  return points;
}

void dense_grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d", "h", "cold", "threads"});
  for (const GridPoint& p : grid_points()) b->Args({p.n, p.dim, p.dim, p.cold, p.threads});
}

void lookup_grid(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "d", "h", "tau", "table", "cold", "threads"});
  const std::vector<std::int64_t> taus =
      full_grid() ? std::vector<std::int64_t>{4, 8, 10} : std::vector<std::int64_t>{8};
  for (const GridPoint& p : grid_points())
    for (std::int64_t tau : taus)
      for (std::int64_t table = 0; table <= 2; ++table) {
        const std::int64_t dim = p.dim - p.dim % tau;  // tau 10: the largest multiple of 10 below d
        b->Args({p.n, dim, dim, tau, table, p.cold, p.threads});
      }
}

// Real time decides (the work runs on several threads); the CPU column then counts every thread
// of the process, which shows whether the second core was used.
BENCHMARK(BM_DenseEigen)
    ->Apply(dense_grid)
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);
#if MF_BENCH_HAVE_CBLAS
BENCHMARK(BM_DenseBlas)
    ->Apply(dense_grid)
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);
#endif
BENCHMARK(BM_MemoryLayer)
    ->Apply(lookup_grid)
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);

// Training shapes: d = h = 1024, tau 8, N in {512, 4096} (a batch of sequences), 1 and 2 threads.
void backward_grid(benchmark::internal::Benchmark* b, bool lookup) {
  if (lookup)
    b->ArgNames({"N", "d", "h", "tau", "threads"});
  else
    b->ArgNames({"N", "d", "h", "threads"});
  for (std::int64_t n : {512, 4096})
    for (std::int64_t threads : {1, 2}) {
      if (lookup)
        b->Args({n, 1024, 1024, 8, threads});
      else
        b->Args({n, 1024, 1024, threads});
    }
}

BENCHMARK(BM_DenseBackward)
    ->Apply([](benchmark::internal::Benchmark* b) { backward_grid(b, false); })
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MemoryLayerBackward)
    ->Apply([](benchmark::internal::Benchmark* b) { backward_grid(b, true); })
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Unit(benchmark::kMicrosecond);

void add_context() {
  benchmark::AddCustomContext("memoryformer_version", MF_VERSION_STRING);
  benchmark::AddCustomContext("memoryformer_kernel_path", mf::to_string(mf::kernel_path()));
  std::string paths;
  for (mf::KernelPath p : mf::supported_kernel_paths())
    paths += (paths.empty() ? "" : " ") + std::string(mf::to_string(p));
  benchmark::AddCustomContext("memoryformer_supported_paths", paths);
  benchmark::AddCustomContext("memoryformer_threads", std::to_string(mf::num_threads()));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#ifdef EIGEN_HAS_OPENMP
  benchmark::AddCustomContext("eigen_threads", "OpenMP (threads:N sets Eigen::setNbThreads)");
#else
  benchmark::AddCustomContext("eigen_threads", "1 (built without OpenMP)");
#endif
#if MF_BENCH_HAVE_CBLAS
  benchmark::AddCustomContext("OPENBLAS_CORETYPE",
                              mf_bench::environment_or("OPENBLAS_CORETYPE", "unset (baseline may run ~5x slow)"));
  if (openblas_get_corename != nullptr)
    benchmark::AddCustomContext("openblas_corename", openblas_get_corename());
#else
  benchmark::AddCustomContext("blas", "not built (no CBLAS found at configure time)");
#endif
}

}  // namespace

// BENCHMARK_MAIN, plus the context that makes results comparable across runs and machines.
int main(int argc, char** argv) {
  try {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    keep_freed_memory_and_record_it();
    add_context();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const mf::Error& e) {  // e.g. an invalid MEMORYFORMER_PATH
    std::cerr << "memoryformer_bench: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "memoryformer_bench: " << e.what() << '\n';
    return 1;
  }
  return 0;
}

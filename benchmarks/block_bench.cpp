// Whole-block benchmarks: one MemoryFormerBlock against one DenseBlock of the same shape
// (docs/performance.md). Both run on the library's thread pool with Eigen's GEMM single-threaded
// inside it, so that neither side gets a threading scheme the other lacks.
//   BM_BlockForward/arch:{0 dense, 1 memoryformer}/s/d/threads: one forward over a sequence of s tokens.
//   BM_BlockDecode/arch/s/d/threads: one new token through the block, its KV cache holding s tokens.
//   BM_Block{Forward,Decode}Compressed/table:{1 bf16, 2 int8}/s/d/threads: the MemoryFormer block
//   reading compressed copies of its tables (Model::compress_tables).
//   BM_Block{Forward,Decode}Tiled/table:{0 fp32, 1 bf16, 2 int8}/s/d/threads: the block reading
//   copies of its tables in TableLayout::tiles, the layout for long forwards (a slower decode is its
//   price: docs/performance.md).
// Heads: d / 64 (8 at d 512, 16 at d 1024); tau 8, expand bits 2. Counters as in
// layer_bench.cpp, FLOPs by flops.hpp's block counts (the paper's convention).
#include "counters.hpp"
#include "grid.hpp"

#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace mf = memoryformer;

namespace {

using Matrix = mf::RowMatrix<float>;
using Index = Eigen::Index;

mf::ModelConfig block_config(Index d) {
  mf::ModelConfig c;
  c.d_model = static_cast<int>(d);
  c.n_heads = static_cast<int>(d / 64);
  c.tau = 8;
  c.expand_bits = 2;
  return c;
}

// The block under test, kept between benchmark points of the same (arch, d): building a
// MemoryFormer block at d 1024 initialises ~1 GiB of tables.
template <class Block>
Block& cached_block(Index d) {
  static std::unique_ptr<Block> block;
  static Index built_for = 0;
  if (!block || built_for != d) {
    block.reset();
    block = std::make_unique<Block>(block_config(d), 1);
    built_for = d;
  }
  return *block;
}

Matrix random_rows(Index rows, Index d, unsigned seed) {
  Matrix m(rows, d);
  mf::detail::Rng rng(seed);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.normal());
  return m;
}

// Arguments (first, s, d, threads): first is arch for BM_Block{Forward,Decode} and the table type
// for their *Compressed and *Tiled variants.
// The block runs on a context of `threads` threads, its own.
struct BlockCase {
  std::int64_t first;
  Index s, d;
  int threads;
  mf::Context ctx;
  explicit BlockCase(const benchmark::State& state)
      : first(state.range(0)),
        s(state.range(1)),
        d(state.range(2)),
        threads(static_cast<int>(state.range(3))),
        ctx(threads) {
    Eigen::setNbThreads(1);
  }
};

// The cached MemoryFormer block of width d, reading its tables as `type` in `layout` (compressed
// only when either changes: packing ~1 GiB of tables at d 1024 takes a while), on `ctx`.
const mf::MemoryFormerBlock<float>& memoryformer_block(Index d, mf::TableType type, mf::TableLayout layout,
                                                       const mf::Context& ctx) {
  auto& block = cached_block<mf::MemoryFormerBlock<float>>(d);
  if (block.table_type() != type || block.table_layout() != layout) block.compress_tables(type, layout);
  block.set_context(ctx);
  return block;
}

const mf::DenseBlock<float>& dense_block(Index d, const mf::Context& ctx) {
  auto& block = cached_block<mf::DenseBlock<float>>(d);
  block.set_context(ctx);
  return block;
}

template <class Block>
void forward(benchmark::State& state, const Block& block, Index s, Index d) {
  const Matrix x = random_rows(s, d, 7);
  for (auto _ : state) {
    Matrix y = block.forward(x, s);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
}

// The cache holds s positions; every iteration decodes position s, then rewinds to s. Fresh inputs
// come from a ring so that the hash codes differ between iterations.
template <class Block>
void decode(benchmark::State& state, const Block& block, Index s, Index d) {
  mf::KVCache<float> cache(static_cast<int>(d), s + 1);
  block.decode(random_rows(s, d, 11), cache);
  constexpr Index kRing = 61;
  const Matrix tokens = random_rows(kRing, d, 13);
  Index next = 0;
  for (auto _ : state) {
    Matrix y = block.decode(tokens.row(next), cache);
    benchmark::DoNotOptimize(y.data());
    cache.truncate(s);
    if (++next == kRing) next = 0;
  }
}

// Runs `body` (forward or decode) on the block the case asks for; a library error skips the point.
template <class Body>
bool run_block(benchmark::State& state, bool memoryformer, mf::TableType type, const BlockCase& c, Body body,
               mf::TableLayout layout = mf::TableLayout::rows) {
  try {
    if (memoryformer)
      body(state, memoryformer_block(c.d, type, layout, c.ctx), c.s, c.d);
    else
      body(state, dense_block(c.d, c.ctx), c.s, c.d);
  } catch (const mf::Error& e) {
    state.SkipWithError(e.what());
    return false;
  }
  return true;
}

const auto kForward = [](benchmark::State& st, const auto& block, Index s, Index d) {
  forward(st, block, s, d);
};
const auto kDecode = [](benchmark::State& st, const auto& block, Index s, Index d) {
  decode(st, block, s, d);
};

void set_forward_counters(benchmark::State& state, bool memoryformer, const BlockCase& c) {
  const double macs =
      memoryformer ? mf::memoryformer_block_macs(c.s, c.d, 8) : mf::dense_block_macs(c.s, c.d);
  mf_bench::set_token_counters(state, static_cast<double>(c.s), macs);
}

// One query against s + 1 keys (QK^T and AV), plus the projections of one token.
void set_decode_counters(benchmark::State& state, bool memoryformer, const BlockCase& c) {
  const double attention = 2.0 * static_cast<double>(c.s + 1) * static_cast<double>(c.d);
  const double rest = memoryformer ? mf::memoryformer_block_macs_without_attention(1, c.d, 8)
                                   : mf::dense_block_macs_without_attention(1, c.d);
  mf_bench::set_token_counters(state, 1.0, attention + rest);
}

void BM_BlockForward(benchmark::State& state) {
  const BlockCase c(state);
  const bool memoryformer = c.first != 0;
  if (run_block(state, memoryformer, mf::TableType::fp32, c, kForward))
    set_forward_counters(state, memoryformer, c);
}

void BM_BlockDecode(benchmark::State& state) {
  const BlockCase c(state);
  const bool memoryformer = c.first != 0;
  if (run_block(state, memoryformer, mf::TableType::fp32, c, kDecode))
    set_decode_counters(state, memoryformer, c);
}

// The MemoryFormer block with bf16 (table:1) or int8 (table:2) copies of its tables
// (Model::compress_tables), the inference setting where DRAM traffic decides.
void BM_BlockForwardCompressed(benchmark::State& state) {
  const BlockCase c(state);
  if (run_block(state, true, static_cast<mf::TableType>(c.first), c, kForward))
    set_forward_counters(state, true, c);
}

void BM_BlockDecodeCompressed(benchmark::State& state) {
  const BlockCase c(state);
  if (run_block(state, true, static_cast<mf::TableType>(c.first), c, kDecode))
    set_decode_counters(state, true, c);
}

void BM_BlockForwardTiled(benchmark::State& state) {
  const BlockCase c(state);
  if (run_block(state, true, static_cast<mf::TableType>(c.first), c, kForward, mf::TableLayout::tiles))
    set_forward_counters(state, true, c);
}

void BM_BlockDecodeTiled(benchmark::State& state) {
  const BlockCase c(state);
  if (run_block(state, true, static_cast<mf::TableType>(c.first), c, kDecode, mf::TableLayout::tiles))
    set_decode_counters(state, true, c);
}

// (first, s, d, threads) for every s, d and thread count (the quick grid: d 1024 on 2 threads, the
// headline's); d outermost so that each cached block serves all its points before the next is built.
void grid(benchmark::internal::Benchmark* b, const char* first, std::initializer_list<std::int64_t> values) {
  const bool quick = mf_bench::bench_grid() == mf_bench::Grid::quick;
  const std::vector<std::int64_t> dims = quick ? std::vector<std::int64_t>{1024} : std::vector<std::int64_t>{512, 1024};
  const std::vector<std::int64_t> thread_counts = quick ? std::vector<std::int64_t>{2} : std::vector<std::int64_t>{1, 2};
  b->ArgNames({first, "s", "d", "threads"});
  for (std::int64_t d : dims)
    for (std::int64_t v : values)
      for (std::int64_t s : {128, 512, 2048})
        for (std::int64_t threads : thread_counts) b->Args({v, s, d, threads});
}
void arch_grid(benchmark::internal::Benchmark* b) { grid(b, "arch", {0, 1}); }
void table_grid(benchmark::internal::Benchmark* b) { grid(b, "table", {1, 2}); }
void tiled_grid(benchmark::internal::Benchmark* b) { grid(b, "table", {0, 1, 2}); }

// Forward times are milliseconds, decode steps microseconds.
void register_block_benchmark(benchmark::internal::Benchmark* b,
                              void (*args)(benchmark::internal::Benchmark*), benchmark::TimeUnit unit) {
  b->Apply(args)->UseRealTime()->MeasureProcessCPUTime()->Unit(unit);
}

const bool kRegistered = [] {
  register_block_benchmark(benchmark::RegisterBenchmark("BM_BlockForward", BM_BlockForward), arch_grid,
                           benchmark::kMillisecond);
  register_block_benchmark(benchmark::RegisterBenchmark("BM_BlockDecode", BM_BlockDecode), arch_grid,
                           benchmark::kMicrosecond);
  register_block_benchmark(
      benchmark::RegisterBenchmark("BM_BlockForwardCompressed", BM_BlockForwardCompressed), table_grid,
      benchmark::kMillisecond);
  register_block_benchmark(benchmark::RegisterBenchmark("BM_BlockDecodeCompressed", BM_BlockDecodeCompressed),
                           table_grid, benchmark::kMicrosecond);
  register_block_benchmark(benchmark::RegisterBenchmark("BM_BlockForwardTiled", BM_BlockForwardTiled),
                           tiled_grid, benchmark::kMillisecond);
  register_block_benchmark(benchmark::RegisterBenchmark("BM_BlockDecodeTiled", BM_BlockDecodeTiled),
                           tiled_grid, benchmark::kMicrosecond);
  return true;
}();

}  // namespace

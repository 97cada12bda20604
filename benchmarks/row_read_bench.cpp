// The memory bound of a batch-1 lookup from DRAM, measured rather than assumed: BM_RowReads reads
// what one decoded token of a layer reads (K = 128 random rows, one per chunk table of 2^8 rows,
// from 512 MiB of cold tables in huge pages, as the library allocates them) with plain loads, one per
// 64-byte line and nothing else, so that the core keeps as many lines in flight as it can. Threads
// split every row's bytes as the per-token gather splits its columns, on the library's pool.
//
// BM_RowReads/bytes/threads: bytes per row, a table row of h = 1024 values: 1024 (int8), 2048 (bf16),
// 4096 (fp32). Compare its time_per_token with BM_MemoryLayer/N:1/.../cold:1 of the same table
// type: the gap is what the gather's arithmetic, hashing and hand-offs cost on top of the reads
// (docs/performance.md, "Layer at N = 1").
#include "cold.hpp"
#include "counters.hpp"

#include <memoryformer/memoryformer.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

namespace {

namespace detail = memoryformer::detail;

constexpr int kRowsPerToken = 128;  // K = d / tau at d = 1024, tau 8
constexpr int kRowsPerTable = 256;  // 2^tau
constexpr std::size_t kTokens = 257;  // codes cycle with a prime period, sets with a power of 2

void BM_RowReads(benchmark::State& state) {
  const auto row_bytes = static_cast<std::size_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  if (row_bytes < 64 || row_bytes % 64 != 0 || threads < 1) {
    state.SkipWithError("bytes: a positive multiple of 64; threads >= 1");
    return;
  }
  const std::size_t set_bytes = row_bytes * kRowsPerToken * kRowsPerTable;
  const std::size_t sets = static_cast<std::size_t>(mf_bench::kColdBytes) / set_bytes;
  detail::AlignedBuffer<std::int8_t> tables(sets * set_bytes);
  for (std::size_t i = 0; i < tables.size(); ++i) tables.data()[i] = static_cast<std::int8_t>(i >> 6);

  // Row offsets of every token, within its set.
  std::vector<std::size_t> rows(kTokens * kRowsPerToken);
  detail::Rng rng(17);
  for (std::size_t t = 0; t < kTokens; ++t)
    for (int k = 0; k < kRowsPerToken; ++k)
      rows[t * kRowsPerToken + static_cast<std::size_t>(k)] =
          (static_cast<std::size_t>(k) * kRowsPerTable + rng.next_u64() % kRowsPerTable) * row_bytes;

  detail::ThreadPool pool(threads);
  std::vector<std::int64_t> sums(static_cast<std::size_t>(threads) * 8);  // a line per task
  std::size_t token = 0, set = 0;
  for (auto _ : state) {
    const std::int8_t* base = tables.data() + set * set_bytes;
    const std::size_t* offsets = rows.data() + token * kRowsPerToken;
    pool.parallel_for(threads, [&](int task) {
      const detail::Range bytes = detail::split_range(static_cast<Eigen::Index>(row_bytes), threads, task, 64);
      std::int64_t sum = 0;
      for (int k = 0; k < kRowsPerToken; ++k)
        for (Eigen::Index b = bytes.begin; b < bytes.end; b += 64) sum += base[offsets[k] + b];
      sums[static_cast<std::size_t>(task) * 8] += sum;
    });
    if (++token == kTokens) token = 0;
    if (++set == sets) set = 0;
  }
  benchmark::DoNotOptimize(sums.data());
  mf_bench::set_counters(state, 1.0, 0.0, static_cast<double>(row_bytes * kRowsPerToken));
}

void row_read_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes", "threads"});
  for (std::int64_t bytes : {1024, 2048, 4096})
    for (std::int64_t threads : {1, 2}) b->Args({bytes, threads});
  b->UseRealTime();
}

}  // namespace

BENCHMARK(BM_RowReads)->Apply(row_read_args);

// The K table rows one token selects, as the gather kernels see them: row k starts at
// table + (k * buckets + codes[k]) * ld, where ld is the row stride of the [K * 2^tau, h] table.
// Kernels may be handed a column slice (table and y offset by the slice start, width < h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#if defined(__GNUC__) || defined(__clang__)
#define MF_ALWAYS_INLINE inline __attribute__((always_inline))
#define MF_NEVER_INLINE inline __attribute__((noinline))
#else
#define MF_ALWAYS_INLINE inline
#define MF_NEVER_INLINE inline
#endif

namespace memoryformer {
inline namespace v0 {
namespace detail {

struct RowSelection {
  const std::int32_t* codes;  // [count], each in [0, buckets)
  int count;                  // K
  std::int32_t buckets;       // 2^tau rows per chunk table
  std::ptrdiff_t ld;          // elements between consecutive table rows

  std::ptrdiff_t offset(int k) const { return (static_cast<std::ptrdiff_t>(k) * buckets + codes[k]) * ld; }
};

// The tokens of one pass over a packed panel (gather_schedule.hpp), as the panel kernels see them:
// token i selects row codes[i * tables + k] of each of the panel's `tables` chunk tables, weighted by
// scores[i * tables + k], and adds them into y + i * y_ld.
template <class Acc>
struct PanelPass {
  const std::int32_t* codes;  // [tokens, tables]
  const Acc* scores;          // [tokens, tables]
  int tables;
  std::int32_t buckets;       // rows per chunk table
  std::ptrdiff_t ld;          // elements between consecutive panel rows
  Acc* y;
  std::ptrdiff_t y_ld;        // elements between consecutive tokens' y
  std::ptrdiff_t tokens;

  RowSelection selection(std::ptrdiff_t i) const { return {codes + i * tables, tables, buckets, ld}; }
};

// The tokens that picked one table row, in token order, with their scores for that table: a run of
// the backward's by-code order (gather_schedule.hpp).
template <class T>
struct CodeRun {
  const std::int32_t* tokens;  // [count]
  const T* scores;             // [count]
  int count;
};

// Columns one SIMD gather call accumulates at a time (2 KiB of floats: an L1-resident accumulator,
// and rows read in contiguous pieces of at least 1 KiB).
inline constexpr int kGatherColumns = 512;

// Columns of one panel of the large-N schedule (gather_schedule.hpp): 256 bytes of fp32, four
// AVX-512 or eight AVX2 registers.
inline constexpr int kPanelColumns = 64;

// How far ahead of the row being summed the SIMD kernels keep the selection's next rows requested,
// in bytes: the first rows of a call are requested at once, then one more per row summed. The
// requests go to L2 (prefetcht2): into L1 they compete with the loads for its few miss buffers.
// 32 KiB is the window that served fp32 and int8 best at batch 1 from DRAM (BM_MemoryLayer N = 1
// cold; docs/performance.md, "Row prefetch window").
inline constexpr std::size_t kPrefetchBytes = std::size_t{32} << 10;

// Requests a row's first `bytes` bytes into L2.
MF_ALWAYS_INLINE void prefetch_row(const void* row, std::size_t bytes) {
  for (std::size_t byte = 0; byte < bytes; byte += 64)
    __builtin_prefetch(static_cast<const char*>(row) + byte, 0, 1);
}

// Called before summing row k of the selection: requests into L2 the row that enters the prefetch
// window, kPrefetchBytes ahead (and at k = 0 the whole first window). Always inlined: GCC at -O2
// otherwise judges these functions pure, since a prefetch is no side effect to it, and deletes every
// call, which slows the batch-1 gather badly (the codegen_prefetch_kept test guards it;
// docs/performance.md has the cost).
template <class T>
MF_ALWAYS_INLINE void prefetch_ahead(const T* table, const RowSelection& sel, int k, int width) {
  const std::size_t row_bytes = sizeof(T) * static_cast<std::size_t>(width);
  if (row_bytes == 0) return;
  const int ahead = static_cast<int>(std::clamp<std::size_t>(kPrefetchBytes / row_bytes, 1, sel.count));
  if (k == 0)
    for (int row = 0; row < ahead; ++row) prefetch_row(table + sel.offset(row), row_bytes);
  if (k + ahead < sel.count) prefetch_row(table + sel.offset(k + ahead), row_bytes);
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

// The K table rows one token selects, as the gather kernels see them: row k starts at
// table + (k * buckets + codes[k]) * ld, where ld is the row stride of the [K * 2^tau, h] table.
// Kernels may be handed a column slice (table and y offset by the slice start, width < h).
#pragma once

#include <cstddef>
#include <cstdint>

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

// How many rows ahead the SIMD kernels prefetch. Reading whole rows one after another with the
// next rows already requested keeps enough misses in flight to run at DRAM bandwidth at batch 1
// (measured: 21 -> 17 us per token for d = h = 1024, tau 8, fp32 on 2 cores; slower without).
inline constexpr int kPrefetchRows = 8;

// Columns one SIMD gather call accumulates at a time (2 KiB of floats: an L1-resident accumulator,
// and rows read in contiguous pieces of at least 1 KiB).
inline constexpr int kGatherColumns = 512;

// Columns of one panel of the large-N schedule (gather_schedule.hpp): 256 bytes of fp32, four
// AVX-512 or eight AVX2 registers.
inline constexpr int kPanelColumns = 64;

// Requests every cache line of row k + kPrefetchRows, if there is one.
template <class T>
inline void prefetch_ahead(const T* table, const RowSelection& sel, int k, int width) {
  if (k + kPrefetchRows >= sel.count) return;
  const char* row = reinterpret_cast<const char*>(table + sel.offset(k + kPrefetchRows));
  for (std::size_t byte = 0; byte < sizeof(T) * static_cast<std::size_t>(width); byte += 64)
    __builtin_prefetch(row + byte);
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

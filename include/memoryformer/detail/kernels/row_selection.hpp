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

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

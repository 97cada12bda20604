// Portable reference kernels: always compiled, used for double, and the oracle the SIMD paths are
// tested against. Plain loops in the order of method.md §1, Eq. 11-12.
#pragma once

#include "../float16.hpp"
#include "row_selection.hpp"

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace scalar {

// y[0:width] += sum_k scores[k] * row_k[0:width]   (Eq. 11), for tables stored as T (float, double,
// bf16 or int8) accumulated in Acc (float, or double for double tables).
template <class T, class Acc>
void gather(const T* table, const RowSelection& sel, const Acc* scores, Acc* y, int width) {
  for (int k = 0; k < sel.count; ++k) {
    const T* row = table + sel.offset(k);
    const Acc s = scores[k];
    for (int c = 0; c < width; ++c) y[c] += s * widen(row[c]);
  }
}

// grad_row_k[0:width] += scores[k] * dy[0:width]   (dL/dT, Eq. 12)
template <class T>
void scatter(T* grad, const RowSelection& sel, const T* scores, const T* dy, int width) {
  for (int k = 0; k < sel.count; ++k) {
    T* row = grad + sel.offset(k);
    const T s = scores[k];
    for (int c = 0; c < width; ++c) row[c] += s * dy[c];
  }
}

// out[k] = <dy, row_k>   (dL/ds_k, Eq. 12)
template <class T>
void dot(const T* table, const RowSelection& sel, const T* dy, int width, T* out) {
  for (int k = 0; k < sel.count; ++k) {
    const T* row = table + sel.offset(k);
    T acc = 0;
    for (int c = 0; c < width; ++c) acc += dy[c] * row[c];
    out[k] = acc;
  }
}

}  // namespace scalar
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

// Portable reference kernels: always compiled, used for double, and the oracle the SIMD paths are
// tested against. Plain loops in the order of docs/method.md §1, Eq. 9-12.
#pragma once

#include "../../config.hpp"
#include "../../platform/float16.hpp"
#include "kernel_table.hpp"
#include "row_selection.hpp"

#include <cstdint>

namespace memoryformer {
inline namespace v0 {
namespace detail {
namespace scalar {

// Chunks of tau values of one row, [K, tau].
template <class S>
using ChunkArray = Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using ChunkView = Eigen::Map<const ChunkArray<S>>;

// Bucket of one chunk z[tau] (Eq. 9, docs/method.md §1 step 2): bit j is 1 iff z_j >= 0 (zero counts
// as positive), packed MSB-first, so z_0 is the most significant bit.
template <class S>
std::int32_t chunk_code(const S* z, int tau) {
  std::int32_t c = 0;
  for (int j = 0; j < tau; ++j) c = (c << 1) | (z[j] >= S(0) ? 1 : 0);
  return c;
}

// p for each chunk (row) of z (Eq. 10 in closed form), as 1 / prod_j (1 + e_j) with
// e = exp(-2|z|/t), also returned for the backward. This equals exp(-sum_j softplus(-2|z_j|/t))
// and is as stable: every factor lies in (1, 2], so the product stays within [1, 2^16] for
// tau <= 16. One exp per element, vectorised by Eigen.
template <class S>
Eigen::Array<S, Eigen::Dynamic, 1> chunk_probabilities(const ChunkView<S>& z, S temperature,
                                                       ChunkArray<S>& e) {
  e = (z.abs() * (S(-2) / temperature)).exp();
  return (S(1) + e).rowwise().prod().inverse();
}

// codes[k] and scores[k] of the `chunks` chunks of tau values at x (Eq. 9-10): s = p, or
// ||z||_1 p for Score::l1.
template <class S>
void hash_chunks(const S* x, int chunks, int tau, S temperature, Score score, std::int32_t* codes,
                 S* scores) {
  const ChunkView<S> z(x, chunks, tau);
  for (int k = 0; k < chunks; ++k) codes[k] = chunk_code(x + k * tau, tau);
  ChunkArray<S> e;
  Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>> s(scores, chunks);
  s = chunk_probabilities(z, temperature, e);
  if (score == Score::l1) s *= z.abs().rowwise().sum();
}

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

// gather for every token of a pass over a panel.
template <class T, class Acc>
void gather_panel(const T* panel, const PanelPass<Acc>& pass, int width) {
  for (std::ptrdiff_t i = 0; i < pass.tokens; ++i)
    gather(panel, pass.selection(i), pass.scores + i * pass.tables, pass.y + i * pass.y_ld, width);
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

// grad[0:width] += scores[j] * dy_j and dots[j] += <dy_j, row[0:width]> for the tokens of the run,
// dy_j = strip + tokens[j] * ld   (Eq. 12, one row and the tokens that picked it)
template <class T>
void run_backward(const T* row, T* grad, const CodeRun<T>& run, const T* strip, std::ptrdiff_t ld, int width,
                  T* dots) {
  for (int j = 0; j < run.count; ++j) {
    const T* dy = strip + static_cast<std::ptrdiff_t>(run.tokens[j]) * ld;
    T acc = 0;
    for (int c = 0; c < width; ++c) {
      grad[c] += run.scores[j] * dy[c];
      acc += dy[c] * row[c];
    }
    dots[j] += acc;
  }
}

// The kernels of trained tables of S (float or double): double runs these alone.
template <class S>
inline constexpr GatherKernels<S> kTrainedKernels = {gather<S, S>, gather_panel<S, S>, scatter<S>, dot<S>,
                                                      run_backward<S>};

inline constexpr KernelTable kTable = {
    kTrainedKernels<float>,
    {gather<bf16, float>, gather_panel<bf16, float>},
    {gather<std::int8_t, float>, gather_panel<std::int8_t, float>},
    hash_chunks<float>,
};

}  // namespace scalar
}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

// The Memory Layer's computation over its tables (TableStore), forward and backward side by side:
// the gather y = bias + sum_k s_k T_k[code_k] (docs/method.md §1, Eq. 11), and the scatter-add of
// dL/dT with the row dots dL/ds_k (Eq. 12). Both run the kernels of the context's path
// (detail/dispatch.hpp) on the schedule detail/gather_schedule.hpp picks for N.
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "detail/dispatch.hpp"
#include "detail/gather_schedule.hpp"
#include "detail/kernels/row_selection.hpp"
#include "hash_bucket.hpp"
#include "table_store.hpp"

#include <cstdint>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// y [N, width] = bias + sum_k scores(i, k) * row(k, codes(i, k)), reading the tables as stored
// (scalar kernels for double). int8 scores are first multiplied by their rows' scales: one
// multiply per selected row rather than per value. A token's K scales are K random lines, cold at
// batch 1: they are all requested into L2 first (detail::prefetch_row), or the loads queue on
// L1's few miss buffers (docs/performance.md).
template <class Scalar>
RowMatrix<Scalar> lookup_forward(const Context& ctx, const TableStore<Scalar>& store, const Buckets<Scalar>& buckets,
                                 int buckets_per_table, const RowMatrix<Scalar>& bias) {
  return store.visit([&](const auto& stored) {
    using T = typename std::remove_const<std::remove_pointer_t<decltype(stored.tiles.data)>>::type;
    const KernelPath path = ctx.kernel_path();
    if constexpr (std::is_same<T, Scalar>::value) {
      return gather_tokens(ctx, stored.tiles, buckets.codes, buckets.scores, buckets_per_table, bias,
                           kernels_for<Scalar>(path));
    } else if constexpr (std::is_same<T, bf16>::value) {
      return gather_tokens(ctx, stored.tiles, buckets.codes, buckets.scores, buckets_per_table, bias,
                           compressed_kernels_for<bf16>(path));
    } else {
      const auto scale = [&](Eigen::Index i, Eigen::Index k) -> const float& {
        return stored.row_scales[k * buckets_per_table + buckets.codes(i, k)];
      };
      RowMatrix<Scalar> scaled(buckets.scores.rows(), buckets.scores.cols());
      for (Eigen::Index i = 0; i < scaled.rows(); ++i) {
        for (Eigen::Index k = 0; k < scaled.cols(); ++k) prefetch_row(&scale(i, k), sizeof(float));
        for (Eigen::Index k = 0; k < scaled.cols(); ++k) scaled(i, k) = buckets.scores(i, k) * scale(i, k);
      }
      return gather_tokens(ctx, stored.tiles, buckets.codes, scaled, buckets_per_table, bias,
                           compressed_kernels_for<std::int8_t>(path));
    }
  });
}

// Accumulates dL/dT[row] += s * dy into `grad` for every selected row of the trained `tables`
// ([K * buckets_per_table, dy.cols()] row-major) and returns dL/dscores [N, K], dL/ds_k =
// <dy, T[row_k]>.
template <class Scalar, class Dy>
RowMatrix<Scalar> lookup_backward(const Context& ctx, const Scalar* tables, Scalar* grad,
                                  const Buckets<Scalar>& buckets, int buckets_per_table, const Dy& dy) {
  return backward_tokens(ctx, tables, grad, buckets.codes, buckets.scores, buckets_per_table, dy,
                         kernels_for<Scalar>(ctx.kernel_path()));
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

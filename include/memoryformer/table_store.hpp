// TableStore: how a Memory Layer holds its [K * 2^tau, h] tables, the layer's storage policy.
// Element type (TableType: fp32, bf16, or int8 with one scale per row) times layout (TableLayout:
// rows, or column tiles for long forwards; detail/table_tiles.hpp), in aligned storage the store
// owns. A layer's trained tables are full precision (Scalar) in rows: the only store that training
// reads and writes, and the only one with a mutable row-major view. compressed() converts to any
// other store for inference; the roundings are table_storage.hpp's, the int8 scale is folded into
// the chunk score (s_k scale_r: one multiply per selected row, not per value), and accumulation
// stays in float.
#pragma once

#include "config.hpp"
#include "detail/aligned_buffer.hpp"
#include "detail/dispatch.hpp"
#include "detail/float16.hpp"
#include "detail/gather_schedule.hpp"
#include "detail/kernels/row_selection.hpp"
#include "detail/table_tiles.hpp"
#include "hash_bucket.hpp"
#include "table_storage.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace memoryformer {
inline namespace v0 {

template <class Scalar>
class TableStore {
  static_assert(std::is_floating_point<Scalar>::value, "TableStore<Scalar>: Scalar must be float or double");

 public:
  TableStore() = default;

  // Full-precision tables of rows x width in rows, uninitialised.
  TableStore(Eigen::Index rows, Eigen::Index width)
      : rows_(rows), width_(width), full_(static_cast<std::size_t>(rows * width)) {}

  TableType type() const { return type_; }
  TableLayout layout() const { return layout_; }
  Eigen::Index rows() const { return rows_; }
  Eigen::Index width() const { return width_; }
  // Whether these are trainable tables: full precision, in rows.
  bool is_trainable() const { return type_ == TableType::fp32 && layout_ == TableLayout::rows; }

  // The trainable tables' values, row-major. Other stores have no such array: `where` names the
  // caller in the error.
  Scalar* data(const char* where) {
    require_trainable(where);
    return full_.data();
  }
  const Scalar* data(const char* where) const {
    require_trainable(where);
    return full_.data();
  }

  // Bytes the tables occupy, row scales included.
  std::size_t bytes() const {
    return full_.size() * sizeof(Scalar) + bf16_.size() * sizeof(detail::bf16) + int8_.size() +
           row_scale_.size() * sizeof(float);
  }

  // The value forward() computes with at (r, c), and all of them as a row-major matrix.
  Scalar value(Eigen::Index r, Eigen::Index c) const {
    const auto i = static_cast<std::size_t>(tiles<const Scalar>(nullptr).index(r, c));  // same for every type
    switch (type_) {
      case TableType::bf16:
        return static_cast<Scalar>(detail::widen(bf16_[i]));
      case TableType::int8:
        return static_cast<Scalar>(dequantise_int8(int8_[i], row_scale_[static_cast<std::size_t>(r)]));
      case TableType::fp32:
        break;
    }
    return full_[i];
  }
  RowMatrix<Scalar> values() const {
    RowMatrix<Scalar> t(rows_, width_);
    for (Eigen::Index r = 0; r < rows_; ++r)
      for (Eigen::Index c = 0; c < width_; ++c) t(r, c) = value(r, c);
    return t;
  }

  // A copy of these tables stored as `type` in `layout`, converted from the values forward() reads.
  // bf16 and int8 hold float values: a double store takes fp32 alone.
  TableStore compressed(TableType type, TableLayout layout) const {
    const char* where = "MemoryLayer::compress";
    if (layout != TableLayout::rows && layout != TableLayout::tiles)
      detail::fail(where, "layout", static_cast<int>(layout), "TableLayout::rows or tiles");
    if (type != TableType::fp32 && type != TableType::bf16 && type != TableType::int8)
      detail::fail(where, "type", static_cast<int>(type), "TableType::fp32, bf16 or int8");
    if (!std::is_same<Scalar, float>::value && type != TableType::fp32)
      detail::fail(where, "table type", to_string(type),
                   "TableType::fp32 for double tables (compressed tables hold float values)");
    TableStore out;
    out.type_ = type;
    out.layout_ = layout;
    out.rows_ = rows_;
    out.width_ = width_;
    // The values row-major: the trainable tables themselves, else a converted copy.
    RowMatrix<Scalar> copy;
    if (!is_trainable()) copy = values();
    const Scalar* source = is_trainable() ? full_.data() : copy.data();
    switch (type) {
      case TableType::bf16:
        out.bf16_ = out.laid_out<detail::bf16>(source, [](Scalar v) {
          return detail::bf16{detail::float_to_bf16(static_cast<float>(v))};
        });
        break;
      case TableType::int8:
        if constexpr (std::is_same<Scalar, float>::value) {
          std::vector<std::int8_t> q(static_cast<std::size_t>(rows_ * width_));
          out.row_scale_.resize(static_cast<std::size_t>(rows_));
          quantise_int8_rows(source, rows_, width_, q.data(), out.row_scale_.data());
          out.int8_ = out.laid_out<std::int8_t>(q.data(), [](std::int8_t v) { return v; });
        }
        break;
      case TableType::fp32:
        out.full_ = out.laid_out<Scalar>(source, [](Scalar v) { return v; });
        break;
    }
    return out;
  }

  // y [N, width] = bias + sum_k scores(i, k) * row(k, codes(i, k)) (Eq. 11), on the kernels of the
  // selected path (scalar for double) and the schedule gather_schedule.hpp picks.
  RowMatrix<Scalar> gather(const Buckets<Scalar>& buckets, int buckets_per_table, const RowMatrix<Scalar>& bias) const {
    if constexpr (std::is_same<Scalar, float>::value) {
      const KernelPath path = kernel_path();
      switch (type_) {
        case TableType::bf16:
          return gather_stored(buckets, buckets_per_table, bias, bf16_.data(),
                               detail::packed_kernels_for<detail::bf16>(path));
        case TableType::int8:
          return gather_stored(buckets, buckets_per_table, bias, int8_.data(),
                               detail::packed_kernels_for<std::int8_t>(path));
        case TableType::fp32:
          break;
      }
    }
    return gather_stored(buckets, buckets_per_table, bias, full_.data(), detail::active_kernels<Scalar>());
  }

 private:
  void require_trainable(const char* where) const {
    if (!is_trainable())
      detail::fail(where, "tables",
                   std::string(to_string(type_)) + " tables in " + to_string(layout_) +
                       " (compressed for inference)",
                   "the trained tables (fp32 in rows): compress() keeps no copy of them; read the "
                   "values with table_values()");
  }

  // The stored tables as the schedules see them: one tile as wide as a row, or tiles of
  // kTileColumns (detail/table_tiles.hpp).
  template <class T>
  detail::TableTiles<T> tiles(T* data) const {
    return {data, rows_, width_, layout_ == TableLayout::tiles ? detail::kTileColumns : width_};
  }

  // The row-major [rows_, width_] `source` converted value by value into layout_, a row's tile
  // pieces at a time.
  template <class T, class Source, class Convert>
  detail::AlignedBuffer<T> laid_out(const Source* source, const Convert& convert) const {
    detail::AlignedBuffer<T> stored(static_cast<std::size_t>(rows_ * width_));
    for (Eigen::Index r = 0; r < rows_; ++r) {
      const Source* row = source + r * width_;
      detail::for_each_tile_piece(tiles(stored.data()), 0, width_,
                                  [&](T* piece, std::ptrdiff_t ld, Eigen::Index c, int w) {
                                    std::transform(row + c, row + c + w, piece + r * ld, convert);
                                  });
    }
    return stored;
  }

  // The gather of `table` for every token; int8 scores are first multiplied by their rows' scales.
  // A token's K scales are K random lines, cold at batch 1: they are all requested into L2 first
  // (detail::prefetch_row), or the loads queue on L1's few miss buffers (docs/performance.md).
  template <class T, class Kernels>
  RowMatrix<Scalar> gather_stored(const Buckets<Scalar>& buckets, int buckets_per_table, const RowMatrix<Scalar>& bias,
                                  const T* table, const Kernels& kernels) const {
    if (row_scale_.empty())
      return detail::gather_tokens(tiles(table), buckets.codes, buckets.scores, buckets_per_table, bias, kernels);
    const auto scale = [&](Eigen::Index i, Eigen::Index k) -> const float& {
      return row_scale_[static_cast<std::size_t>(k * buckets_per_table + buckets.codes(i, k))];
    };
    RowMatrix<Scalar> scaled(buckets.scores.rows(), buckets.scores.cols());
    for (Eigen::Index i = 0; i < scaled.rows(); ++i) {
      for (Eigen::Index k = 0; k < scaled.cols(); ++k) detail::prefetch_row(&scale(i, k), sizeof(float));
      for (Eigen::Index k = 0; k < scaled.cols(); ++k) scaled(i, k) = buckets.scores(i, k) * scale(i, k);
    }
    return detail::gather_tokens(tiles(table), buckets.codes, scaled, buckets_per_table, bias, kernels);
  }

  TableType type_ = TableType::fp32;
  TableLayout layout_ = TableLayout::rows;
  Eigen::Index rows_ = 0, width_ = 0;
  // Aligned storage in layout_ (tiles()); only the one of type_ is allocated.
  detail::AlignedBuffer<Scalar> full_;
  detail::AlignedBuffer<detail::bf16> bf16_;
  detail::AlignedBuffer<std::int8_t> int8_;
  std::vector<float> row_scale_;  // int8 only, one per table row
};

}  // namespace v0
}  // namespace memoryformer

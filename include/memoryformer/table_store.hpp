// TableStore: how a Memory Layer holds its [K * 2^tau, h] tables, the layer's storage policy.
// Element type (TableType: fp32, bf16, or int8 with one scale per row) times layout (TableLayout:
// rows, or column tiles for long forwards; detail/table_tiles.hpp), in aligned storage the store
// owns, or read in place from memory it shares (a mapped model file: viewing()). A layer's trained
// tables are full precision (Scalar) in rows and owned: the only store that training reads and
// writes, and the only one with a mutable row-major view. compressed() converts to any other store
// for inference; the roundings are table_storage.hpp's, the int8 scale is folded into the chunk
// score (s_k scale_r: one multiply per selected row, not per value), and accumulation stays in
// float. A store may also be unallocated (Init::none): it knows its shape, holds no values, and
// every read is an error until load_model or MemoryLayer::set_tables gives it some.
#pragma once

#include "config.hpp"
#include "context.hpp"
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
#include <cstring>
#include <memory>
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

  // Trainable tables of rows x width, zero.
  TableStore(Eigen::Index rows, Eigen::Index width)
      : rows_(rows), width_(width), full_(static_cast<std::size_t>(rows * width)) {}

  // Tables of rows x width with no values yet.
  static TableStore unallocated(Eigen::Index rows, Eigen::Index width) {
    TableStore out;
    out.rows_ = rows;
    out.width_ = width;
    out.allocated_ = false;
    return out;
  }

  // Tables stored as `type` in rows at `values` ([rows, width] of fp32 = Scalar, bf16 or int8, and
  // for int8 `row_scales` [rows]), read in place: `keep_alive` owns that memory (a file mapping) and
  // the store holds it as long as it lives. `values` must be aligned to a cache line and
  // `row_scales` to a float (can_view()).
  static TableStore viewing(TableType type, Eigen::Index rows, Eigen::Index width, const void* values,
                            const float* row_scales, std::shared_ptr<const void> keep_alive) {
    TableStore out = stored_shape(type, rows, width, values, row_scales);
    if (!keep_alive || !can_view(values, row_scales))
      detail::fail("TableStore::viewing", "values", keep_alive ? "an unaligned address" : "no owner",
                   "memory aligned to 64 bytes (scales to 4), kept alive by `keep_alive`");
    out.view_values_ = values;
    out.view_scales_ = row_scales;
    out.keep_alive_ = std::move(keep_alive);
    return out;
  }

  // The same tables copied into storage of the store's own (trainable when fp32). Row r starts
  // row_stride values after row r - 1 (width when 0): a column slice of wider tables.
  static TableStore copying(TableType type, Eigen::Index rows, Eigen::Index width, const void* values,
                            const float* row_scales, Eigen::Index row_stride = 0) {
    TableStore out = stored_shape(type, rows, width, values, row_scales);
    const std::size_t n = static_cast<std::size_t>(rows * width);
    const Eigen::Index stride = row_stride == 0 ? width : row_stride;
    const auto copy = [&](auto& buffer) {
      buffer = std::remove_reference_t<decltype(buffer)>(n);
      const std::size_t size = sizeof(buffer[0]);
      const auto* from = static_cast<const std::uint8_t*>(values);
      for (Eigen::Index r = 0; r < rows && width > 0; ++r)
        std::memcpy(buffer.data() + r * width, from + static_cast<std::size_t>(r * stride) * size,
                    static_cast<std::size_t>(width) * size);
    };
    switch (type) {
      case TableType::bf16:
        copy(out.bf16_);
        break;
      case TableType::int8:
        copy(out.int8_);
        out.row_scale_.assign(row_scales, row_scales + rows);
        break;
      case TableType::fp32:
        copy(out.full_);
        break;
    }
    return out;
  }

  // Whether viewing() can read tables in place at these addresses.
  static bool can_view(const void* values, const float* row_scales) {
    return reinterpret_cast<std::uintptr_t>(values) % detail::kCacheLineBytes == 0 &&
           reinterpret_cast<std::uintptr_t>(row_scales) % alignof(float) == 0;
  }

  TableType type() const { return type_; }
  TableLayout layout() const { return layout_; }
  Eigen::Index rows() const { return rows_; }
  Eigen::Index width() const { return width_; }
  bool is_allocated() const { return allocated_; }
  // Whether the values are read in place from memory the store shares (viewing()).
  bool is_view() const { return keep_alive_ != nullptr; }
  // Where the stored values begin (for the tests of where they live); nullptr when unallocated.
  const void* stored_values() const {
    if (!allocated_) return nullptr;
    switch (type_) {
      case TableType::bf16:
        return stored<detail::bf16>();
      case TableType::int8:
        return stored<std::int8_t>();
      case TableType::fp32:
        break;
    }
    return stored<Scalar>();
  }
  // Where an int8 store's row scales begin; nullptr for other types.
  const float* stored_row_scales() const {
    return allocated_ && type_ == TableType::int8 ? row_scales() : nullptr;
  }
  // Whether these are trainable tables: full precision, in rows, in storage of their own.
  bool is_trainable() const {
    return allocated_ && !is_view() && type_ == TableType::fp32 && layout_ == TableLayout::rows;
  }

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

  // Bytes the tables occupy, row scales included (in the shared memory, for a view).
  std::size_t bytes() const {
    if (!allocated_) return 0;
    const auto values = static_cast<std::size_t>(rows_ * width_);
    switch (type_) {
      case TableType::bf16:
        return values * sizeof(detail::bf16);
      case TableType::int8:
        return values + static_cast<std::size_t>(rows_) * sizeof(float);
      case TableType::fp32:
        break;
    }
    return values * sizeof(Scalar);
  }

  // The value forward() computes with at (r, c), and all of them as a row-major matrix.
  Scalar value(Eigen::Index r, Eigen::Index c) const {
    const auto i = static_cast<std::size_t>(tiles<const Scalar>(nullptr).index(r, c));  // same for every type
    switch (type_) {
      case TableType::bf16:
        return static_cast<Scalar>(detail::widen(stored<detail::bf16>()[i]));
      case TableType::int8:
        return static_cast<Scalar>(dequantise_int8(stored<std::int8_t>()[i], row_scales()[r]));
      case TableType::fp32:
        break;
    }
    return stored<Scalar>()[i];
  }
  RowMatrix<Scalar> values() const {
    require_allocated("MemoryLayer::table_values");
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
    require_allocated(where);
    if (type == type_ && layout == layout_)  // the same store, in memory of its own
      return is_view() ? copying(type_, rows_, width_, view_values_, view_scales_) : *this;
    TableStore out;
    out.type_ = type;
    out.layout_ = layout;
    out.rows_ = rows_;
    out.width_ = width_;
    // The values row-major: the tables themselves when they are so stored, else a converted copy.
    const bool row_major = type_ == TableType::fp32 && layout_ == TableLayout::rows;
    RowMatrix<Scalar> copy;
    if (!row_major) copy = values();
    const Scalar* source = row_major ? stored<Scalar>() : copy.data();
    switch (type) {
      case TableType::bf16:
        out.bf16_ = out.laid_out<detail::bf16>(
            source, [](Scalar v) { return detail::bf16{detail::float_to_bf16(static_cast<float>(v))}; });
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
  RowMatrix<Scalar> gather(const Context& ctx, const Buckets<Scalar>& buckets, int buckets_per_table,
                           const RowMatrix<Scalar>& bias) const {
    require_allocated("MemoryLayer::forward");
    if constexpr (std::is_same<Scalar, float>::value) {
      const KernelPath path = ctx.kernel_path();
      switch (type_) {
        case TableType::bf16:
          return gather_stored(ctx, buckets, buckets_per_table, bias, stored<detail::bf16>(),
                               detail::packed_kernels_for<detail::bf16>(path));
        case TableType::int8:
          return gather_stored(ctx, buckets, buckets_per_table, bias, stored<std::int8_t>(),
                               detail::packed_kernels_for<std::int8_t>(path));
        case TableType::fp32:
          break;
      }
    }
    return gather_stored(ctx, buckets, buckets_per_table, bias, stored<Scalar>(),
                         detail::kernels_for<Scalar>(ctx.kernel_path()));
  }

 private:
  // A store of `type` in rows, shaped for `values` (checked: present, and a type this Scalar holds).
  static TableStore stored_shape(TableType type, Eigen::Index rows, Eigen::Index width, const void* values,
                                 const float* row_scales) {
    const char* where = "TableStore";
    if (type != TableType::fp32 && type != TableType::bf16 && type != TableType::int8)
      detail::fail(where, "type", static_cast<int>(type), "TableType::fp32, bf16 or int8");
    if (!std::is_same<Scalar, float>::value && type != TableType::fp32)
      detail::fail(where, "table type", to_string(type), "TableType::fp32 for double tables");
    if (rows * width > 0 && values == nullptr) detail::fail(where, "values", "nullptr", "the tables' values");
    if (type == TableType::int8 && rows > 0 && row_scales == nullptr)
      detail::fail(where, "row_scales", "nullptr", "one scale per row for int8 tables");
    TableStore out;
    out.type_ = type;
    out.rows_ = rows;
    out.width_ = width;
    return out;
  }

  // The stored values as T, the element type of type_: in the shared memory, or in the buffers.
  template <class T>
  const T* stored() const {
    if (is_view()) return static_cast<const T*>(view_values_);
    if constexpr (std::is_same<T, detail::bf16>::value)
      return bf16_.data();
    else if constexpr (std::is_same<T, std::int8_t>::value)
      return int8_.data();
    else
      return full_.data();
  }
  const float* row_scales() const { return is_view() ? view_scales_ : row_scale_.data(); }

  void require_allocated(const char* where) const {
    if (!allocated_)
      detail::fail(where, "tables", "not allocated (a model built with Init::none or except_tables)",
                   "tables given by load_model() or MemoryLayer::set_tables() first");
  }

  void require_trainable(const char* where) const {
    require_allocated(where);
    if (is_view())
      detail::fail(where, "tables",
                   std::string(to_string(type_)) + " tables read in place from a mapped file",
                   "tables of the layer's own to train or write: load with io::Weights::copy, or read the "
                   "values with table_values()");
    if (!is_trainable())
      detail::fail(
          where, "tables",
          std::string(to_string(type_)) + " tables in " + to_string(layout_) + " (compressed for inference)",
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
  RowMatrix<Scalar> gather_stored(const Context& ctx, const Buckets<Scalar>& buckets, int buckets_per_table,
                                  const RowMatrix<Scalar>& bias, const T* table,
                                  const Kernels& kernels) const {
    if (type_ != TableType::int8)
      return detail::gather_tokens(ctx, tiles(table), buckets.codes, buckets.scores, buckets_per_table, bias,
                                   kernels);
    const float* row_scale = row_scales();
    const auto scale = [&](Eigen::Index i, Eigen::Index k) -> const float& {
      return row_scale[k * buckets_per_table + buckets.codes(i, k)];
    };
    RowMatrix<Scalar> scaled(buckets.scores.rows(), buckets.scores.cols());
    for (Eigen::Index i = 0; i < scaled.rows(); ++i) {
      for (Eigen::Index k = 0; k < scaled.cols(); ++k) detail::prefetch_row(&scale(i, k), sizeof(float));
      for (Eigen::Index k = 0; k < scaled.cols(); ++k) scaled(i, k) = buckets.scores(i, k) * scale(i, k);
    }
    return detail::gather_tokens(ctx, tiles(table), buckets.codes, scaled, buckets_per_table, bias, kernels);
  }

  TableType type_ = TableType::fp32;
  TableLayout layout_ = TableLayout::rows;
  Eigen::Index rows_ = 0, width_ = 0;
  bool allocated_ = true;
  // Aligned storage in layout_ (tiles()); only the one of type_ is allocated, and none for a view.
  detail::AlignedBuffer<Scalar> full_;
  detail::AlignedBuffer<detail::bf16> bf16_;
  detail::AlignedBuffer<std::int8_t> int8_;
  std::vector<float> row_scale_;  // int8 only, one per table row
  // A view's values and scales (in rows), and what keeps them alive.
  const void* view_values_ = nullptr;
  const float* view_scales_ = nullptr;
  std::shared_ptr<const void> keep_alive_;
};

}  // namespace v0
}  // namespace memoryformer

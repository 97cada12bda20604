// TableStore: how a Memory Layer holds its [K * 2^tau, h] tables, the layer's storage policy. It
// stores and converts; the computation over it is lookup.hpp's.
// Element type (TableType: fp32, bf16, or int8 with one scale per row) times layout (TableLayout:
// rows, or column tiles for long forwards; detail/table_tiles.hpp). The values live in memory with
// one owner: an aligned buffer of the store's own, or memory it shares (a mapped model file:
// viewing()). A layer's trained tables are full precision (Scalar) in rows and owned: the only
// store that training reads and writes, and the only one with a mutable row-major view.
// compressed() converts to any other store for inference, with the roundings of table_format.hpp.
// A store may also be unallocated (Init::none): it knows its shape, holds no values, and every
// read is an error until load_model or MemoryLayer::set_tables gives it some.
#pragma once

#include "config.hpp"
#include "detail/table_tiles.hpp"
#include "platform/aligned_buffer.hpp"
#include "platform/float16.hpp"
#include "table_format.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace memoryformer {
inline namespace v0 {

// A store's values as the kernels read them: stored as T (Scalar, bf16 or int8) in the store's
// layout, and for int8 the scale of each row.
template <class T>
struct StoredTables {
  detail::TableTiles<const T> tiles;
  const float* row_scales = nullptr;  // int8 only, one per row
};

template <class Scalar>
class TableStore {
  static_assert(std::is_floating_point<Scalar>::value, "TableStore<Scalar>: Scalar must be float or double");

 public:
  TableStore() = default;

  // Trainable tables of rows x width, zero.
  TableStore(Eigen::Index rows, Eigen::Index width) : rows_(rows), width_(width) { allocate(); }

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
    out.owner_ = std::move(keep_alive);
    out.values_ = values;
    out.row_scales_ = type == TableType::int8 ? row_scales : nullptr;
    return out;
  }

  // The same tables copied into storage of the store's own (trainable when fp32). Row r starts
  // row_stride values after row r - 1 (width when 0): a column slice of wider tables.
  static TableStore copying(TableType type, Eigen::Index rows, Eigen::Index width, const void* values,
                            const float* row_scales, Eigen::Index row_stride = 0) {
    TableStore out = stored_shape(type, rows, width, values, row_scales);
    std::uint8_t* to = out.allocate();
    const std::size_t row_bytes = static_cast<std::size_t>(width) * out.value_bytes();
    const std::size_t stride_bytes = static_cast<std::size_t>(row_stride == 0 ? width : row_stride) * out.value_bytes();
    const auto* from = static_cast<const std::uint8_t*>(values);
    for (Eigen::Index r = 0; r < rows && width > 0; ++r)
      std::memcpy(to + static_cast<std::size_t>(r) * row_bytes, from + static_cast<std::size_t>(r) * stride_bytes,
                  row_bytes);
    if (type == TableType::int8) std::copy(row_scales, row_scales + rows, out.owned_scales());
    return out;
  }

  // Copies hold storage of their own (a view stays a view of the same memory).
  TableStore(const TableStore& other) { *this = other; }
  TableStore& operator=(const TableStore& other) {
    if (this == &other) return *this;
    type_ = other.type_;
    layout_ = other.layout_;
    rows_ = other.rows_;
    width_ = other.width_;
    allocated_ = other.allocated_;
    owned_ = other.owned_;
    if (!other.owned_) {
      owner_ = other.owner_;
      values_ = other.values_;
      row_scales_ = other.row_scales_;
      return *this;
    }
    std::uint8_t* to = allocate();
    if (bytes_of_values() > 0) std::memcpy(to, other.values_, bytes_of_values());
    if (type_ == TableType::int8) std::copy(other.row_scales_, other.row_scales_ + rows_, owned_scales());
    return *this;
  }
  TableStore(TableStore&&) noexcept = default;
  TableStore& operator=(TableStore&&) noexcept = default;

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
  bool is_view() const { return owner_ != nullptr && !owned_; }
  // Where the stored values begin (for the tests of where they live); nullptr when unallocated.
  const void* stored_values() const { return allocated_ ? values_ : nullptr; }
  // Where an int8 store's row scales begin; nullptr for other types.
  const float* stored_row_scales() const { return allocated_ ? row_scales_ : nullptr; }
  // Whether these are trainable tables: full precision, in rows, in storage of their own.
  bool is_trainable() const { return allocated_ && owned_ && type_ == TableType::fp32 && layout_ == TableLayout::rows; }

  // The trainable tables' values, row-major. Other stores have no such array: `where` names the
  // caller in the error.
  Scalar* data(const char* where) {
    require_trainable(where);
    // The store's own buffer, allocated mutable; values_ is const only because views share theirs.
    return static_cast<Scalar*>(const_cast<void*>(values_));
  }
  const Scalar* data(const char* where) const {
    require_trainable(where);
    return static_cast<const Scalar*>(values_);
  }

  // Bytes the tables occupy, row scales included (in the shared memory, for a view).
  std::size_t bytes() const {
    if (!allocated_) return 0;
    return bytes_of_values() + (type_ == TableType::int8 ? static_cast<std::size_t>(rows_) * sizeof(float) : 0);
  }

  // Calls f(StoredTables<T>) with the values as stored, T the element type of type(), and returns
  // what it returns: the one place a computation learns the stored type.
  template <class F>
  decltype(auto) visit(const F& f) const {
    require_allocated("MemoryLayer::forward");
    if constexpr (std::is_same<Scalar, float>::value) {  // a double store holds fp32 alone
      switch (type_) {
        case TableType::bf16:
          return f(StoredTables<detail::bf16>{tiles(stored<detail::bf16>()), nullptr});
        case TableType::int8:
          return f(StoredTables<std::int8_t>{tiles(stored<std::int8_t>()), row_scales_});
        case TableType::fp32:
          break;
      }
    }
    return f(StoredTables<Scalar>{tiles(stored<Scalar>()), nullptr});
  }

  // The value forward() computes with at (r, c), and all of them as a row-major matrix.
  Scalar value(Eigen::Index r, Eigen::Index c) const {
    const auto i = static_cast<std::size_t>(tiles<const Scalar>(nullptr).index(r, c));  // same for every type
    switch (type_) {
      case TableType::bf16:
        return static_cast<Scalar>(detail::widen(stored<detail::bf16>()[i]));
      case TableType::int8:
        return static_cast<Scalar>(dequantise_int8(stored<std::int8_t>()[i], row_scales_[r]));
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
      return is_view() ? copying(type_, rows_, width_, values_, row_scales_) : *this;
    TableStore out;
    out.type_ = type;
    out.layout_ = layout;
    out.rows_ = rows_;
    out.width_ = width_;
    out.allocate();
    // The values row-major: the tables themselves when they are so stored, else a converted copy.
    const bool row_major = type_ == TableType::fp32 && layout_ == TableLayout::rows;
    RowMatrix<Scalar> copy;
    if (!row_major) copy = values();
    const Scalar* source = row_major ? stored<Scalar>() : copy.data();
    switch (type) {
      case TableType::bf16:
        out.lay_out<detail::bf16>(
            source, [](Scalar v) { return detail::bf16{detail::float_to_bf16(static_cast<float>(v))}; });
        break;
      case TableType::int8:
        if constexpr (std::is_same<Scalar, float>::value) {
          std::vector<std::int8_t> q(static_cast<std::size_t>(rows_ * width_));
          quantise_int8_rows(source, rows_, width_, q.data(), out.owned_scales());
          out.lay_out<std::int8_t>(q.data(), [](std::int8_t v) { return v; });
        }
        break;
      case TableType::fp32:
        out.lay_out<Scalar>(source, [](Scalar v) { return v; });
        break;
    }
    return out;
  }

 private:
  // The store's own memory: the values in layout_ and, for int8, the row scales.
  struct Owned {
    detail::AlignedBuffer<std::uint8_t> values;
    std::vector<float> row_scales;
  };

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

  std::size_t value_bytes() const {
    return type_ == TableType::fp32 ? sizeof(Scalar) : static_cast<std::size_t>(table_value_bytes(type_));
  }
  std::size_t bytes_of_values() const { return static_cast<std::size_t>(rows_ * width_) * value_bytes(); }

  // Zeroed memory of the store's own for the values (and the scales of int8), which becomes their
  // owner; returns where the values go.
  std::uint8_t* allocate() {
    auto owned = std::make_shared<Owned>();
    owned->values = detail::AlignedBuffer<std::uint8_t>(bytes_of_values());
    if (type_ == TableType::int8) owned->row_scales.assign(static_cast<std::size_t>(rows_), 0.0f);
    values_ = owned->values.data();
    row_scales_ = type_ == TableType::int8 ? owned->row_scales.data() : nullptr;
    owner_ = owned;
    owned_ = true;
    allocated_ = true;
    return owned->values.data();
  }
  float* owned_scales() { return const_cast<float*>(row_scales_); }  // after allocate(): ours

  // The stored values as T, the element type of type_.
  template <class T>
  const T* stored() const {
    return static_cast<const T*>(values_);
  }

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

  // The row-major [rows_, width_] `source` converted value by value into the store's own memory,
  // in layout_, a row's tile pieces at a time.
  template <class T, class Source, class Convert>
  void lay_out(const Source* source, const Convert& convert) {
    T* stored = static_cast<T*>(const_cast<void*>(values_));  // our own memory, just allocated
    for (Eigen::Index r = 0; r < rows_; ++r) {
      const Source* row = source + r * width_;
      detail::for_each_tile_piece(tiles(stored), 0, width_,
                                  [&](T* piece, std::ptrdiff_t ld, Eigen::Index c, int w) {
                                    std::transform(row + c, row + c + w, piece + r * ld, convert);
                                  });
    }
  }

  TableType type_ = TableType::fp32;
  TableLayout layout_ = TableLayout::rows;
  Eigen::Index rows_ = 0, width_ = 0;
  bool allocated_ = true;
  bool owned_ = false;  // the values are in owner_'s Owned, not in memory the store shares
  // What keeps the values alive (the store's Owned, or a file mapping), and where they are.
  std::shared_ptr<const void> owner_;
  const void* values_ = nullptr;
  const float* row_scales_ = nullptr;  // int8 only, one per table row
};

}  // namespace v0
}  // namespace memoryformer

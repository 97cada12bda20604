// PackedMemoryLayer: a trained MemoryLayer<float> with its tables stored in fewer bytes, for
// inference. Where DRAM decides (batch-1 decoding reads K rows per token from memory), halving or
// quartering the bytes per row is the lever (docs/performance.md). The roundings are those of
// table_storage.hpp (bf16; int8 with one symmetric scale per row); the int8 scale is folded into the
// chunk score (s_k scale_r), one multiply per selected row instead of one per value.
// Accumulation stays in float. Hashing, scores and bias are the layer's own, unchanged.
#pragma once

#include "config.hpp"
#include "detail/aligned_buffer.hpp"
#include "detail/dispatch.hpp"
#include "detail/float16.hpp"
#include "detail/gather_schedule.hpp"
#include "detail/kernels/row_selection.hpp"
#include "detail/table_tiles.hpp"
#include "hash_bucket.hpp"
#include "memory_layer.hpp"
#include "table_storage.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace memoryformer {
inline namespace v0 {

class PackedMemoryLayer {
 public:
  using Input = Eigen::Ref<const RowMatrix<float>>;

  // Converts the layer's tables (a copy: later training of `layer` does not reach this one), laid
  // out as `layout` says.
  PackedMemoryLayer(const MemoryLayer<float>& layer, TableType type, TableLayout layout = TableLayout::rows)
      : hash_(layer.hash()),
        bias_(layer.bias()),
        type_(type),
        layout_(layout),
        rows_(layer.tables().rows()),
        width_(layer.out_dim()) {
    if (layout != TableLayout::rows && layout != TableLayout::tiles)
      detail::fail("PackedMemoryLayer", "layout", static_cast<int>(layout), "TableLayout::rows or tiles");
    const auto t = layer.tables();
    switch (type) {
      case TableType::fp32:
        fp32_ = tiled_copy<float>(t.data(), [](float v) { return v; });
        break;
      case TableType::bf16:
        bf16_ = tiled_copy<detail::bf16>(t.data(),
                                         [](float v) { return detail::bf16{detail::float_to_bf16(v)}; });
        break;
      case TableType::int8: {
        std::vector<std::int8_t> q(static_cast<std::size_t>(t.size()));
        row_scale_.resize(static_cast<std::size_t>(t.rows()));
        quantise_int8_rows(t.data(), t.rows(), t.cols(), q.data(), row_scale_.data());
        int8_ = tiled_copy<std::int8_t>(q.data(), [](std::int8_t v) { return v; });
        break;
      }
      default:
        detail::fail("PackedMemoryLayer", "type", static_cast<int>(type), "TableType::fp32, bf16 or int8");
    }
  }

  TableType table_type() const { return type_; }
  TableLayout layout() const { return layout_; }
  int in_dim() const { return hash_.in_dim(); }
  int out_dim() const { return static_cast<int>(width_); }
  int tau() const { return hash_.tau(); }
  int num_chunks() const { return hash_.num_chunks(); }
  int num_buckets() const { return hash_.num_buckets(); }
  bool has_bias() const { return bias_.cols() > 0; }
  const SignHash<float>& hash() const { return hash_; }
  const RowMatrix<float>& bias() const { return bias_; }

  // Bytes the tables occupy, row scales included.
  std::size_t table_bytes() const {
    return fp32_.size() * sizeof(float) + bf16_.size() * sizeof(detail::bf16) + int8_.size() +
           row_scale_.size() * sizeof(float);
  }

  // The tables as forward() sees them, [K * 2^tau, out_dim] in float (for inspection and tests).
  RowMatrix<float> tables() const {
    RowMatrix<float> t(rows_, width_);
    for (Eigen::Index r = 0; r < rows_; ++r)
      for (Eigen::Index c = 0; c < width_; ++c) t(r, c) = value(r, c);
    return t;
  }

  // [N, in_dim] -> [N, out_dim]. Const and safe to call from several threads at once.
  RowMatrix<float> forward(const Input& x) const { return forward(hash_(x)); }

  RowMatrix<float> forward(const Buckets<float>& buckets) const {
    detail::check_buckets("PackedMemoryLayer::forward", buckets, num_chunks(), num_buckets());
    const KernelPath path = kernel_path();
    switch (type_) {
      case TableType::bf16:
        return gather(buckets, bf16_.data(), detail::packed_kernels_for<detail::bf16>(path));
      case TableType::int8:
        return gather(buckets, int8_.data(), detail::packed_kernels_for<std::int8_t>(path));
      case TableType::fp32:
        break;
    }
    return gather(buckets, fp32_.data(), detail::kernels_for<float>(path));
  }

 private:
  // The stored tables as the schedules see them: one tile as wide as a row, or tiles of
  // kTileColumns (detail/table_tiles.hpp).
  template <class T>
  detail::TableTiles<T> tiles(T* data) const {
    return {data, rows_, width_, layout_ == TableLayout::tiles ? detail::kTileColumns : width_};
  }

  // The row-major [rows_, width_] `source` converted value by value into layout_, a row's tile
  // pieces at a time.
  template <class T, class Source, class Convert>
  detail::AlignedBuffer<T> tiled_copy(const Source* source, const Convert& convert) const {
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

  float value(Eigen::Index r, Eigen::Index c) const {
    const auto i = static_cast<std::size_t>(tiles<const float>(nullptr).index(r, c));  // same for every type
    switch (type_) {
      case TableType::bf16:
        return detail::widen(bf16_[i]);
      case TableType::int8:
        return dequantise_int8(int8_[i], row_scale_[static_cast<std::size_t>(r)]);
      case TableType::fp32:
        break;
    }
    return fp32_[i];
  }

  // The gather of `table` for every token; int8 scores are first multiplied by their rows' scales.
  // A token's K scales are K random lines, cold at batch 1: they are all requested into L2 first
  // (detail::prefetch_row), or the loads queue on L1's few miss buffers. Measured at N = 1, int8,
  // d = h = 1024, tau 8, cold tables, 2 threads, us per token (medians of 6-8 interleaved runs):
  // 13.9-15.9 -> 12.6-12.9 (three comparisons).
  template <class T, class Kernel>
  RowMatrix<float> gather(const Buckets<float>& buckets, const T* table, const Kernel& kernel) const {
    if (row_scale_.empty())
      return detail::gather_tokens(tiles(table), buckets.codes, buckets.scores, num_buckets(), bias_, kernel);
    const auto scale = [&](Eigen::Index i, Eigen::Index k) -> const float& {
      return row_scale_[static_cast<std::size_t>(k * num_buckets() + buckets.codes(i, k))];
    };
    RowMatrix<float> scaled(buckets.scores.rows(), buckets.scores.cols());
    for (Eigen::Index i = 0; i < scaled.rows(); ++i) {
      for (Eigen::Index k = 0; k < scaled.cols(); ++k) detail::prefetch_row(&scale(i, k), sizeof(float));
      for (Eigen::Index k = 0; k < scaled.cols(); ++k) scaled(i, k) = buckets.scores(i, k) * scale(i, k);
    }
    return detail::gather_tokens(tiles(table), buckets.codes, scaled, num_buckets(), bias_, kernel);
  }

  SignHash<float> hash_;
  RowMatrix<float> bias_;
  TableType type_;
  TableLayout layout_;
  Eigen::Index rows_, width_;
  // Aligned storage in layout_ (tiles()); only the one of type_ is allocated.
  detail::AlignedBuffer<float> fp32_;
  detail::AlignedBuffer<detail::bf16> bf16_;
  detail::AlignedBuffer<std::int8_t> int8_;
  std::vector<float> row_scale_;  // int8 only, one per table row
};

}  // namespace v0
}  // namespace memoryformer

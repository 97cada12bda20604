// CompressedTables: an optional bf16 or int8 copy (PackedMemoryLayer) of one MemoryLayer's tables,
// which the blocks' inference paths read instead of the fp32 tables once a model is compressed
// (Model::compress_tables). Where DRAM decides, as in decoding and in a forward over a few hundred
// tokens, the bytes read per token are what the time is (docs/performance.md).
//
// The fp32 tables stay: they are the trained parameters, and compress_tables(TableType::fp32)
// returns to them. Training needs them, so a forward that saves activations for backward refuses
// to run on a compressed copy (its gradients would be those of other weights). Compress after
// training, and again after any further update: a copy does not follow later changes.
#pragma once

#include "config.hpp"
#include "hash_bucket.hpp"
#include "memory_layer.hpp"
#include "packed_memory_layer.hpp"

#include <optional>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {
namespace detail {

template <class Scalar>
class CompressedTables {
 public:
  // Replaces the copy by one of `layer`'s current tables in `type` and `layout`; fp32 drops it
  // (the trained tables are rows, so fp32 asks for TableLayout::rows).
  void compress(const MemoryLayer<Scalar>& layer, TableType type, TableLayout layout) {
    if (type == TableType::fp32 && layout != TableLayout::rows)
      fail("compress_tables", "layout", to_string(layout),
           "TableLayout::rows with TableType::fp32 (the trained tables are not copied)");
    if constexpr (std::is_same<Scalar, float>::value) {
      if (type == TableType::fp32)
        packed_.reset();
      else
        packed_.emplace(layer, type, layout);
    } else {
      (void)layer;
      if (type != TableType::fp32)
        fail("compress_tables", "table type", to_string(type),
             "TableType::fp32 for a double model (compressed tables hold float values)");
    }
  }

  TableType type() const { return packed_ ? packed_->table_type() : TableType::fp32; }
  TableLayout layout() const { return packed_ ? packed_->layout() : TableLayout::rows; }

  // The layer's output for `buckets`, from the compressed copy if there is one.
  RowMatrix<Scalar> forward(const MemoryLayer<Scalar>& layer, const Buckets<Scalar>& buckets) const {
    if constexpr (std::is_same<Scalar, float>::value) {
      if (packed_) return packed_->forward(buckets);
    }
    return layer.forward(buckets);
  }

 private:
  std::optional<PackedMemoryLayer> packed_;
};

// The error of a forward asked to save activations for training on compressed tables.
inline void require_uncompressed_for_training(const char* where, TableType type) {
  if (type != TableType::fp32)
    fail(where, "saved", std::string("a request to save activations with ") + to_string(type) + " tables",
         "fp32 tables for training: call compress_tables(TableType::fp32) first, or forward without "
         "`saved` for inference");
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

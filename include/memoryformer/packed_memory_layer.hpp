// PackedMemoryLayer: a trained MemoryLayer<float> with its tables stored in fewer bytes, for
// inference, as a separate object: the same as layer.compressed(type, layout) (table_store.hpp has
// the roundings and the storage). Kept for code that holds the trained layer and a compressed copy
// side by side; a model compresses its own layers in place (Model::compress_tables).
#pragma once

#include "config.hpp"
#include "hash_bucket.hpp"
#include "memory_layer.hpp"
#include "table_storage.hpp"

namespace memoryformer {
inline namespace v0 {

class PackedMemoryLayer {
 public:
  using Input = Eigen::Ref<const RowMatrix<float>>;

  // Converts the layer's tables (a copy: later training of `layer` does not reach this one), laid
  // out as `layout` says.
  PackedMemoryLayer(const MemoryLayer<float>& layer, TableType type, TableLayout layout = TableLayout::rows)
      : layer_(layer.compressed(type, layout)) {}

  TableType table_type() const { return layer_.table_type(); }
  TableLayout layout() const { return layer_.table_layout(); }
  int in_dim() const { return layer_.in_dim(); }
  int out_dim() const { return layer_.out_dim(); }
  int tau() const { return layer_.tau(); }
  int num_chunks() const { return layer_.num_chunks(); }
  int num_buckets() const { return layer_.num_buckets(); }
  bool has_bias() const { return layer_.has_bias(); }
  SignHash<float> hash() const { return layer_.hash(); }
  RowMatrix<float> bias() const { return layer_.bias(); }

  // Bytes the tables occupy, row scales included.
  std::size_t table_bytes() const { return layer_.table_bytes(); }

  // The tables as forward() sees them, [K * 2^tau, out_dim] in float (for inspection and tests).
  RowMatrix<float> tables() const { return layer_.table_values(); }

  // [N, in_dim] -> [N, out_dim]. Const and safe to call from several threads at once.
  RowMatrix<float> forward(const Input& x) const { return layer_.forward(x); }
  RowMatrix<float> forward(const Buckets<float>& buckets) const { return layer_.forward(buckets); }

 private:
  MemoryLayer<float> layer_;
};

}  // namespace v0
}  // namespace memoryformer

// OutputShard: a layer split by output columns over several processes (docs/distributed.md). Each
// process holds and computes a contiguous range of the layer's output columns (for a Memory Layer,
// those columns of every table and of the bias; for the LM head, a range of the vocabulary) from
// the same whole input rows, and a ColumnGather puts the whole rows back together on every process.
// The core only calls the gather; distributed/ implements it over MPI, so the core needs no MPI.
#pragma once

#include "config.hpp"
#include "detail/partition.hpp"

#include <memory>
#include <string>

namespace memoryformer {
inline namespace v0 {

// How whole rows are rebuilt from every process's columns.
template <class Scalar>
class ColumnGather {
 public:
  virtual ~ColumnGather() = default;
  // This process's columns [N, count] of a layer `width` columns wide -> the whole rows [N, width],
  // the same on every process. A collective: every process calls it, in the same order.
  virtual RowMatrix<Scalar> gather(const RowMatrix<Scalar>& local, Eigen::Index width) const = 0;
};

// Which part of the outputs this process computes: part `part` of `parts`, and how the parts meet.
template <class Scalar>
struct OutputShard {
  int part = 0;
  int parts = 1;
  std::shared_ptr<const ColumnGather<Scalar>> gather;

  // The columns of part `part` of a `width`-wide output: nearly equal contiguous ranges whose
  // inner boundaries are multiples of 16 (a cache line of floats) wherever the width allows it.
  static detail::Range columns_of(Eigen::Index width, int parts, int part) {
    const Eigen::Index align = width >= 16 * parts ? 16 : 1;
    return detail::split_range(width, parts, part, align);
  }
  detail::Range columns(Eigen::Index width) const { return columns_of(width, parts, part); }

  // Throws unless the shard is usable for a `width`-wide output of `where`: every part non-empty.
  void check(const char* where, Eigen::Index width) const {
    if (parts < 1 || part < 0 || part >= parts)
      detail::fail(where, "shard", std::to_string(part) + " of " + std::to_string(parts),
                   "parts >= 1 and part in [0, parts)");
    if (!gather) detail::fail(where, "shard.gather", "null", "a ColumnGather that rebuilds whole rows");
    if (width < parts)
      detail::fail(where, "shard.parts", parts,
                   "at most the " + std::to_string(width) + " output columns, so that every part holds one");
  }
};

}  // namespace v0
}  // namespace memoryformer

// MpiColumnGather: the ColumnGather of output_shard.hpp over MPI. Each rank computes its columns of
// a layer's output for all rows; one MPI_Allgatherv brings every rank's block and each block is
// copied into its columns of the whole rows.
#pragma once

#include "../output_shard.hpp"
#include "communicator.hpp"

#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace distributed {

template <class Scalar>
class MpiColumnGather : public ColumnGather<Scalar> {
 public:
  explicit MpiColumnGather(Communicator comm) : comm_(comm) {}

  // The shard of this rank over all ranks of the communicator, gathering through this object.
  static OutputShard<Scalar> shard(const Communicator& comm) {
    return {comm.rank(), comm.size(), std::make_shared<const MpiColumnGather>(comm)};
  }

  RowMatrix<Scalar> gather(const RowMatrix<Scalar>& local, Eigen::Index width) const override {
    const Eigen::Index rows = local.rows();
    const int parts = comm_.size();
    std::vector<int> counts(static_cast<std::size_t>(parts));
    for (int r = 0; r < parts; ++r)
      counts[static_cast<std::size_t>(r)] = detail::mpi_count(
          "MpiColumnGather::gather", static_cast<std::size_t>(rows * OutputShard<Scalar>::columns_of(width, parts, r).size()));
    const memoryformer::detail::Range mine = OutputShard<Scalar>::columns_of(width, parts, comm_.rank());
    if (local.cols() != mine.size())
      memoryformer::detail::fail("MpiColumnGather::gather", "local", std::to_string(local.cols()) + " columns",
                                 std::to_string(mine.size()) + ", this rank's part of " + std::to_string(width));
    std::vector<Scalar> blocks(static_cast<std::size_t>(rows * width));
    comm_.all_gather(local.data(), counts, blocks.data());
    RowMatrix<Scalar> out(rows, width);
    const Scalar* block = blocks.data();
    for (int r = 0; r < parts; ++r) {
      const memoryformer::detail::Range c = OutputShard<Scalar>::columns_of(width, parts, r);
      out.middleCols(c.begin, c.size()) = Eigen::Map<const RowMatrix<Scalar>>(block, rows, c.size());
      block += rows * c.size();
    }
    return out;
  }

 private:
  Communicator comm_;
};

}  // namespace distributed
}  // namespace v0
}  // namespace memoryformer

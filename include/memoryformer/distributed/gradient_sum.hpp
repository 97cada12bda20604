// GradientSum: data-parallel training's reduction (docs/distributed.md §6). Every rank holds the
// whole model and computes gradients on its share of a step's batch; sum() replaces each gradient
// with its sum over the ranks, so that the one AdamW step every rank then takes is the same and the
// parameters stay identical.
//
// Hash-table gradients are sparse: a step's tokens touch only the rows their codes select. For a
// table, the ranks first sum a mask of their touched rows; if the union's rows, plus that mask,
// are fewer values than the whole table, only those rows are packed and summed, else the whole
// gradient is. The choice is made per table and step, from the measured union.
#pragma once

#include "../parameter.hpp"
#include "communicator.hpp"

#include <cstdint>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace distributed {

// What the last GradientSum::sum sent: values summed whole and as touched rows.
struct GradientTraffic {
  std::int64_t dense_values = 0;   // gradients summed whole
  std::int64_t sparse_values = 0;  // touched rows of tables, and their masks
  int sparse_tables = 0;           // tables summed by rows
  int dense_tables = 0;            // tables summed whole
};

class GradientSum {
 public:
  // A table is summed by touched rows when they and the mask are fewer values than `by_rows_below`
  // times the whole table: 1 whenever that moves less, 0 never.
  explicit GradientSum(Communicator comm, double by_rows_below = 1.0) : comm_(comm), by_rows_below_(by_rows_below) {
    if (!(by_rows_below >= 0.0 && by_rows_below <= 1.0))
      memoryformer::detail::fail("GradientSum", "by_rows_below", by_rows_below, "a fraction in [0, 1]");
  }

  // Each parameter's gradient <- its sum over the ranks, on every rank. A collective: every rank
  // passes the same parameters in the same order. The parameters' modules own the gradients and
  // hand them out read-only for the optimizer; the sum is written back into that storage.
  template <class Scalar>
  void sum(const ParameterList<Scalar>& params) {
    traffic_ = {};
    for (const Parameter<Scalar>& p : params) {
      Scalar* grad = const_cast<Scalar*>(p.grad);
      if (memoryformer::detail::is_table_name(p.name) && sum_touched_rows(p, grad)) continue;
      comm_.all_reduce_sum(grad, static_cast<std::size_t>(p.size()));
      traffic_.dense_values += p.size();
      if (memoryformer::detail::is_table_name(p.name)) ++traffic_.dense_tables;
    }
  }

  const GradientTraffic& last_traffic() const { return traffic_; }

 private:
  // Sums the union of the ranks' touched rows of a table gradient, if that moves few enough values
  // (by_rows_below_); returns whether it did.
  template <class Scalar>
  bool sum_touched_rows(const Parameter<Scalar>& p, Scalar* grad) {
    if (by_rows_below_ == 0.0) return false;
    std::vector<int> touched(static_cast<std::size_t>(p.rows), 0);
    for (Eigen::Index r = 0; r < p.rows; ++r)
      touched[static_cast<std::size_t>(r)] = (p.grad_map().row(r).array() != Scalar(0)).any() ? 1 : 0;
    comm_.all_reduce_sum(touched.data(), touched.size());
    std::vector<Eigen::Index> rows;
    for (Eigen::Index r = 0; r < p.rows; ++r)
      if (touched[static_cast<std::size_t>(r)] != 0) rows.push_back(r);
    const auto packed_values = static_cast<std::int64_t>(rows.size()) * p.cols;
    traffic_.sparse_values += p.rows;  // the mask
    if (static_cast<double>(packed_values + p.rows) >= by_rows_below_ * static_cast<double>(p.size())) return false;
    std::vector<Scalar> packed(static_cast<std::size_t>(packed_values));
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy(grad + rows[i] * p.cols, grad + (rows[i] + 1) * p.cols, packed.data() + i * static_cast<std::size_t>(p.cols));
    comm_.all_reduce_sum(packed.data(), packed.size());
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy(packed.data() + i * static_cast<std::size_t>(p.cols), packed.data() + (i + 1) * static_cast<std::size_t>(p.cols),
                grad + rows[i] * p.cols);
    traffic_.sparse_values += packed_values;
    ++traffic_.sparse_tables;
    return true;
  }

  Communicator comm_;
  double by_rows_below_;
  GradientTraffic traffic_;
};

}  // namespace distributed
}  // namespace v0
}  // namespace memoryformer

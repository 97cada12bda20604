// A named view of one trainable tensor and its gradient: what the optimizer, gradient clipping and
// weight files see of a model. Names and shapes are those of method.md §5 (e.g.
// "blocks.0.attn.q.tables", [K * 2^tau, d]); the modules own the storage, a Parameter only points
// into it and stays valid while the module lives and is not moved.
#pragma once

#include "config.hpp"

#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {

template <class Scalar>
struct Parameter {
  std::string name;
  Scalar* value;       // [rows, cols], row-major
  const Scalar* grad;  // [rows, cols], accumulated by backward(); the module's zero_grad() clears it
  Eigen::Index rows, cols;
  bool decay;  // AdamW's weight decay applies: tables, embedding, dense weights; not norms or biases

  Eigen::Index size() const { return rows * cols; }
  Eigen::Map<RowMatrix<Scalar>> value_map() const { return {value, rows, cols}; }
  Eigen::Map<const RowMatrix<Scalar>> grad_map() const { return {grad, rows, cols}; }
};

template <class Scalar>
using ParameterList = std::vector<Parameter<Scalar>>;

}  // namespace v0
}  // namespace memoryformer

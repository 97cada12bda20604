// A named view of one trainable tensor and its gradient: what the optimizer, gradient clipping and
// weight files see of a model. Names and shapes are those of docs/method.md §5 (e.g.
// "blocks.0.attn.q.tables", [K * 2^tau, d]); the modules own the storage, a Parameter only points
// into it and stays valid while the module lives and is not moved.
#pragma once

#include "config.hpp"

#include <optional>
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

namespace detail {

// The hash tables of Memory Layers are the parameters whose docs/method.md §5 names end in ".tables".
inline bool is_table_name(const std::string& name) {
  const std::string suffix = ".tables";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The views modules hand out of the matrices they own.
template <class Scalar>
Eigen::Map<RowMatrix<Scalar>> view(RowMatrix<Scalar>& m) {
  return {m.data(), m.rows(), m.cols()};
}
template <class Scalar>
Eigen::Map<const RowMatrix<Scalar>> view(const RowMatrix<Scalar>& m) {
  return {m.data(), m.rows(), m.cols()};
}

// A module's gradients, allocated by its first backward() or zero_grad(); asking earlier is an error.
template <class Gradients>
const Gradients& allocated(const std::optional<Gradients>& grads, const char* module, const char* name) {
  if (!grads) fail(module, name, "not yet allocated", "a call to backward() or zero_grad() first");
  return *grads;
}

}  // namespace detail

}  // namespace v0
}  // namespace memoryformer

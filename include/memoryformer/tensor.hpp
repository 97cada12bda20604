// The Eigen Tensor forms of the modules' inputs and outputs: activations [batch, seq, width] in
// row-major order, the layout of the [batch * seq, width] matrices the modules compute on. An input
// tensor is read in place through a matrix map; the result is copied once into a tensor, because an
// Eigen::Tensor cannot take over a matrix's storage.
#pragma once

#include "config.hpp"

#include <unsupported/Eigen/CXX11/Tensor>

#include <cstdint>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {

// Activations [batch, seq, width].
template <class Scalar>
using Tensor3 = Eigen::Tensor<Scalar, 3, Eigen::RowMajor>;

// Token ids [batch, seq].
using TokenTensor = Eigen::Tensor<std::int32_t, 2, Eigen::RowMajor>;

namespace detail {

template <class Tensor>
std::string dims_string(const Tensor& t) {
  return shape_string(std::vector<std::int64_t>(t.dimensions().begin(), t.dimensions().end()));
}

// x [batch, seq, width] as the matrix [batch * seq, width], without a copy. Throws unless width is
// `want_width`, naming `where` and `name`.
template <class Scalar>
Eigen::Map<const RowMatrix<Scalar>> rows_of(const char* where, const char* name, const Tensor3<Scalar>& x,
                                            Eigen::Index want_width) {
  if (x.dimension(2) != want_width)
    fail(where, name, dims_string(x), "[batch, seq, " + std::to_string(want_width) + "]");
  return {x.data(), x.dimension(0) * x.dimension(1), x.dimension(2)};
}

// rows [batch * seq, width] as the tensor [batch, seq, width].
template <class Scalar>
Tensor3<Scalar> to_tensor3(const RowMatrix<Scalar>& rows, Eigen::Index batch, Eigen::Index seq) {
  Tensor3<Scalar> out(batch, seq, rows.cols());
  Eigen::Map<RowMatrix<Scalar>>(out.data(), rows.rows(), rows.cols()) = rows;
  return out;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

// Exact GeLU, x Phi(x), as torch.nn.functional.gelu, and its derivative Phi(x) + x phi(x): the
// dense FFN's activation, and the optional one between the Memory Block's layers (Activation).
#pragma once

#include "config.hpp"

#include <cmath>

namespace memoryformer {
inline namespace v0 {
namespace detail {

template <class Scalar>
Scalar gaussian_cdf(Scalar x) {
  return Scalar(0.5) * (Scalar(1) + std::erf(x * Scalar(0.7071067811865476)));  // erf(x / sqrt(2))
}

template <class Scalar>
RowMatrix<Scalar> gelu(const RowMatrix<Scalar>& x) {
  return x.unaryExpr([](Scalar v) { return v * gaussian_cdf(v); });
}

template <class Scalar>
RowMatrix<Scalar> gelu_backward(const RowMatrix<Scalar>& x, const RowMatrix<Scalar>& dy) {
  return x.binaryExpr(dy, [](Scalar v, Scalar g) {
    const Scalar density = Scalar(0.3989422804014327) * std::exp(Scalar(-0.5) * v * v);  // phi(v)
    return g * (gaussian_cdf(v) + v * density);
  });
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer

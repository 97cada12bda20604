// Next-token cross-entropy: mean over rows of -log softmax(logits)[target] (nats per token).
#pragma once

#include "config.hpp"
#include "embedding.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace memoryformer {
inline namespace v0 {

// logits [N, vocab] and targets with N ids (any shape, read in row-major order) -> the mean loss.
// With `dlogits`, also writes dL/dlogits = (softmax(logits) - onehot(target)) / N. Each row is
// shifted by its maximum before exp (log-sum-exp), so large logits never overflow.
template <class Scalar>
double cross_entropy(const Eigen::Ref<const RowMatrix<Scalar>>& logits, const TokenMatrix& targets,
                     RowMatrix<Scalar>* dlogits = nullptr) {
  const char* where = "cross_entropy";
  if (logits.rows() < 1 || logits.cols() < 1)
    detail::fail(where, "logits",
                 std::to_string(logits.rows()) + " x " + std::to_string(logits.cols()) + " matrix",
                 "at least one row and one column");
  if (targets.size() != logits.rows())
    detail::fail(where, "targets", std::to_string(targets.size()) + " ids",
                 "one per row of logits (" + std::to_string(logits.rows()) + ")");
  if (dlogits != nullptr) dlogits->resize(logits.rows(), logits.cols());
  const double n = static_cast<double>(logits.rows());
  double total = 0;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    const std::int32_t target = targets.data()[i];
    if (target < 0 || target >= logits.cols())
      detail::fail(where, ("targets[" + std::to_string(i) + "]").c_str(), target,
                   "a class id in [0, " + std::to_string(logits.cols()) + ")");
    const auto row = logits.row(i).template cast<double>();
    const double max = row.maxCoeff();
    const double sum = (row.array() - max).exp().sum();
    total += std::log(sum) + max - row(target);
    if (dlogits != nullptr) {
      dlogits->row(i) = ((row.array() - max).exp() / (sum * n)).matrix().template cast<Scalar>();
      (*dlogits)(i, target) -= static_cast<Scalar>(1.0 / n);
    }
  }
  return total / n;
}

// Bits per byte: a text's total negative log-likelihood (nats, summed over its tokens) in bits,
// divided by the UTF-8 bytes of that text. Unlike loss per token it compares models across
// tokenizers, byte-level ones included (for those it is bits per character of ASCII text).
inline double bits_per_byte(double total_nll_nats, std::uint64_t text_bytes) {
  if (text_bytes == 0) detail::fail("bits_per_byte", "text_bytes", 0, "at least one byte");
  if (!(total_nll_nats >= 0) || !std::isfinite(total_nll_nats))
    detail::fail("bits_per_byte", "total_nll_nats", total_nll_nats, "a finite value >= 0");
  return total_nll_nats / std::log(2.0) / static_cast<double>(text_bytes);
}

}  // namespace v0
}  // namespace memoryformer

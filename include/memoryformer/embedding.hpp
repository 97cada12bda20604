// Token embedding: ids [batch, seq] -> rows of a [vocab, d] table (docs/method.md §3, "embed.weight").
#pragma once

#include "config.hpp"
#include "detail/random.hpp"
#include "parameter.hpp"

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {

// Token ids [batch, seq], row-major: sequence b is row b.
using TokenMatrix = RowMatrix<std::int32_t>;

template <class Scalar>
class Embedding {
  static_assert(std::is_floating_point<Scalar>::value, "Embedding<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using MatrixView = Eigen::Map<RowMatrix<Scalar>>;
  using ConstMatrixView = Eigen::Map<const RowMatrix<Scalar>>;

  // Weight N(0, init_std) from `seed` (uninitialised with Init::none).
  Embedding(int vocab_size, int dim, double init_std = 0.02, std::uint64_t seed = 0, Init init = Init::random) {
    const char* where = "Embedding";
    if (vocab_size < 1) detail::fail(where, "vocab_size", vocab_size, "a positive integer");
    if (dim < 1) detail::fail(where, "dim", dim, "a positive integer");
    if (!std::isfinite(init_std) || init_std < 0)
      detail::fail(where, "init_std", init_std, "a finite value >= 0");
    weight_.resize(vocab_size, dim);
    if (init != Init::none) detail::fill_normal_rows(default_context(), seed, init_std, 0, weight_.rows(), weight_.cols(), weight_.data());
  }

  int vocab_size() const { return static_cast<int>(weight_.rows()); }
  int dim() const { return static_cast<int>(weight_.cols()); }
  MatrixView weight() { return detail::view(weight_); }  // [vocab, dim]
  ConstMatrixView weight() const { return detail::view(weight_); }

  // tokens [batch, seq] -> [batch * seq, dim], row b * seq + t for token (b, t).
  RowMatrix<Scalar> forward(const TokenMatrix& tokens) const {
    check_tokens("Embedding::forward", tokens);
    RowMatrix<Scalar> x(tokens.size(), dim());
    for (Eigen::Index i = 0; i < tokens.size(); ++i) x.row(i) = weight_.row(tokens.data()[i]);
    return x;
  }

  // Adds each row of dL/dx [batch * seq, dim] to its token's row of the weight gradient.
  void backward(const TokenMatrix& tokens, const Input& dx) {
    const char* where = "Embedding::backward";
    check_tokens(where, tokens);
    detail::require_shape(where, "dx", dx.rows(), dx.cols(), tokens.size(), dim());
    if (!grad_) zero_grad();
    for (Eigen::Index i = 0; i < tokens.size(); ++i) grad_->row(tokens.data()[i]) += dx.row(i);
  }

  // Accumulated dL/dW [vocab, dim]; an error before the first backward() or zero_grad().
  ConstMatrixView weight_grad() const {
    return detail::view(detail::allocated(grad_, "Embedding", "weight_grad"));
  }
  bool has_grad() const { return grad_.has_value(); }

  // Sets the gradient to zero in place (Parameter views into it stay valid).
  void zero_grad() {
    if (!grad_) grad_.emplace(weight_.rows(), weight_.cols());
    grad_->setZero();
  }

  // Appends prefix.weight with no gradient (Parameter::grad null) and nothing allocated.
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    out.push_back({prefix + ".weight", weight_.data(), nullptr, weight_.rows(), weight_.cols(), true});
  }

  // Appends prefix.weight (with weight decay, as the released code trains it).
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    if (!grad_) zero_grad();
    append_weights(prefix, out);
    out.back().grad = grad_->data();
  }

 private:
  void check_tokens(const char* where, const TokenMatrix& tokens) const {
    for (Eigen::Index i = 0; i < tokens.size(); ++i) {
      const std::int32_t id = tokens.data()[i];
      if (id < 0 || id >= vocab_size())
        detail::fail(
            where,
            ("tokens(" + std::to_string(i / tokens.cols()) + ", " + std::to_string(i % tokens.cols()) + ")")
                .c_str(),
            id, "a token id in [0, " + std::to_string(vocab_size()) + ")");
    }
  }

  RowMatrix<Scalar> weight_;
  std::optional<RowMatrix<Scalar>> grad_;
};

}  // namespace v0
}  // namespace memoryformer

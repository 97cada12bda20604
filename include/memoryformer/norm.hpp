// RMSNorm and LayerNorm over the last dimension of [N, width] activations (docs/method.md §2):
// RMSNorm before attention and the MLP, LayerNorm between the Memory Block's two Memory Layers.
#pragma once

#include "config.hpp"
#include "parameter.hpp"

#include <cmath>
#include <optional>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// Both norms take (width, eps): width >= 1, eps finite and > 0, also once rounded to Scalar (a
// tiny eps that rounds to 0 in float would divide by zero on a zero row).
template <class Scalar>
Scalar checked_norm_args(const char* where, int width, double eps) {
  if (width < 1) fail(where, "width", width, "a positive integer");
  const Scalar e = static_cast<Scalar>(eps);
  if (!std::isfinite(eps) || !(eps > 0) || !std::isfinite(e) || !(e > 0))
    fail(where, "eps", eps, "a finite value > 0 (representable in the scalar type)");
  return e;
}

}  // namespace detail

// y = x / sqrt(mean(x^2) + eps) * w, per row; learned scale w (init 1), no bias, no centring.
// RmsForm::eps_after_root gives the released code's x / (sqrt(mean(x^2)) + eps) * w instead.
template <class Scalar>
class RMSNorm {
  static_assert(std::is_floating_point<Scalar>::value, "RMSNorm<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using MatrixView = Eigen::Map<RowMatrix<Scalar>>;
  using ConstMatrixView = Eigen::Map<const RowMatrix<Scalar>>;

  explicit RMSNorm(int width, double eps = 1e-8, RmsForm form = RmsForm::eps_in_root)
      : eps_(detail::checked_norm_args<Scalar>("RMSNorm", width, eps)),
        form_(form),
        weight_(RowMatrix<Scalar>::Ones(1, width)) {
    if (form != RmsForm::eps_in_root && form != RmsForm::eps_after_root)
      detail::fail("RMSNorm", "form", static_cast<int>(form), "RmsForm::eps_in_root or eps_after_root");
  }

  int width() const { return static_cast<int>(weight_.cols()); }
  Scalar eps() const { return eps_; }
  RmsForm form() const { return form_; }

  // Scale w [1, width].
  MatrixView weight() { return detail::view(weight_); }
  ConstMatrixView weight() const { return detail::view(weight_); }

  // [N, width] -> [N, width].
  RowMatrix<Scalar> forward(const Input& x) const {
    check_x("RMSNorm::forward", x);
    RowMatrix<Scalar> y(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < x.rows(); ++i)
      y.row(i) = (x.row(i) * inv_rms(x.row(i))).cwiseProduct(weight_.row(0));
    return y;
  }

  // Given x and dL/dy [N, width]: accumulates dL/dw and returns dL/dx. With f = inv_rms(x) and
  // g = dy * w: dL/dx = f g - c x <g, x> / width, where c = -2 df/d(mean(x^2)): f^3 for eps_in_root,
  // f^2 / sqrt(mean(x^2)) for eps_after_root (0 on a zero row, whose x is 0 anyway).
  RowMatrix<Scalar> backward(const Input& x, const Input& dy) {
    const char* where = "RMSNorm::backward";
    check_x(where, x);
    detail::require_shape(where, "dy", dy.rows(), dy.cols(), x.rows(), x.cols());
    if (!weight_grad_) zero_grad();
    RowMatrix<Scalar> dx(x.rows(), x.cols());
    Eigen::Matrix<Scalar, 1, Eigen::Dynamic> g(width());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const Scalar f = inv_rms(x.row(i));
      weight_grad_->row(0) += dy.row(i).cwiseProduct(x.row(i)) * f;
      g = dy.row(i).cwiseProduct(weight_.row(0));
      const Scalar gx = g.dot(x.row(i)) / static_cast<Scalar>(width());
      Scalar c = f * f * f;
      if (form_ == RmsForm::eps_after_root) {
        const Scalar rms = std::sqrt(x.row(i).squaredNorm() / static_cast<Scalar>(width()));
        c = rms > Scalar(0) ? f * f / rms : Scalar(0);
      }
      dx.row(i) = g * f - x.row(i) * (c * gx);
    }
    return dx;
  }

  // dL/dw [1, width], accumulated; an error before the first backward() or zero_grad().
  ConstMatrixView weight_grad() const {
    return detail::view(detail::allocated(weight_grad_, "RMSNorm", "weight_grad"));
  }
  bool has_grad() const { return weight_grad_.has_value(); }

  // Sets the gradient to zero in place (Parameter views into it stay valid).
  void zero_grad() {
    if (!weight_grad_) weight_grad_.emplace(1, weight_.cols());
    weight_grad_->setZero();
  }

  // Appends prefix.weight (no weight decay) with no gradient (Parameter::grad null).
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    out.push_back({prefix + ".weight", weight_.data(), nullptr, 1, weight_.cols(), false});
  }

  // The same with its gradient, allocating it if needed.
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    if (!weight_grad_) zero_grad();
    append_weights(prefix, out);
    out.back().grad = weight_grad_->data();
  }

 private:
  void check_x(const char* where, const Input& x) const {
    detail::require_shape(where, "x", x.rows(), x.cols(), x.rows(), width());
  }

  // 1 / sqrt(mean(x^2) + eps) or 1 / (sqrt(mean(x^2)) + eps), the mean of squares taken directly
  // (no norm-then-square round trip).
  template <class Row>
  Scalar inv_rms(const Row& row) const {
    const Scalar mean_square = row.squaredNorm() / static_cast<Scalar>(width());
    return form_ == RmsForm::eps_in_root ? Scalar(1) / std::sqrt(mean_square + eps_)
                                         : Scalar(1) / (std::sqrt(mean_square) + eps_);
  }

  Scalar eps_;
  RmsForm form_;
  RowMatrix<Scalar> weight_;
  std::optional<RowMatrix<Scalar>> weight_grad_;
};

// y = (x - mean) / sqrt(var + eps) * w + b, per row, with the biased variance (divide by width);
// affine w (init 1) and b (init 0).
template <class Scalar>
class LayerNorm {
  static_assert(std::is_floating_point<Scalar>::value, "LayerNorm<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using MatrixView = Eigen::Map<RowMatrix<Scalar>>;
  using ConstMatrixView = Eigen::Map<const RowMatrix<Scalar>>;

  explicit LayerNorm(int width, double eps = 1e-5)
      : eps_(detail::checked_norm_args<Scalar>("LayerNorm", width, eps)),
        weight_(RowMatrix<Scalar>::Ones(1, width)),
        bias_(RowMatrix<Scalar>::Zero(1, width)) {}

  int width() const { return static_cast<int>(weight_.cols()); }
  Scalar eps() const { return eps_; }

  // Scale w and shift b, each [1, width].
  MatrixView weight() { return detail::view(weight_); }
  ConstMatrixView weight() const { return detail::view(weight_); }
  MatrixView bias() { return detail::view(bias_); }
  ConstMatrixView bias() const { return detail::view(bias_); }

  // [N, width] -> [N, width].
  RowMatrix<Scalar> forward(const Input& x) const {
    check_x("LayerNorm::forward", x);
    RowMatrix<Scalar> y(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      normalise(x.row(i), y.row(i));
      y.row(i) = y.row(i).cwiseProduct(weight_.row(0)) + bias_.row(0);
    }
    return y;
  }

  // Given x and dL/dy [N, width]: accumulates dL/dw and dL/db and returns dL/dx. With
  // xhat = (x - mean) r, r = (var + eps)^-1/2 and g = dy * w:
  // dL/dx = r (g - mean(g) - xhat mean(g * xhat)).
  RowMatrix<Scalar> backward(const Input& x, const Input& dy) {
    const char* where = "LayerNorm::backward";
    check_x(where, x);
    detail::require_shape(where, "dy", dy.rows(), dy.cols(), x.rows(), x.cols());
    if (!grads_) zero_grad();
    const Scalar n = static_cast<Scalar>(width());
    RowMatrix<Scalar> dx(x.rows(), x.cols());
    Eigen::Matrix<Scalar, 1, Eigen::Dynamic> xhat(width()), g(width());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const Scalar r = normalise(x.row(i), xhat);
      grads_->weight.row(0) += dy.row(i).cwiseProduct(xhat);
      grads_->bias.row(0) += dy.row(i);
      g = dy.row(i).cwiseProduct(weight_.row(0));
      const Scalar g_mean = g.sum() / n;
      const Scalar gx_mean = g.dot(xhat) / n;
      dx.row(i) = r * (g.array() - g_mean - xhat.array() * gx_mean).matrix();
    }
    return dx;
  }

  // dL/dw and dL/db [1, width], accumulated; an error before the first backward() or zero_grad().
  ConstMatrixView weight_grad() const {
    return detail::view(detail::allocated(grads_, "LayerNorm", "weight_grad").weight);
  }
  ConstMatrixView bias_grad() const {
    return detail::view(detail::allocated(grads_, "LayerNorm", "bias_grad").bias);
  }
  bool has_grad() const { return grads_.has_value(); }

  // Sets the gradients to zero in place (Parameter views into them stay valid).
  void zero_grad() {
    if (!grads_) grads_.emplace(Gradients{RowMatrix<Scalar>(1, width()), RowMatrix<Scalar>(1, width())});
    grads_->weight.setZero();
    grads_->bias.setZero();
  }

  // Appends prefix.weight and prefix.bias (no weight decay) with no gradients (Parameter::grad null).
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    out.push_back({prefix + ".weight", weight_.data(), nullptr, 1, width(), false});
    out.push_back({prefix + ".bias", bias_.data(), nullptr, 1, width(), false});
  }

  // The same with their gradients, allocating them if needed.
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    if (!grads_) zero_grad();
    append_weights(prefix, out);
    out[out.size() - 2].grad = grads_->weight.data();
    out.back().grad = grads_->bias.data();
  }

 private:
  struct Gradients {
    RowMatrix<Scalar> weight, bias;
  };

  void check_x(const char* where, const Input& x) const {
    detail::require_shape(where, "x", x.rows(), x.cols(), x.rows(), width());
  }

  // Writes xhat = (x - mean) r into out and returns r = 1 / sqrt(var + eps). The mean is
  // subtracted before squaring (two passes): mean(x^2) - mean^2 cancels catastrophically when
  // |mean| >> std.
  template <class Row, class Out>
  Scalar normalise(const Row& row, Out&& out) const {
    const Scalar n = static_cast<Scalar>(width());
    out.array() = row.array() - row.sum() / n;
    const Scalar r = Scalar(1) / std::sqrt(out.squaredNorm() / n + eps_);
    out *= r;
    return r;
  }

  Scalar eps_;
  RowMatrix<Scalar> weight_;
  RowMatrix<Scalar> bias_;
  std::optional<Gradients> grads_;
};

}  // namespace v0
}  // namespace memoryformer

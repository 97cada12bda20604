// A fully connected layer y = x W^T + b on Eigen's GEMM: the LM head of both models and every
// projection of the dense baseline. W is [out, in] (PyTorch nn.Linear's layout, so weight files
// carry over without transposes); rows of x are split over the threads of its context.
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "platform/aligned_buffer.hpp"
#include "detail/partition.hpp"
#include "detail/random.hpp"
#include "output_shard.hpp"
#include "parameter.hpp"

#include <cmath>
#include <optional>
#include <string>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {

template <class Scalar>
class Linear {
  static_assert(std::is_floating_point<Scalar>::value, "Linear<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using MatrixView = Eigen::Map<RowMatrix<Scalar>>;
  using ConstMatrixView = Eigen::Map<const RowMatrix<Scalar>>;

  // Weight N(0, init_std) from `seed` (uninitialised with Init::none), bias 0.
  Linear(int in_dim, int out_dim, bool bias = true, double init_std = 0.02, std::uint64_t seed = 0,
         Init init = Init::random) {
    const char* where = "Linear";
    if (in_dim < 1) detail::fail(where, "in_dim", in_dim, "a positive integer");
    if (out_dim < 1) detail::fail(where, "out_dim", out_dim, "a positive integer");
    if (!std::isfinite(init_std) || init_std < 0)
      detail::fail(where, "init_std", init_std, "a finite value >= 0");
    weight_.resize(out_dim, in_dim);
    if (init != Init::none)
      detail::fill_normal_rows(default_context(), seed, init_std, 0, weight_.rows(), weight_.cols(),
                               weight_.data());
    bias_ = RowMatrix<Scalar>::Zero(1, bias ? out_dim : 0);
  }

  int in_dim() const { return static_cast<int>(weight_.cols()); }
  int out_dim() const { return shard_ ? shard_width_ : static_cast<int>(weight_.rows()); }
  bool has_bias() const { return bias_.cols() > 0; }

  MatrixView weight() { return detail::view(weight_); }  // [out, in]; this process's rows when sharded
  ConstMatrixView weight() const { return detail::view(weight_); }
  MatrixView bias() { return detail::view(bias_); }  // [1, out], or [1, 0] without bias
  ConstMatrixView bias() const { return detail::view(bias_); }

  // What the layer runs on: the context given to set_context(), else the default one (context.hpp).
  Context context() const { return context_.get(); }
  void set_context(Context context) { context_.set(std::move(context)); }

  // Splits the layer by outputs over processes (output_shard.hpp), for inference: it keeps output
  // rows shard.columns(out_dim()) of its weight and bias (an LM head's slice of the vocabulary, for
  // a loader to fill), and forward() computes those outputs and returns the whole rows through
  // shard.gather; backward() refuses.
  void shard_output(OutputShard<Scalar> shard) {
    const char* where = "Linear::shard_output";
    shard.check(where, out_dim());
    if (shard_) detail::fail(where, "layer", "already sharded", "a whole layer");
    const detail::Range rows = shard.columns(out_dim());
    shard_width_ = out_dim();
    weight_ = RowMatrix<Scalar>(weight_.middleRows(rows.begin, rows.size()));
    if (has_bias()) bias_ = RowMatrix<Scalar>(bias_.middleCols(rows.begin, rows.size()));
    grads_.reset();
    shard_ = std::move(shard);
  }
  // The shard given to shard_output(), or null: the layer computes every output.
  const OutputShard<Scalar>* output_shard() const { return shard_ ? &*shard_ : nullptr; }

  // x [N, in] -> [N, out].
  RowMatrix<Scalar> forward(const Input& x) const {
    RowMatrix<Scalar> y = forward_local(x);
    return shard_ ? shard_->gather->gather(y, out_dim()) : y;
  }

  // Given x [N, in] and dL/dy [N, out]: accumulates dL/dW = dy^T x and dL/db = sum of dy's rows,
  // returns dL/dx = dy W.
  RowMatrix<Scalar> backward(const Input& x, const Input& dy) {
    const char* where = "Linear::backward";
    if (shard_)
      detail::fail(where, "layer", "sharded by outputs (shard_output)",
                   "a whole layer: sharded layers are for inference");
    detail::require_shape(where, "x", x.rows(), x.cols(), x.rows(), in_dim());
    detail::require_shape(where, "dy", dy.rows(), dy.cols(), x.rows(), out_dim());
    if (!grads_) zero_grad();
    const Context ctx = context();
    RowMatrix<Scalar> dx(x.rows(), in_dim());
    const double work = static_cast<double>(x.rows()) * in_dim() * out_dim();
    for_blocks(ctx, x.rows(), work, 1, [&](Eigen::Index first, Eigen::Index count) {
      dx.middleRows(first, count).noalias() = dy.middleRows(first, count) * weight_;
    });
    // Output rows of dW are independent: each task owns a slice of them.
    for_blocks(ctx, out_dim(), work, 1, [&](Eigen::Index first, Eigen::Index count) {
      grads_->weight.middleRows(first, count).noalias() += dy.middleCols(first, count).transpose() * x;
    });
    if (has_bias()) grads_->bias.row(0) += dy.colwise().sum();
    return dx;
  }

  // Accumulated gradients; an error before the first backward() or zero_grad().
  ConstMatrixView weight_grad() const {
    return detail::view(detail::allocated(grads_, "Linear", "weight_grad").weight);
  }
  ConstMatrixView bias_grad() const {
    return detail::view(detail::allocated(grads_, "Linear", "bias_grad").bias);
  }
  bool has_grad() const { return grads_.has_value(); }

  // Sets the gradients to zero in place (Parameter views into them stay valid).
  void zero_grad() {
    if (!grads_)
      grads_.emplace(Gradients{RowMatrix<Scalar>(weight_.rows(), in_dim()), RowMatrix<Scalar>(1, bias_.cols())});
    grads_->weight.setZero();
    grads_->bias.setZero();
  }

  // Appends prefix.weight (weight decay) and, with a bias, prefix.bias (none), with no gradient
  // (Parameter::grad null) and nothing allocated.
  void append_weights(const std::string& prefix, ParameterList<Scalar>& out) {
    out.push_back({prefix + ".weight", weight_.data(), nullptr, weight_.rows(), weight_.cols(), true});
    if (has_bias()) out.push_back({prefix + ".bias", bias_.data(), nullptr, 1, bias_.cols(), false});
  }

  // The same with their gradients, allocating them if needed.
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    if (!grads_) zero_grad();
    const std::size_t first = out.size();
    append_weights(prefix, out);
    out[first].grad = grads_->weight.data();
    if (has_bias()) out[first + 1].grad = grads_->bias.data();
  }

 private:
  struct Gradients {
    RowMatrix<Scalar> weight, bias;
  };

  // This process's outputs [N, weight rows] (all of them unless sharded).
  RowMatrix<Scalar> forward_local(const Input& x) const {
    const Context ctx = context();
    detail::require_shape("Linear::forward", "x", x.rows(), x.cols(), x.rows(), in_dim());
    const Eigen::Index outputs = weight_.rows();
    RowMatrix<Scalar> y(x.rows(), outputs);
    const double work = static_cast<double>(x.rows()) * in_dim() * outputs;  // multiply-adds of the product
    // Fewer rows than threads (decoding a token): the threads share the output columns instead, so
    // that each reads its own slice of the weight (an LM head of 50K x 1024 is 200 MB a token).
    if (x.rows() < ctx.num_threads()) {
      const auto line = static_cast<Eigen::Index>(detail::kCacheLineBytes / sizeof(Scalar));
      for_blocks(ctx, outputs, work, line, [&](Eigen::Index first, Eigen::Index count) {
        auto out = y.middleCols(first, count);
        out.noalias() = x * weight_.middleRows(first, count).transpose();
        if (has_bias()) out.rowwise() += bias_.row(0).segment(first, count);
      });
      return y;
    }
    for_blocks(ctx, x.rows(), work, 1, [&](Eigen::Index first, Eigen::Index count) {
      auto out = y.middleRows(first, count);
      out.noalias() = x.middleRows(first, count) * weight_.transpose();
      if (has_bias()) out.rowwise() += bias_.row(0);
    });
    return y;
  }

  // Calls body(first, count) over [0, total) in slices whose inner boundaries are multiples of
  // `align`, one task each on the context's threads (`work` multiply-adds in all).
  template <class Body>
  static void for_blocks(const Context& ctx, Eigen::Index total, double work, Eigen::Index align,
                         const Body& body) {
    const int tasks = detail::task_count(work, (total + align - 1) / align, ctx.num_threads());
    ctx.parallel_for(tasks, [&](int task) {
      const detail::Range r = detail::split_range(total, tasks, task, align);
      if (r.size() > 0) body(r.begin, r.size());
    });
  }

  RowMatrix<Scalar> weight_, bias_;
  std::optional<Gradients> grads_;
  std::optional<OutputShard<Scalar>> shard_;
  int shard_width_ = 0;  // out_dim() of a sharded layer: the whole output's width
  detail::ModuleContext context_;
};

}  // namespace v0
}  // namespace memoryformer

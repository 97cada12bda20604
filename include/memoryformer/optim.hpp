// Training: AdamW (Loshchilov & Hutter 2019; decoupled weight decay, bias-corrected moments),
// clipping by global gradient norm, and a cosine learning-rate schedule with linear warmup.
//
// Cost: a Memory Layer's table gradient is dense here, although one step touches at most
// tokens x K of its K 2^tau rows. AdamW still reads and writes every entry of every table each step
// (value, gradient and two moments: 16 bytes per float parameter), so a step costs time proportional
// to the table size, not to the tokens in the batch. With batch x seq >= 2^tau the rows touched and
// the rows stored are of the same order and this is cheap; at small batches it dominates.
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "detail/partition.hpp"
#include "parameter.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace memoryformer {
inline namespace v0 {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied only to parameters with decay set (not norms or biases)
};

template <class Scalar>
class AdamW {
 public:
  // Zero moments for each parameter of `params`; later steps must be given the same list.
  explicit AdamW(const ParameterList<Scalar>& params, const AdamWOptions& options = {}) : options_(options) {
    const char* where = "AdamW";
    const AdamWOptions& o = options;
    if (!(o.beta1 >= 0 && o.beta1 < 1)) detail::fail(where, "beta1", o.beta1, "a value in [0, 1)");
    if (!(o.beta2 >= 0 && o.beta2 < 1)) detail::fail(where, "beta2", o.beta2, "a value in [0, 1)");
    if (!(o.eps > 0) || !std::isfinite(o.eps)) detail::fail(where, "eps", o.eps, "a finite value > 0");
    if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
      detail::fail(where, "weight_decay", o.weight_decay, "a finite value >= 0");
    for (const auto& p : params) {
      names_.push_back(p.name);
      first_.emplace_back(static_cast<std::size_t>(p.size()), Scalar(0));
      second_.emplace_back(static_cast<std::size_t>(p.size()), Scalar(0));
    }
  }

  const AdamWOptions& options() const { return options_; }
  long step_count() const { return steps_; }
  const std::vector<std::string>& parameter_names() const { return names_; }  // as at construction

  // Moments of parameter i, in the order of the list given to the constructor.
  const std::vector<Scalar>& first_moment(std::size_t i) const { return first_.at(i); }
  const std::vector<Scalar>& second_moment(std::size_t i) const { return second_.at(i); }

  // Replaces the state with a saved one (io::load_optimizer): `steps` taken and both moments of
  // every parameter, each of the size it has now.
  void restore(long steps, std::vector<std::vector<Scalar>> first, std::vector<std::vector<Scalar>> second) {
    const char* where = "AdamW::restore";
    if (steps < 0) detail::fail(where, "steps", steps, "an integer >= 0");
    for (const auto* moments : {&first, &second}) {
      if (moments->size() != first_.size())
        detail::fail(where, moments == &first ? "first" : "second",
                     std::to_string(moments->size()) + " moments",
                     "one per parameter (" + std::to_string(first_.size()) + ")");
      for (std::size_t i = 0; i < first_.size(); ++i)
        if ((*moments)[i].size() != first_[i].size())
          detail::fail(where, names_[i].c_str(), std::to_string((*moments)[i].size()) + " values",
                       std::to_string(first_[i].size()));
    }
    steps_ = steps;
    first_ = std::move(first);
    second_ = std::move(second);
  }

  // One update with learning rate lr of every parameter from its gradient times grad_scale (the
  // factor of gradient clipping): with g = grad_scale * grad, m = b1 m + (1 - b1) g,
  // v = b2 v + (1 - b2) g^2, w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr wd w.
  void step(const ParameterList<Scalar>& params, double lr, double grad_scale = 1.0) {
    const char* where = "AdamW::step";
    if (!std::isfinite(lr) || lr < 0) detail::fail(where, "lr", lr, "a finite value >= 0");
    if (!std::isfinite(grad_scale) || grad_scale < 0)
      detail::fail(where, "grad_scale", grad_scale, "a finite value >= 0");
    check_same_list(where, params);
    ++steps_;
    const double c1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
    const double c2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
    const Scalar b1 = static_cast<Scalar>(options_.beta1), b2 = static_cast<Scalar>(options_.beta2);
    const Scalar step_size = static_cast<Scalar>(lr / c1),
                 inv_sqrt_c2 = static_cast<Scalar>(1.0 / std::sqrt(c2));
    const Scalar eps = static_cast<Scalar>(options_.eps), scale = static_cast<Scalar>(grad_scale);
    const Context ctx = context();
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Parameter<Scalar>& p = params[i];
      const Scalar keep = p.decay ? static_cast<Scalar>(1.0 - lr * options_.weight_decay) : Scalar(1);
      Scalar* m = first_[i].data();
      Scalar* v = second_[i].data();
      const int tasks = detail::task_count(8.0 * static_cast<double>(p.size()), p.size(), ctx.num_threads());
      ctx.parallel_for(tasks, [&](int task) {
        const detail::Range r = detail::split_range(p.size(), tasks, task, 16);
        for (Eigen::Index j = r.begin; j < r.end; ++j) {
          const Scalar g = p.grad[j] * scale;
          m[j] = b1 * m[j] + (1 - b1) * g;
          v[j] = b2 * v[j] + (1 - b2) * g * g;
          p.value[j] = p.value[j] * keep - step_size * m[j] / (std::sqrt(v[j]) * inv_sqrt_c2 + eps);
        }
      });
    }
  }

  // What it runs on: the context given to set_context(), else the default one (context.hpp).
  Context context() const { return context_.get(); }
  void set_context(Context context) { context_.set(std::move(context)); }

 private:
  void check_same_list(const char* where, const ParameterList<Scalar>& params) const {
    if (params.size() != names_.size())
      detail::fail(where, "params", std::to_string(params.size()) + " parameters",
                   "the " + std::to_string(names_.size()) + " the optimizer was built with");
    for (std::size_t i = 0; i < params.size(); ++i)
      if (params[i].name != names_[i] || static_cast<std::size_t>(params[i].size()) != first_[i].size())
        detail::fail(where, ("params[" + std::to_string(i) + "]").c_str(),
                     params[i].name + " of " + std::to_string(params[i].size()) + " values",
                     names_[i] + " of " + std::to_string(first_[i].size()) + " values, as at construction");
  }

  AdamWOptions options_;
  std::vector<std::string> names_;
  std::vector<std::vector<Scalar>> first_, second_;
  long steps_ = 0;
  detail::ModuleContext context_;
};

namespace detail {

// Gradient values per partial sum of global_grad_norm.
inline constexpr Eigen::Index kNormBlockValues = Eigen::Index{1} << 16;

// sum of x[j]^2 in double, in 16 interleaved partial sums that the compiler turns into vector
// lanes (Eigen's cast<double>().square().sum() stays scalar; BM_TrainStep in docs/performance.md).
template <class Scalar>
double sum_of_squares(const Scalar* x, Eigen::Index n) {
  constexpr int kLanes = 16;
  double lanes[kLanes] = {};
  Eigen::Index j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double v = static_cast<double>(x[j + l]);
      lanes[l] += v * v;
    }
  double sum = 0;
  for (; j < n; ++j) sum += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  for (double lane : lanes) sum += lane;
  return sum;
}

}  // namespace detail

// sqrt of the sum of every squared gradient entry, accumulated in double. A model's tables make the
// gradient large (1 GiB at d_model 512, 4 layers), so blocks of kNormBlockValues are summed on the
// context's threads; the block sums are then added in order, which gives the same norm on any
// number of threads.
template <class Scalar>
double global_grad_norm(const ParameterList<Scalar>& params, const Context& ctx) {
  struct Block {
    const Scalar* grad;
    Eigen::Index size;
  };
  std::vector<Block> blocks;
  for (const auto& p : params)
    for (Eigen::Index begin = 0; begin < p.size(); begin += detail::kNormBlockValues)
      blocks.push_back({p.grad + begin, std::min(detail::kNormBlockValues, p.size() - begin)});
  std::vector<double> sums(blocks.size());
  const auto count = static_cast<Eigen::Index>(blocks.size());
  const int tasks = static_cast<int>(std::min<Eigen::Index>(count, ctx.num_threads()));
  if (tasks > 0)
    ctx.parallel_for(tasks, [&](int task) {
      const detail::Range mine = detail::split_range(count, tasks, task);
      for (Eigen::Index b = mine.begin; b < mine.end; ++b) {
        const Block& block = blocks[static_cast<std::size_t>(b)];
        sums[static_cast<std::size_t>(b)] = detail::sum_of_squares(block.grad, block.size);
      }
    });
  double sum = 0;
  for (double s : sums) sum += s;
  return std::sqrt(sum);
}

// The same on the default context.
template <class Scalar>
double global_grad_norm(const ParameterList<Scalar>& params) {
  return global_grad_norm(params, default_context());
}

// The factor that brings a gradient of norm `norm` down to at most max_norm: min(1, max_norm /
// (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_. max_norm 0 turns clipping off (factor 1).
inline double clip_scale(double norm, double max_norm) {
  if (!std::isfinite(max_norm) || max_norm < 0)
    detail::fail("clip_scale", "max_norm", max_norm, "a finite value >= 0 (0: no clipping)");
  if (!std::isfinite(norm) || norm < 0)
    detail::fail("clip_scale", "norm", norm, "a finite gradient norm >= 0 (the loss diverged?)");
  return max_norm == 0 ? 1.0 : std::min(1.0, max_norm / (norm + 1e-6));
}

// lr(step), step = 0, 1, ...: linear warmup from peak / warmup to peak over `warmup` steps, then
// half a cosine from peak down to min_lr at step total_steps - 1, min_lr after that.
class CosineSchedule {
 public:
  CosineSchedule(double peak_lr, int warmup_steps, int total_steps, double min_lr = 0.0)
      : peak_(peak_lr), min_(min_lr), warmup_(warmup_steps), total_(total_steps) {
    const char* where = "CosineSchedule";
    if (!std::isfinite(peak_lr) || peak_lr < 0)
      detail::fail(where, "peak_lr", peak_lr, "a finite value >= 0");
    if (!std::isfinite(min_lr) || min_lr < 0 || min_lr > peak_lr)
      detail::fail(where, "min_lr", min_lr,
                   "a finite value in [0, peak_lr = " + std::to_string(peak_lr) + "]");
    if (total_steps < 1) detail::fail(where, "total_steps", total_steps, "a positive integer");
    if (warmup_steps < 0 || warmup_steps > total_steps)
      detail::fail(where, "warmup_steps", warmup_steps,
                   "an integer in [0, total_steps = " + std::to_string(total_steps) + "]");
  }

  double operator()(long step) const {
    if (step < warmup_) return peak_ * static_cast<double>(step + 1) / warmup_;
    const long decay_steps = std::max<long>(1, total_ - 1 - warmup_);
    const double progress =
        std::min(1.0, static_cast<double>(step - warmup_) / static_cast<double>(decay_steps));
    return min_ + 0.5 * (peak_ - min_) * (1.0 + std::cos(3.141592653589793 * progress));
  }

 private:
  double peak_, min_;
  long warmup_, total_;
};

}  // namespace v0
}  // namespace memoryformer

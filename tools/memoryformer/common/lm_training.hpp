// Language-model training shared by the memoryformer tool's train and eval commands and
// examples/train_char_lm: batches of windows, one optimizer step, evaluation over a split, and the
// training loop itself (train), around which each program hooks its progress, evaluation, curve
// and checkpoints.
#pragma once

#include <memoryformer/io/token_dataset.hpp>
#include <memoryformer/memoryformer.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lm {

namespace mf = memoryformer;

// Inputs and next-token targets [batch, seq] from windows of seq + 1 ids starting at `starts`;
// `ids` is anything indexable: an io::TokenSplit, a std::vector of ids.
template <class Ids>
void fill_batch(const Ids& ids, const std::vector<std::size_t>& starts, int seq, mf::TokenMatrix& tokens,
                mf::TokenMatrix& targets) {
  tokens.resize(static_cast<Eigen::Index>(starts.size()), seq);
  targets.resize(tokens.rows(), seq);
  for (Eigen::Index b = 0; b < tokens.rows(); ++b)
    for (Eigen::Index t = 0; t < seq; ++t) {
      const std::size_t at = starts[static_cast<std::size_t>(b)] + static_cast<std::size_t>(t);
      tokens(b, t) = ids[at];
      targets(b, t) = ids[at + 1];
    }
}

// The training batch of `step`: window starts drawn from a stream of (seed, step) alone, so that a
// resumed run sees the batches an uninterrupted one would.
inline std::vector<std::size_t> batch_starts(std::uint64_t seed, int step, int batch, std::size_t ids, int seq) {
  mf::detail::Rng rng(mf::detail::derive_seed(seed, "batch." + std::to_string(step)));
  std::vector<std::size_t> starts(static_cast<std::size_t>(batch));
  const std::size_t choices = ids - static_cast<std::size_t>(seq);  // windows of seq + 1 ids
  for (std::size_t& s : starts)
    s = std::min(choices - 1, static_cast<std::size_t>(rng.uniform() * static_cast<double>(choices)));
  return starts;
}

// The share of each step's batch one process of a data-parallel run takes (docs/distributed.md §6):
// rows split_range(batch, processes, process) of the batch one process alone would take.
// sum_gradients sums every gradient over the processes, sum a number; both are collectives.
struct DataParallel {
  int process = 0, processes = 1;
  std::function<void(const mf::ParameterList<float>&)> sum_gradients;
  std::function<double(double)> sum;
};

// One optimizer step on the batch of `step` from `ids`: forward, loss, backward, AdamW at `lr` with
// the gradients clipped to global norm `clip`. Returns the batch's loss; a non-finite loss is a
// std::runtime_error that names the step and the learning rate. With `parallel`, this process takes
// its rows of the batch, its loss gradient weighted by its share, and the gradients and loss are
// summed over the processes, so every process takes the same step one process would take.
template <class Model, class Ids>
double train_step(Model& model, mf::ParameterList<float>& params, mf::AdamW<float>& optimizer, const Ids& ids,
                  std::uint64_t seed, int step, int batch, int seq, double lr, double clip,
                  const DataParallel* parallel = nullptr) {
  std::vector<std::size_t> starts = batch_starts(seed, step, batch, ids.size(), seq);
  double share = 1.0;
  if (parallel != nullptr) {
    const mf::detail::Range mine = mf::detail::split_range(batch, parallel->processes, parallel->process);
    starts = std::vector<std::size_t>(starts.begin() + mine.begin, starts.begin() + mine.end);
    share = static_cast<double>(mine.size()) / batch;
  }
  mf::TokenMatrix tokens, targets;
  fill_batch(ids, starts, seq, tokens, targets);
  model.zero_grad();
  typename Model::Saved saved;
  mf::RowMatrix<float> dlogits;
  double loss = mf::cross_entropy<float>(model.forward(tokens, &saved), targets, &dlogits);
  if (parallel != nullptr) loss = parallel->sum(loss * share);  // every process sees the same loss
  if (!std::isfinite(loss))
    throw std::runtime_error("training diverged at step " + std::to_string(step) + " (loss " + std::to_string(loss) +
                             "): lower the learning rate (now " + std::to_string(lr) + ")");
  if (parallel != nullptr) dlogits *= static_cast<float>(share);
  model.backward(saved, dlogits);
  if (parallel != nullptr) parallel->sum_gradients(params);
  optimizer.step(params, lr, mf::clip_scale(mf::global_grad_norm(params, optimizer.context()), clip));
  return loss;
}

struct Evaluation {
  double nll_nats = 0;        // summed over the predicted tokens
  std::uint64_t tokens = 0;   // predicted tokens
  std::uint64_t covered = 0;  // ids of the split read (the first one is context only)
  double loss() const { return nll_nats / static_cast<double>(tokens); }
  double ppl() const { return std::exp(loss()); }
};

// Next-token NLL over the first `limit` ids of `split` (0: all of it), in consecutive windows of
// `seq` predictions, `batch` windows per forward; every id after the first is predicted once.
template <class Model>
Evaluation evaluate(const Model& model, const mf::io::TokenSplit& split, int seq, int batch, std::size_t limit = 0) {
  const std::size_t n = limit == 0 ? split.size() : std::min(limit, split.size());
  Evaluation e;
  if (n < 2) return e;
  e.covered = n;
  mf::TokenMatrix tokens, targets;
  std::vector<std::size_t> starts;
  auto flush = [&](int length) {
    if (starts.empty()) return;
    fill_batch(split, starts, length, tokens, targets);
    const double mean = mf::cross_entropy<float>(model.forward(tokens), targets);
    e.nll_nats += mean * static_cast<double>(targets.size());
    e.tokens += static_cast<std::uint64_t>(targets.size());
    starts.clear();
  };
  std::size_t start = 0;
  for (; start + static_cast<std::size_t>(seq) < n; start += static_cast<std::size_t>(seq)) {
    starts.push_back(start);
    if (starts.size() == static_cast<std::size_t>(batch)) flush(seq);
  }
  flush(seq);
  if (start + 1 < n) {  // the tail: a shorter window
    starts.push_back(start);
    flush(static_cast<int>(n - 1 - start));
  }
  return e;
}

// Bits per byte of an evaluation that read `covered` of the split's ids: its NLL against the
// split's UTF-8 bytes in that proportion (exact when it read the whole split).
inline double bits_per_byte(const Evaluation& e, const mf::io::TokenSplit& split) {
  const double fraction = static_cast<double>(e.covered) / static_cast<double>(split.size());
  return mf::bits_per_byte(e.nll_nats, static_cast<std::uint64_t>(std::max(1.0, std::round(fraction * split.text_bytes()))));
}

// The optimizer of both programs: AdamW over `params` with `weight_decay`, on `ctx`, the context
// the model runs on.
inline mf::AdamW<float> adamw_on(const mf::ParameterList<float>& params, double weight_decay, const mf::Context& ctx) {
  mf::AdamWOptions options;
  options.weight_decay = weight_decay;
  mf::AdamW<float> optimizer(params, options);
  optimizer.set_context(ctx);
  return optimizer;
}

// The running train loss since the last validation: its sum and steps. A checkpoint carries it,
// so that a resumed run reports the means an uninterrupted one would.
struct RunningLoss {
  double sum = 0;
  int steps = 0;
  double mean() const { return sum / steps; }
};

// Where train is, as its hooks see it.
struct Progress {
  int step = 0;             // the step just taken (first_step - 1 before any)
  double lr = 0, loss = 0;  // that step's learning rate and batch loss
  RunningLoss running;      // since the last validation; reset after each
  double seconds = 0;       // spent in train_step by this run
  double tokens_per_s = 0;  // of this run's steps, over `seconds` (0 before any)
  int validated_at = -1;    // the last step this run validated at (-1: none)
};

// The steps train takes and when it validates and saves.
struct TrainOptions {
  int first_step = 1;  // the optimizer's step count + 1
  int last_step = 0;   // this run's last step (a run may stop before `steps`)
  int steps = 0;       // the whole run's: validation at the last one
  int batch = 1, seq = 1;
  std::uint64_t seed = 0;  // of the batches, with the step (batch_starts)
  double clip = 1.0;
  int eval_every = 1;  // validation at its multiples and at `steps`
  int save_every = 0;  // saving at its multiples (0: none) and at last_step
  const DataParallel* parallel = nullptr;
};

// What the programs do around the loop; each may be empty. before_step runs before a step,
// after_step after it (progress), validate at a validation step (evaluation, the curve; the
// running loss is reset after it), save at a saving step, after any validation of that step.
struct TrainHooks {
  std::function<void(int step)> before_step;
  std::function<void(const Progress&)> after_step, validate, save;
};

// The training loop of the memoryformer tool and examples/train_char_lm: steps first_step to
// last_step of `ids`, each at the schedule's learning rate for it (schedule(step - 1)) by
// train_step, with the running loss from `running` (a resumed run's), validation and saving as
// `options` says. Returns the progress after the last step (of none: step first_step - 1).
template <class Model, class Ids>
Progress train(Model& model, mf::ParameterList<float>& params, mf::AdamW<float>& optimizer, const Ids& ids,
               const mf::CosineSchedule& schedule, const TrainOptions& options, const TrainHooks& hooks,
               RunningLoss running = {}) {
  const TrainOptions& o = options;
  Progress p;
  p.step = o.first_step - 1;
  p.running = running;
  for (int step = o.first_step; step <= o.last_step; ++step) {
    if (hooks.before_step) hooks.before_step(step);
    const auto t0 = std::chrono::steady_clock::now();
    p.step = step;
    p.lr = schedule(step - 1);
    p.loss = train_step(model, params, optimizer, ids, o.seed, step, o.batch, o.seq, p.lr, o.clip, o.parallel);
    p.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p.running.sum += p.loss;
    ++p.running.steps;
    p.tokens_per_s =
        p.seconds > 0 ? static_cast<double>(step - o.first_step + 1) * o.batch * o.seq / p.seconds : 0.0;
    if (hooks.after_step) hooks.after_step(p);
    if (step % o.eval_every == 0 || step == o.steps) {
      if (hooks.validate) hooks.validate(p);
      p.validated_at = step;
      p.running = RunningLoss();
    }
    if (((o.save_every > 0 && step % o.save_every == 0) || step == o.last_step) && hooks.save) hooks.save(p);
  }
  return p;
}

}  // namespace lm

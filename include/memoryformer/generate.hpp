// Text generation with a model's KV cache: the prompt is fed once, then one token per step.
// Greedy (temperature 0) or sampling from softmax(logits / temperature), optionally restricted to
// the top_k most likely tokens and to the nucleus: the fewest most likely tokens whose
// probabilities sum to at least top_p (Holtzman et al., 2020). Deterministic for a given seed on every platform (detail::Rng).
#pragma once

#include "config.hpp"
#include "detail/random.hpp"
#include "embedding.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace memoryformer {
inline namespace v0 {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax); > 0: sample from softmax(logits / temperature)
  int top_k = 0;             // 0: all tokens; k > 0: only the k most likely
  std::uint64_t seed = 0;
  double top_p = 1.0;  // 1: all tokens; p in (0, 1): the nucleus of probability mass p (last, so
                       // that {temperature, top_k, seed} initialisers keep their meaning)
};

namespace detail {

inline void check_sampling(const char* where, const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0)
    fail(where, "temperature", o.temperature, "a finite value >= 0 (0 for greedy)");
  if (o.top_k < 0) fail(where, "top_k", o.top_k, "an integer >= 0 (0 for all tokens)");
  if (!(o.top_p > 0 && o.top_p <= 1)) fail(where, "top_p", o.top_p, "a value in (0, 1] (1 for all tokens)");
}

}  // namespace detail

// One token drawn from a row of logits [vocab]. The lowest index wins ties, so greedy decoding is
// reproducible.
template <class Derived>
std::int32_t sample_token(const Eigen::MatrixBase<Derived>& logits, const SamplingOptions& options,
                          detail::Rng& rng) {
  detail::check_sampling("sample_token", options);
  const Eigen::Index vocab = logits.size();
  if (vocab < 1) detail::fail("sample_token", "logits", vocab, "at least one value");
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto logit = [&](std::int32_t i) { return static_cast<double>(logits(i)); };
  auto more_likely = [&](std::int32_t a, std::int32_t b) {
    return logit(a) > logit(b) || (logit(a) == logit(b) && a < b);
  };
  std::size_t keep = options.top_k > 0
                         ? std::min<std::size_t>(static_cast<std::size_t>(options.top_k), order.size())
                         : order.size();
  if (options.temperature == 0.0 || keep == 1)
    return *std::min_element(order.begin(), order.end(), more_likely);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(),
                    more_likely);
  order.resize(keep);
  // softmax over the kept tokens, shifted by the largest logit so that exp never overflows.
  const double top = logit(order.front());
  std::vector<double> weights(keep);
  for (std::size_t i = 0; i < keep; ++i) weights[i] = std::exp((logit(order[i]) - top) / options.temperature);
  double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  if (options.top_p < 1.0) {  // the nucleus: most likely first, until their mass reaches top_p
    double mass = 0;
    std::size_t nucleus = 0;
    while (nucleus < keep && mass < options.top_p * total) mass += weights[nucleus++];
    weights.resize(std::max<std::size_t>(nucleus, 1));
    total = std::accumulate(weights.begin(), weights.end(), 0.0);
    keep = weights.size();
  }
  double u = rng.uniform() * total;
  for (std::size_t i = 0; i < keep; ++i) {
    u -= weights[i];
    if (u <= 0) return order[i];
  }
  return order[keep - 1];  // u left over by rounding
}

// The prompt followed by up to max_new_tokens generated ones. The prompt must be non-empty.
template <class Model>
std::vector<std::int32_t> generate(const Model& model, const std::vector<std::int32_t>& prompt,
                                   int max_new_tokens, const SamplingOptions& options = {}) {
  const char* where = "generate";
  detail::check_sampling(where, options);
  if (prompt.empty()) detail::fail(where, "prompt", "empty", "at least one token");
  if (max_new_tokens < 0) detail::fail(where, "max_new_tokens", max_new_tokens, "an integer >= 0");
  std::vector<std::int32_t> out = prompt;
  if (max_new_tokens == 0) return out;
  auto state = model.start_decoding(static_cast<Eigen::Index>(prompt.size()) + max_new_tokens);
  detail::Rng rng(options.seed);
  TokenMatrix next =
      Eigen::Map<const TokenMatrix>(prompt.data(), 1, static_cast<Eigen::Index>(prompt.size()));
  for (int step = 0; step < max_new_tokens; ++step) {
    const auto logits = model.decode(next, state);
    out.push_back(sample_token(logits.row(logits.rows() - 1), options, rng));
    next = TokenMatrix::Constant(1, 1, out.back());
  }
  return out;
}

}  // namespace v0
}  // namespace memoryformer

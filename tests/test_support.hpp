// Shared by the tests: random inputs, a fixture that runs a test on every kernel path the CPU
// supports, and an independent reference of docs/method.md §1 written from the formulas, not from the
// library (explicit 2^tau-way softmax, bits packed by powers of two, double precision).
#pragma once

#include <memoryformer/memoryformer.hpp>

#include "instantiations.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace mf = memoryformer;

namespace test {

// Uniform in +-[min_abs, max_abs]: away from 0 so that finite differences never flip a sign bit.
template <class Scalar>
mf::RowMatrix<Scalar> random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed, double min_abs = 0.0,
                                    double max_abs = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> mag(min_abs, max_abs);
  std::bernoulli_distribution negative(0.5);
  mf::RowMatrix<Scalar> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<Scalar>(negative(gen) ? -mag(gen) : mag(gen));
  return m;
}

// x [batch * seq, d] copied element by element into a tensor [batch, seq, d]: the reference
// layout the Tensor overloads must read in place.
template <class Scalar>
mf::Tensor3<Scalar> tensor_of(const mf::RowMatrix<Scalar>& x, Eigen::Index batch, Eigen::Index seq) {
  mf::Tensor3<Scalar> t(batch, seq, x.cols());
  for (Eigen::Index b = 0; b < batch; ++b)
    for (Eigen::Index s = 0; s < seq; ++s)
      for (Eigen::Index j = 0; j < x.cols(); ++j) t(b, s, j) = x(b * seq + s, j);
  return t;
}

// Element (b, s, j) of `t` equals row b * seq + s of `rows`, exactly.
template <class Scalar>
void expect_tensor_equals_rows(const mf::Tensor3<Scalar>& t, const mf::RowMatrix<Scalar>& rows) {
  ASSERT_EQ(t.dimension(0) * t.dimension(1), rows.rows());
  ASSERT_EQ(t.dimension(2), rows.cols());
  for (Eigen::Index b = 0; b < t.dimension(0); ++b)
    for (Eigen::Index s = 0; s < t.dimension(1); ++s)
      for (Eigen::Index j = 0; j < t.dimension(2); ++j)
        ASSERT_EQ(t(b, s, j), rows(b * t.dimension(1) + s, j)) << "at (" << b << ", " << s << ", " << j << ")";
}

// A layer that takes the panel schedule (gather_schedule.hpp) at kPanelTokens tokens: tau 4 (16
// rows a table), three tables more than one panel group holds for any table type and layout (int8
// tiles hold the most), and h = 200 (three full 64-column panel slices and a last one of 8
// columns; tiles of 128 and 72 columns).
inline constexpr Eigen::Index kPanelTokens = 100;
inline mf::MemoryLayerOptions panel_layer_options() {
  mf::MemoryLayerOptions o;
  o.tau = 4;
  o.in_dim = o.tau * (mf::detail::panel_group<std::int8_t>(1 << 20, 1 << o.tau, mf::detail::kTileColumns,
                                                           mf::default_context().l2_cache_bytes()) +
                      3);
  o.out_dim = 200;
  o.temperature = 0.8f;
  return o;
}

// A layer's tables as the schedules see them (no data): in rows, or in tiles (compress(type,
// TableLayout::tiles)).
template <class Layer>
mf::detail::TableTiles<const float> table_layout(const Layer& layer, bool tiled) {
  const Eigen::Index rows = static_cast<Eigen::Index>(layer.num_chunks()) * layer.num_buckets();
  return {nullptr, rows, layer.out_dim(), tiled ? mf::detail::kTileColumns : layer.out_dim()};
}

// The schedule a layer's forward takes for n tokens.
template <class Layer>
mf::detail::Schedule schedule_for(Eigen::Index n, const Layer& layer, bool tiled) {
  return mf::detail::choose_schedule(n, layer.num_buckets(), table_layout(layer, tiled));
}

// The schedule a MemoryLayer's backward (scatter-add and row dots) takes for n tokens.
template <class Layer>
mf::detail::Schedule backward_schedule_for(Eigen::Index n, const Layer& layer) {
  return mf::detail::choose_backward_schedule(n, layer.num_buckets());
}

// Token ids uniform in [0, vocab).
inline mf::TokenMatrix random_tokens(Eigen::Index batch, Eigen::Index seq, int vocab, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  mf::TokenMatrix t(batch, seq);
  for (Eigen::Index i = 0; i < t.size(); ++i) t.data()[i] = pick(gen);
  return t;
}

// MSB-first code of z[tau]: element j contributes 2^(tau-1-j) when z_j >= 0.
inline long reference_code(const double* z, int tau) {
  long code = 0;
  for (int j = 0; j < tau; ++j)
    if (z[j] >= 0) code += std::lround(std::pow(2.0, tau - 1 - j));
  return code;
}

// p(z) of Eq. 10 as written: softmax over all 2^tau codes c in {-1,+1}^tau of <z, c> / t,
// taken at c = sign(z). Log-sum-exp keeps it finite for large |z| / t.
inline double reference_probability(const double* z, int tau, double t) {
  std::vector<double> logits(std::size_t{1} << tau);
  for (std::size_t c = 0; c < logits.size(); ++c) {
    double dot = 0;
    for (int j = 0; j < tau; ++j) dot += z[j] * (((c >> (tau - 1 - j)) & 1u) ? 1.0 : -1.0);
    logits[c] = dot / t;
  }
  double max = logits[0];
  for (double l : logits) max = std::max(max, l);
  double sum = 0;
  for (double l : logits) sum += std::exp(l - max);
  return std::exp(logits[static_cast<std::size_t>(reference_code(z, tau))] - max) / sum;
}

inline double reference_score(const double* z, int tau, double t, mf::Score score) {
  double l1 = 0;
  for (int j = 0; j < tau; ++j) l1 += std::abs(z[j]);
  const double p = reference_probability(z, tau, t);
  return score == mf::Score::paper ? p : l1 * p;
}

// y = b + sum_k s_k T[k, code_k, :] (Eq. 11), one triple loop, in double.
template <class Scalar>
Eigen::MatrixXd reference_forward(const mf::RowMatrix<Scalar>& x, const mf::MemoryLayer<Scalar>& layer) {
  const int tau = layer.tau(), k_chunks = layer.in_dim() / tau, h = layer.out_dim();
  const double t = layer.options().temperature;
  const long buckets = 1L << tau;
  Eigen::MatrixXd y(x.rows(), h);
  for (Eigen::Index n = 0; n < x.rows(); ++n) {
    for (int c = 0; c < h; ++c) y(n, c) = layer.has_bias() ? static_cast<double>(layer.bias()(0, c)) : 0.0;
    for (int k = 0; k < k_chunks; ++k) {
      std::vector<double> z(static_cast<std::size_t>(tau));
      for (int j = 0; j < tau; ++j) z[static_cast<std::size_t>(j)] = x(n, k * tau + j);
      const double s = reference_score(z.data(), tau, t, layer.options().score);
      const long row = k * buckets + reference_code(z.data(), tau);
      for (int c = 0; c < h; ++c) y(n, c) += s * static_cast<double>(layer.tables()(row, c));
    }
  }
  return y;
}

// Largest |a - b| relative to the largest |b| (at least 1e-3, so tiny outputs are not overweighted).
template <class A, class B>
double relative_error(const A& a, const B& b) {
  const double scale = std::max(1e-3, b.template cast<double>().cwiseAbs().maxCoeff());
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff() / scale;
}

// Expects `call` to throw Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& call, std::initializer_list<const char*> parts) {
  try {
    call();
    ADD_FAILURE() << "expected memoryformer::Error";
  } catch (const mf::Error& e) {
    const std::string what = e.what();
    for (const char* part : parts)
      EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
  }
}

// (L(w + h) - L(w - h)) / 2h for one weight w, restored afterwards.
inline double central_difference(double& w, const std::function<double()>& loss, double h = 1e-6) {
  const double saved = w;
  w = saved + h;
  const double up = loss();
  w = saved - h;
  const double down = loss();
  w = saved;
  return (up - down) / (2 * h);
}

// Checks the accumulated gradient of every parameter against central differences of `loss` on a
// sample of its entries: the `count` largest gradients (a table's gradient is mostly zeros) and
// `count` evenly spaced ones (which checks zeros too).
inline void expect_parameter_gradients(const mf::ParameterList<double>& params,
                                       const std::function<double()>& loss, int count = 12,
                                       double tolerance = 1e-6) {
  for (const auto& p : params) {
    std::vector<Eigen::Index> order(static_cast<std::size_t>(p.size()));
    std::iota(order.begin(), order.end(), Eigen::Index{0});
    const std::size_t top = std::min(order.size(), static_cast<std::size_t>(count));
    std::partial_sort(
        order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
        [&](Eigen::Index a, Eigen::Index b) { return std::abs(p.grad[a]) > std::abs(p.grad[b]); });
    std::vector<Eigen::Index> picks(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top));
    for (int i = 0; i < count; ++i) picks.push_back(p.size() * i / count);
    for (Eigen::Index i : picks) {
      const double fd = central_difference(p.value[i], loss);
      EXPECT_NEAR(p.grad[i], fd, tolerance * std::max(1.0, std::abs(fd))) << p.name << "[" << i << "]";
    }
  }
}

// Runs a test once per kernel path this build and CPU support; restores the path afterwards.
class PathTest : public ::testing::TestWithParam<mf::KernelPath> {
 protected:
  void SetUp() override {
    previous_ = mf::kernel_path();
    mf::set_kernel_path(GetParam());
  }
  void TearDown() override { mf::set_kernel_path(previous_); }

 private:
  mf::KernelPath previous_ = mf::KernelPath::scalar;
};

inline std::string path_name(const ::testing::TestParamInfo<mf::KernelPath>& info) {
  return mf::to_string(info.param);
}

}  // namespace test

#define MF_INSTANTIATE_ON_ALL_PATHS(Suite)                                                     \
  INSTANTIATE_TEST_SUITE_P(AllPaths, Suite, ::testing::ValuesIn(mf::supported_kernel_paths()), \
                           test::path_name)

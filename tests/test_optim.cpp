// AdamW against the algorithm written out in double (Loshchilov & Hutter, Alg. 2 with PyTorch's
// bias correction), weight decay only where flagged, grad_scale, list checks; clipping; schedule.
#include "test_support.hpp"

#include <memoryformer/optim.hpp>

namespace {

// Two parameters over caller-owned storage: "w" (decayed) and "b" (not).
struct Toy {
  mf::RowMatrix<double> w = test::random_matrix<double>(3, 4, 1), b = test::random_matrix<double>(1, 4, 2);
  mf::RowMatrix<double> gw = test::random_matrix<double>(3, 4, 3), gb = test::random_matrix<double>(1, 4, 4);
  mf::ParameterList<double> params() {
    return {{"w", w.data(), gw.data(), 3, 4, true}, {"b", b.data(), gb.data(), 1, 4, false}};
  }
};

TEST(AdamW, StepsMatchTheAlgorithmWrittenOut) {
  Toy toy;
  const mf::AdamWOptions o{0.8, 0.9, 1e-6, 0.3};
  mf::AdamW<double> optimizer(toy.params(), o);
  // Reference state, one value at a time.
  std::vector<double> values, m, v;
  std::vector<bool> decay;
  for (const auto& p : toy.params())
    for (Eigen::Index i = 0; i < p.size(); ++i) {
      values.push_back(p.value[i]);
      decay.push_back(p.decay);
    }
  m.assign(values.size(), 0.0);
  v.assign(values.size(), 0.0);
  const double lr = 0.05, scale = 0.7;
  for (int t = 1; t <= 3; ++t) {
    std::vector<double> grads;
    for (const auto& p : toy.params())
      for (Eigen::Index i = 0; i < p.size(); ++i) grads.push_back(p.grad[i] * scale);
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (decay[i]) values[i] -= lr * o.weight_decay * values[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * grads[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * grads[i] * grads[i];
      const double m_hat = m[i] / (1 - std::pow(o.beta1, t)), v_hat = v[i] / (1 - std::pow(o.beta2, t));
      values[i] -= lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
    optimizer.step(toy.params(), lr, scale);
    toy.gw = test::random_matrix<double>(3, 4, 10 + t);  // new gradients for the next step
    toy.gb = test::random_matrix<double>(1, 4, 20 + t);
  }
  EXPECT_EQ(optimizer.step_count(), 3);
  std::size_t at = 0;
  for (const auto& p : toy.params())
    for (Eigen::Index i = 0; i < p.size(); ++i, ++at)
      EXPECT_NEAR(p.value[i], values[at], 1e-12) << p.name << i;
}

TEST(AdamW, WeightDecayOnlyWhereFlagged) {
  Toy toy;
  toy.gw.setZero();
  toy.gb.setZero();
  const mf::RowMatrix<double> w0 = toy.w, b0 = toy.b;
  mf::AdamW<double> optimizer(toy.params(), {0.9, 0.95, 1e-8, 0.5});
  optimizer.step(toy.params(), 0.1);
  EXPECT_LT(test::relative_error(toy.w, w0 * 0.95), 1e-15);  // w (1 - lr wd), no gradient
  EXPECT_EQ(toy.b, b0);
}

TEST(AdamW, MinimisesAQuadratic) {
  mf::RowMatrix<double> w = mf::RowMatrix<double>::Constant(1, 5, 3.0), g(1, 5);
  const mf::ParameterList<double> params{{"w", w.data(), g.data(), 1, 5, false}};
  mf::AdamW<double> optimizer(params);
  for (int step = 0; step < 500; ++step) {
    g = 2 * w;  // d/dw |w|^2
    optimizer.step(params, 0.05);
  }
  EXPECT_LT(w.cwiseAbs().maxCoeff(), 0.05);
}

TEST(AdamW, RejectsAnotherParameterList) {
  Toy toy;
  mf::AdamW<double> optimizer(toy.params());
  auto renamed = toy.params();
  renamed[1].name = "c";
  test::expect_error([&] { optimizer.step(renamed, 0.1); }, {"params[1]", "c of 4 values", "b of 4 values"});
  auto shorter = toy.params();
  shorter.pop_back();
  test::expect_error([&] { optimizer.step(shorter, 0.1); }, {"1 parameters", "the 2"});
  test::expect_error([&] { optimizer.step(toy.params(), -1.0); }, {"lr = -1"});
  test::expect_error([&] { mf::AdamW<double>(toy.params(), {1.0, 0.95, 1e-8, 0.1}); }, {"beta1 = 1"});
}

TEST(Clipping, GlobalNormAndScale) {
  Toy toy;
  const double expected = std::sqrt(toy.gw.squaredNorm() + toy.gb.squaredNorm());
  EXPECT_NEAR(mf::global_grad_norm(toy.params()), expected, 1e-12);
  EXPECT_EQ(mf::clip_scale(0.5, 1.0), 1.0);
  EXPECT_NEAR(mf::clip_scale(4.0, 1.0), 0.25, 1e-6);
  EXPECT_EQ(mf::clip_scale(100.0, 0.0), 1.0);  // 0 turns clipping off
  test::expect_error([] { mf::clip_scale(std::nan(""), 1.0); }, {"norm = nan"});
  test::expect_error([] { mf::clip_scale(1.0, -1.0); }, {"max_norm = -1"});
}

// A gradient of several norm blocks (three parameters, one of them shorter than a block): the norm
// against a long double sum here, and the same bits on one, two and five threads.
TEST(Clipping, GlobalNormOverManyBlocksIsExactAndThreadIndependent) {
  const Eigen::Index block = mf::detail::kNormBlockValues;
  std::vector<mf::RowMatrix<float>> grads = {test::random_matrix<float>(3, block + 7, 81u),
                                             test::random_matrix<float>(1, 5, 83u),
                                             test::random_matrix<float>(2 * block, 1, 85u)};
  std::vector<mf::RowMatrix<float>> values = grads;
  mf::ParameterList<float> params;
  long double expected = 0;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    params.push_back({"p" + std::to_string(i), values[i].data(), grads[i].data(), grads[i].rows(),
                      grads[i].cols(), true});
    for (Eigen::Index j = 0; j < grads[i].size(); ++j)
      expected += static_cast<long double>(grads[i].data()[j]) * grads[i].data()[j];
  }
  const int before = mf::num_threads();
  mf::set_num_threads(1);
  const double one = mf::global_grad_norm(params);
  mf::set_num_threads(2);
  const double two = mf::global_grad_norm(params);
  mf::set_num_threads(5);
  const double five = mf::global_grad_norm(params);
  mf::set_num_threads(before);
  EXPECT_NEAR(one, std::sqrt(static_cast<double>(expected)), 1e-12 * one);
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, five);
}

TEST(CosineSchedule, WarmupThenHalfCosineToTheFloor) {
  const mf::CosineSchedule schedule(1e-3, 10, 110, 1e-4);
  EXPECT_NEAR(schedule(0), 1e-4, 1e-15);
  EXPECT_NEAR(schedule(4), 5e-4, 1e-15);
  EXPECT_NEAR(schedule(9), 1e-3, 1e-15);
  EXPECT_NEAR(schedule(10), 1e-3, 1e-15);
  EXPECT_NEAR(schedule(109), 1e-4, 1e-15);
  EXPECT_NEAR(schedule(500), 1e-4, 1e-15);
  const mf::CosineSchedule even(1.0, 0, 101, 0.0);
  EXPECT_NEAR(even(50), 0.5, 1e-12);
  for (long s = 11; s < 110; ++s) EXPECT_LE(schedule(s), schedule(s - 1));
  test::expect_error([] { mf::CosineSchedule(1e-3, 20, 10); }, {"warmup_steps = 20", "total_steps = 10"});
  test::expect_error([] { mf::CosineSchedule(1e-3, 0, 10, 1e-2); }, {"min_lr = 0.01"});
}

}  // namespace

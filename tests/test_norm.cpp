// RMSNorm and LayerNorm (docs/method.md §2): forward against loops in double written from the formulas,
// backward against central finite differences, gradient accumulation, argument errors.
#include "test_support.hpp"

#include <memoryformer/norm.hpp>

#include <limits>

namespace {

// x / sqrt(mean(x^2) + eps) * w, one row at a time, in double.
template <class Scalar>
Eigen::MatrixXd reference_rms(const mf::RowMatrix<Scalar>& x, const mf::RMSNorm<Scalar>& norm) {
  Eigen::MatrixXd y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    double sum_sq = 0;
    for (Eigen::Index j = 0; j < x.cols(); ++j) sum_sq += double(x(i, j)) * double(x(i, j));
    const double denom = std::sqrt(sum_sq / double(x.cols()) + double(norm.eps()));
    for (Eigen::Index j = 0; j < x.cols(); ++j)
      y(i, j) = double(x(i, j)) / denom * double(norm.weight()(0, j));
  }
  return y;
}

// (x - mean) / sqrt(var + eps) * w + b with the biased variance, in double.
template <class Scalar>
Eigen::MatrixXd reference_layer(const mf::RowMatrix<Scalar>& x, const mf::LayerNorm<Scalar>& norm) {
  Eigen::MatrixXd y(x.rows(), x.cols());
  const double n = double(x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    double mean = 0, var = 0;
    for (Eigen::Index j = 0; j < x.cols(); ++j) mean += double(x(i, j)) / n;
    for (Eigen::Index j = 0; j < x.cols(); ++j)
      var += (double(x(i, j)) - mean) * (double(x(i, j)) - mean) / n;
    for (Eigen::Index j = 0; j < x.cols(); ++j)
      y(i, j) = (double(x(i, j)) - mean) / std::sqrt(var + double(norm.eps())) * double(norm.weight()(0, j)) +
                double(norm.bias()(0, j));
  }
  return y;
}

// Central differences of loss() with respect to every entry of p.
template <class Loss>
mf::RowMatrix<double> numeric_grad(mf::RowMatrix<double>& p, const Loss& loss) {
  mf::RowMatrix<double> grad(p.rows(), p.cols());
  for (Eigen::Index i = 0; i < p.size(); ++i) grad.data()[i] = test::central_difference(p.data()[i], loss);
  return grad;
}

TEST(Norm, RMSNormForwardMatchesReference) {
  for (int width : {1, 7, 64, 257}) {
    mf::RMSNorm<float> f(width);
    mf::RMSNorm<double> d(width, 1e-6);
    f.weight() = test::random_matrix<float>(1, width, 3u, 0.5, 2.0);
    d.weight() = test::random_matrix<double>(1, width, 4u, 0.5, 2.0);
    const auto xf = test::random_matrix<float>(9, width, 5u, 0.0, 3.0);
    const auto xd = test::random_matrix<double>(9, width, 6u, 0.0, 3.0);
    const mf::RowMatrix<float> yf = f.forward(xf);
    ASSERT_EQ(yf.rows(), 9);
    ASSERT_EQ(yf.cols(), width);
    EXPECT_LT(test::relative_error(yf, reference_rms(xf, f)), 1e-6) << "width " << width;
    EXPECT_LT(test::relative_error(d.forward(xd), reference_rms(xd, d)), 1e-14) << "width " << width;
  }
  // Defaults (docs/method.md §2): eps 1e-8, scale 1; a zero row stays zero.
  const mf::RMSNorm<float> norm(4);
  EXPECT_EQ(norm.width(), 4);
  EXPECT_FLOAT_EQ(norm.eps(), 1e-8f);
  EXPECT_EQ(norm.weight(), mf::RowMatrix<float>::Ones(1, 4));
  EXPECT_EQ(norm.forward(mf::RowMatrix<float>::Zero(2, 4)), mf::RowMatrix<float>::Zero(2, 4));
  EXPECT_EQ(norm.forward(mf::RowMatrix<float>(0, 4)).rows(), 0);
}

TEST(Norm, LayerNormForwardMatchesReference) {
  for (int width : {1, 7, 64, 257}) {
    mf::LayerNorm<double> norm(width);
    norm.weight() = test::random_matrix<double>(1, width, 7u, 0.5, 2.0);
    norm.bias() = test::random_matrix<double>(1, width, 8u);
    const auto x = test::random_matrix<double>(9, width, 9u, 0.0, 3.0);
    EXPECT_LT(test::relative_error(norm.forward(x), reference_layer(x, norm)), 1e-13) << "width " << width;
  }
  // Defaults: eps 1e-5, w = 1, b = 0; a constant row (zero variance) gives b.
  mf::LayerNorm<float> norm(5);
  EXPECT_FLOAT_EQ(norm.eps(), 1e-5f);
  EXPECT_EQ(norm.weight(), mf::RowMatrix<float>::Ones(1, 5));
  EXPECT_EQ(norm.bias(), mf::RowMatrix<float>::Zero(1, 5));
  norm.bias() << 1, 2, 3, 4, 5;
  EXPECT_EQ(norm.forward(mf::RowMatrix<float>::Constant(3, 5, 7.5f)), norm.bias().replicate(3, 1));
}

TEST(Norm, LayerNormIsAccurateFarFromZero) {
  // Rows of mean 1e4 and std ~0.6: mean(x^2) - mean^2 would lose every digit of the variance in
  // float (1e8 at an ulp of 8); subtracting the mean first keeps the float result near double's.
  mf::LayerNorm<float> norm(64);
  mf::RowMatrix<float> x = test::random_matrix<float>(16, 64, 10u);
  x.array() += 1e4f;
  const mf::RowMatrix<float> y = norm.forward(x);
  EXPECT_LT(test::relative_error(y, reference_layer(x, norm)), 1e-2);
  // Each output row has mean 0 and variance var / (var + eps), close to 1. The float row sum near
  // 6.4e5 rounds at ~0.03, i.e. ~1e-3 of the mean, i.e. ~2e-3 after dividing by std ~0.6.
  for (Eigen::Index i = 0; i < y.rows(); ++i) {
    EXPECT_NEAR(y.row(i).mean(), 0.0f, 1e-2f);
    EXPECT_NEAR(y.row(i).squaredNorm() / 64, 1.0f, 1e-2f);
  }
}

TEST(Norm, RMSNormBackwardMatchesFiniteDifferences) {
  for (mf::RmsForm form : {mf::RmsForm::eps_in_root, mf::RmsForm::eps_after_root}) {
    mf::RMSNorm<double> norm(6, 1e-3, form);
    norm.weight() = test::random_matrix<double>(1, 6, 11u, 0.5, 2.0);
    mf::RowMatrix<double> x = test::random_matrix<double>(4, 6, 12u);
    const auto g = test::random_matrix<double>(4, 6, 13u);
    const mf::RowMatrix<double> dx = norm.backward(x, g);
    auto loss = [&] { return norm.forward(x).cwiseProduct(g).sum(); };
    EXPECT_LT(test::relative_error(dx, numeric_grad(x, loss)), 1e-7) << form;
    mf::RowMatrix<double> w = norm.weight();
    auto loss_w = [&] {
      norm.weight() = w;
      return loss();
    };
    EXPECT_LT(test::relative_error(norm.weight_grad(), numeric_grad(w, loss_w)), 1e-7) << form;
  }
}

TEST(Norm, RMSNormWithEpsAfterTheRootMatchesTheReleasedFormula) {
  const double eps = 1e-2;  // large, so the two forms differ visibly
  mf::RMSNorm<double> after(5, eps, mf::RmsForm::eps_after_root), inside(5, eps);
  EXPECT_EQ(after.form(), mf::RmsForm::eps_after_root);
  EXPECT_EQ(inside.form(), mf::RmsForm::eps_in_root);
  after.weight() = test::random_matrix<double>(1, 5, 21u, 0.5, 2.0);
  const auto x = test::random_matrix<double>(3, 5, 22u, 0.0, 0.3);
  mf::RowMatrix<double> want(3, 5);
  for (Eigen::Index i = 0; i < 3; ++i) {
    const double rms = x.row(i).norm() / std::sqrt(5.0);
    for (Eigen::Index j = 0; j < 5; ++j) want(i, j) = x(i, j) / (rms + eps) * after.weight()(0, j);
  }
  EXPECT_LT(test::relative_error(after.forward(x), want), 1e-14);
  inside.weight() = after.weight();
  EXPECT_GT(test::relative_error(inside.forward(x), want), 1e-3) << "the forms must differ at this eps";
  // A zero row stays zero, and its gradient is finite.
  const mf::RowMatrix<double> zero = mf::RowMatrix<double>::Zero(1, 5);
  EXPECT_EQ(after.forward(zero), zero);
  EXPECT_TRUE(after.backward(zero, mf::RowMatrix<double>::Ones(1, 5)).allFinite());
}

TEST(Norm, LayerNormBackwardMatchesFiniteDifferences) {
  mf::LayerNorm<double> norm(7, 1e-3);
  norm.weight() = test::random_matrix<double>(1, 7, 14u, 0.5, 2.0);
  norm.bias() = test::random_matrix<double>(1, 7, 15u);
  mf::RowMatrix<double> x = test::random_matrix<double>(5, 7, 16u, 0.0, 2.0);
  const auto g = test::random_matrix<double>(5, 7, 17u);
  const mf::RowMatrix<double> dx = norm.backward(x, g);
  auto loss = [&] { return norm.forward(x).cwiseProduct(g).sum(); };
  EXPECT_LT(test::relative_error(dx, numeric_grad(x, loss)), 1e-7);
  mf::RowMatrix<double> w = norm.weight(), b = norm.bias();
  auto loss_wb = [&] {
    norm.weight() = w;
    norm.bias() = b;
    return loss();
  };
  EXPECT_LT(test::relative_error(norm.weight_grad(), numeric_grad(w, loss_wb)), 1e-7);
  EXPECT_LT(test::relative_error(norm.bias_grad(), numeric_grad(b, loss_wb)), 1e-7);
  // The gradient of a normalised row sums to zero (shifting x does not change y).
  for (Eigen::Index i = 0; i < dx.rows(); ++i) EXPECT_NEAR(dx.row(i).sum(), 0.0, 1e-12);
}

TEST(Norm, GradientsAccumulateUntilZeroGrad) {
  const auto x = test::random_matrix<double>(3, 8, 18u);
  const auto g1 = test::random_matrix<double>(3, 8, 19u), g2 = test::random_matrix<double>(3, 8, 20u);
  mf::RMSNorm<double> rms(8);
  mf::LayerNorm<double> ln(8);
  EXPECT_FALSE(rms.has_grad());
  EXPECT_FALSE(ln.has_grad());
  rms.backward(x, g1);
  ln.backward(x, g1);
  const mf::RowMatrix<double> rw1 = rms.weight_grad(), lw1 = ln.weight_grad(), lb1 = ln.bias_grad();
  // backward is linear in dy: two calls accumulate the gradient of g1 + g2.
  rms.backward(x, g2);
  ln.backward(x, g2);
  mf::RMSNorm<double> rms_sum(8);
  mf::LayerNorm<double> ln_sum(8);
  rms_sum.backward(x, g1 + g2);
  ln_sum.backward(x, g1 + g2);
  EXPECT_LT(test::relative_error(rms.weight_grad(), rms_sum.weight_grad()), 1e-14);
  EXPECT_LT(test::relative_error(ln.weight_grad(), ln_sum.weight_grad()), 1e-14);
  EXPECT_LT(test::relative_error(ln.bias_grad(), ln_sum.bias_grad()), 1e-14);
  EXPECT_GT((rms.weight_grad() - rw1).norm(), 0.0);
  EXPECT_LT(test::relative_error(ln.bias_grad(), g1.colwise().sum() + g2.colwise().sum()), 1e-14);
  rms.zero_grad();
  ln.zero_grad();
  EXPECT_EQ(rms.weight_grad(), mf::RowMatrix<double>::Zero(1, 8));
  EXPECT_EQ(ln.weight_grad(), mf::RowMatrix<double>::Zero(1, 8));
  EXPECT_EQ(ln.bias_grad(), mf::RowMatrix<double>::Zero(1, 8));
  rms.backward(x, g1);
  ln.backward(x, g1);
  EXPECT_EQ(rms.weight_grad(), rw1);
  EXPECT_EQ(ln.weight_grad(), lw1);
  EXPECT_EQ(ln.bias_grad(), lb1);
}

TEST(Norm, FloatBackwardMatchesDouble) {
  const auto x = test::random_matrix<double>(6, 33, 21u, 0.0, 2.0);
  const auto g = test::random_matrix<double>(6, 33, 22u);
  mf::RMSNorm<double> rd(33);
  mf::RMSNorm<float> rf(33);
  mf::LayerNorm<double> ld(33);
  mf::LayerNorm<float> lf(33);
  EXPECT_LT(test::relative_error(rf.backward(x.cast<float>(), g.cast<float>()), rd.backward(x, g)), 1e-5);
  EXPECT_LT(test::relative_error(rf.weight_grad(), rd.weight_grad()), 1e-5);
  EXPECT_LT(test::relative_error(lf.backward(x.cast<float>(), g.cast<float>()), ld.backward(x, g)), 1e-5);
  EXPECT_LT(test::relative_error(lf.weight_grad(), ld.weight_grad()), 1e-5);
  EXPECT_LT(test::relative_error(lf.bias_grad(), ld.bias_grad()), 1e-5);
}

TEST(Norm, ErrorsNameTheArgument) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  test::expect_error([] { mf::RMSNorm<float> n(0); }, {"RMSNorm", "width = 0", "positive"});
  test::expect_error([] { mf::LayerNorm<double> n(-3); }, {"LayerNorm", "width = -3"});
  test::expect_error([] { mf::RMSNorm<float> n(4, 0.0); }, {"RMSNorm", "eps = 0", "> 0"});
  test::expect_error([] { mf::LayerNorm<float> n(4, -1e-5); }, {"LayerNorm", "eps = -1e-05"});
  test::expect_error([&] { mf::LayerNorm<float> n(4, nan); }, {"LayerNorm", "eps = nan"});
  test::expect_error([&] { mf::RMSNorm<double> n(4, inf); }, {"RMSNorm", "eps = inf"});
  test::expect_error([] { mf::RMSNorm<float> n(4, 1e-60); }, {"RMSNorm", "eps", "representable"});

  mf::RMSNorm<float> rms(4);
  mf::LayerNorm<float> ln(4);
  const mf::RowMatrix<float> x = mf::RowMatrix<float>::Ones(2, 4), bad = mf::RowMatrix<float>::Ones(2, 5);
  test::expect_error([&] { rms.forward(bad); }, {"RMSNorm::forward", "x = 2 x 5", "2 x 4"});
  test::expect_error([&] { ln.forward(bad); }, {"LayerNorm::forward", "x = 2 x 5"});
  test::expect_error([&] { rms.weight_grad(); }, {"RMSNorm", "weight_grad", "backward()"});
  test::expect_error([&] { ln.weight_grad(); }, {"LayerNorm", "weight_grad", "backward()"});
  test::expect_error([&] { ln.bias_grad(); }, {"LayerNorm", "bias_grad", "backward()"});
  test::expect_error([&] { rms.backward(bad, bad); }, {"RMSNorm::backward", "x = 2 x 5"});
  test::expect_error([&] { rms.backward(x, mf::RowMatrix<float>::Ones(3, 4)); },
                     {"RMSNorm::backward", "dy = 3 x 4", "2 x 4"});
  test::expect_error([&] { ln.backward(x, bad); }, {"LayerNorm::backward", "dy = 2 x 5", "2 x 4"});
  // A failed backward allocates nothing.
  EXPECT_FALSE(rms.has_grad());
}

}  // namespace

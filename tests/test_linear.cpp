// Linear: forward against a triple loop, backward against central differences, accumulation,
// initialisation, parameter naming, thread-count independence and argument errors.
#include "test_support.hpp"

#include <memoryformer/linear.hpp>

namespace {

TEST(Linear, ForwardMatchesLoops) {
  for (bool bias : {true, false}) {
    mf::Linear<double> layer(5, 3, bias, 0.5, 1);
    if (bias) layer.bias() = test::random_matrix<double>(1, 3, 2);
    const mf::RowMatrix<double> x = test::random_matrix<double>(4, 5, 3);
    const mf::RowMatrix<double> y = layer.forward(x);
    for (Eigen::Index n = 0; n < 4; ++n)
      for (Eigen::Index o = 0; o < 3; ++o) {
        double expected = bias ? layer.bias()(0, o) : 0.0;
        for (Eigen::Index i = 0; i < 5; ++i) expected += x(n, i) * layer.weight()(o, i);
        EXPECT_NEAR(y(n, o), expected, 1e-14);
      }
  }
}

TEST(Linear, BackwardMatchesCentralDifferences) {
  mf::Linear<double> layer(6, 4, true, 0.5, 4);
  layer.bias() = test::random_matrix<double>(1, 4, 5);
  mf::RowMatrix<double> x = test::random_matrix<double>(3, 6, 6);
  const mf::RowMatrix<double> weights = test::random_matrix<double>(3, 4, 7);
  auto loss = [&] { return layer.forward(x).cwiseProduct(weights).sum(); };
  mf::ParameterList<double> params;
  layer.append_parameters("head", params);
  const mf::RowMatrix<double> dx = layer.backward(x, weights);
  test::expect_parameter_gradients(params, loss, 24, 1e-8);
  for (Eigen::Index i = 0; i < x.size(); ++i)
    EXPECT_NEAR(dx.data()[i], test::central_difference(x.data()[i], loss), 1e-8);
}

TEST(Linear, GradientsAccumulateUntilZeroed) {
  mf::Linear<float> layer(4, 3, true, 0.1, 8);
  const mf::RowMatrix<float> x = test::random_matrix<float>(2, 4, 9),
                             dy = test::random_matrix<float>(2, 3, 10);
  layer.backward(x, dy);
  const mf::RowMatrix<float> once_w = layer.weight_grad(), once_b = layer.bias_grad();
  layer.backward(x, dy);
  EXPECT_LT(test::relative_error(layer.weight_grad(), 2 * once_w), 1e-6);
  EXPECT_LT(test::relative_error(layer.bias_grad(), 2 * once_b), 1e-6);
  const float* before = layer.weight_grad().data();
  layer.zero_grad();
  EXPECT_EQ(layer.weight_grad().data(), before);  // in place: Parameter views stay valid
  EXPECT_EQ(layer.weight_grad().cwiseAbs().maxCoeff(), 0.0f);
}

TEST(Linear, InitialisationAndParameters) {
  mf::Linear<float> layer(256, 128, true, 0.02, 42);
  const auto w = layer.weight().cast<double>();
  const double mean = w.mean(), std_dev = std::sqrt((w.array() - mean).square().mean());
  EXPECT_NEAR(mean, 0.0, 1e-3);
  EXPECT_NEAR(std_dev, 0.02, 1e-3);
  EXPECT_EQ(layer.bias().cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_EQ(mf::Linear<float>(256, 128, true, 0.02, 42).weight(), layer.weight());  // seeded
  EXPECT_NE(mf::Linear<float>(256, 128, true, 0.02, 43).weight(), layer.weight());
  mf::ParameterList<float> params;
  layer.append_parameters("blocks.0.attn.q", params);
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "blocks.0.attn.q.weight");
  EXPECT_EQ(params[0].rows, 128);
  EXPECT_EQ(params[0].cols, 256);
  EXPECT_TRUE(params[0].decay);
  EXPECT_EQ(params[1].name, "blocks.0.attn.q.bias");
  EXPECT_FALSE(params[1].decay);
  mf::ParameterList<float> no_bias;
  mf::Linear<float>(4, 2, false).append_parameters("lm_head", no_bias);
  ASSERT_EQ(no_bias.size(), 1u);
}

TEST(Linear, ResultDoesNotDependOnThreadCount) {
  mf::Linear<float> layer(96, 80, true, 0.1, 3);
  const mf::RowMatrix<float> x = test::random_matrix<float>(50, 96, 4),
                             dy = test::random_matrix<float>(50, 80, 5);
  const int before = mf::num_threads();
  mf::set_num_threads(1);
  const mf::RowMatrix<float> y1 = layer.forward(x), dx1 = layer.backward(x, dy), dw1 = layer.weight_grad();
  layer.zero_grad();
  mf::set_num_threads(3);
  const mf::RowMatrix<float> y3 = layer.forward(x), dx3 = layer.backward(x, dy), dw3 = layer.weight_grad();
  mf::set_num_threads(before);
  EXPECT_EQ(y1, y3);
  EXPECT_EQ(dx1, dx3);
  EXPECT_EQ(dw1, dw3);
}

TEST(Linear, FewerRowsThanThreadsSplitTheOutputColumns) {
  // Decoding: 1 or 2 rows on 3 threads, enough work for all of them, 300 outputs in uneven slices.
  mf::Linear<double> layer(256, 300, true, 0.1, 6);
  layer.bias() = test::random_matrix<double>(1, 300, 7);
  const int before = mf::num_threads();
  mf::set_num_threads(3);
  for (const Eigen::Index rows : {1, 2}) {
    const mf::RowMatrix<double> x = test::random_matrix<double>(rows, 256, 8);
    const mf::RowMatrix<double> y = layer.forward(x);
    for (Eigen::Index n = 0; n < rows; ++n)
      for (Eigen::Index o = 0; o < 300; ++o) {
        double expected = layer.bias()(0, o);
        for (Eigen::Index i = 0; i < 256; ++i) expected += x(n, i) * layer.weight()(o, i);
        EXPECT_NEAR(y(n, o), expected, 1e-12) << n << ", " << o;
      }
  }
  mf::set_num_threads(before);
}

TEST(Linear, BadArgumentsAreNamed) {
  test::expect_error([] { mf::Linear<float>(0, 3); }, {"in_dim = 0"});
  test::expect_error([] { mf::Linear<float>(3, -1); }, {"out_dim = -1"});
  test::expect_error([] { mf::Linear<float>(3, 3, true, -0.5); }, {"init_std = -0.5"});
  mf::Linear<float> layer(3, 2);
  const mf::RowMatrix<float> x = mf::RowMatrix<float>::Ones(2, 4);
  test::expect_error([&] { layer.forward(x); }, {"Linear::forward", "x", "2 x 4", "2 x 3"});
  test::expect_error([&] { layer.backward(mf::RowMatrix<float>::Ones(2, 3), x); }, {"dy", "2 x 4", "2 x 2"});
  test::expect_error([&] { mf::Linear<float>(3, 2).weight_grad(); },
                     {"weight_grad", "backward() or zero_grad()"});
}

}  // namespace

// Every bad argument throws memoryformer::Error naming the argument, the value and the expectation.
#include "test_support.hpp"

#include <limits>

namespace {

mf::MemoryLayerOptions valid() {
  mf::MemoryLayerOptions o;
  o.in_dim = 16;
  o.out_dim = 8;
  o.tau = 4;
  return o;
}

TEST(Errors, InDimNotDivisibleByTau) {
  auto o = valid();
  o.in_dim = 18;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"in_dim", "18", "multiple of tau = 4"});
}

TEST(Errors, TauOutOfRange) {
  for (int tau : {0, -3, 17, 40}) {
    auto o = valid();
    o.tau = tau;
    test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"tau", std::to_string(tau).c_str(), "1..16"});
  }
}

TEST(Errors, NonPositiveDimensions) {
  auto o = valid();
  o.in_dim = 0;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"in_dim", "0", "positive"});
  o = valid();
  o.out_dim = -2;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"out_dim", "-2", "positive"});
}

TEST(Errors, BadTemperature) {
  for (float t :
       {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    auto o = valid();
    o.temperature = t;
    test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"temperature", "finite value > 0"});
  }
  test::expect_error([] { mf::SignHash<double> h(8, 4, mf::Score::paper, -0.5); },
                     {"SignHash", "temperature", "-0.5"});
}

TEST(Errors, BadScoreAndInitStd) {
  auto o = valid();
  o.score = static_cast<mf::Score>(7);
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"score", "7", "Score::paper or Score::l1"});
  o = valid();
  o.init_std = -0.1f;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"init_std", "-0.1"});
}

TEST(Errors, TablesTooLargeForMemory) {
  auto o = valid();
  o.in_dim = 1 << 20;
  o.tau = 16;
  o.out_dim = 1 << 20;
  test::expect_error([&] { mf::MemoryLayer<float> l(o); }, {"tables", "bytes", "lower tau"});
}

TEST(Errors, ForwardWithWrongInputColumns) {
  const mf::MemoryLayer<float> layer(valid());
  test::expect_error([&] { layer.forward(mf::RowMatrix<float>::Zero(3, 15)); }, {"x", "3 x 15", "3 x 16"});
}

TEST(Errors, BackwardWithMismatchedDy) {
  mf::MemoryLayer<float> layer(valid());
  const mf::RowMatrix<float> x = mf::RowMatrix<float>::Ones(3, 16);
  test::expect_error([&] { layer.backward(x, mf::RowMatrix<float>::Zero(3, 7)); }, {"dy", "3 x 7", "3 x 8"});
  test::expect_error([&] { layer.backward(x, mf::RowMatrix<float>::Zero(2, 8)); }, {"dy", "2 x 8", "3 x 8"});
  test::expect_error([&] { layer.hash().backward(x, mf::RowMatrix<float>::Zero(3, 5)); },
                     {"dscores", "3 x 5", "3 x 4"});
}

TEST(Errors, BucketsOutOfRangeOrMisshapen) {
  const mf::MemoryLayer<float> layer(valid());
  auto b = layer.hash()(mf::RowMatrix<float>::Ones(2, 16));
  b.codes(1, 3) = 16;
  test::expect_error([&] { layer.forward(b); }, {"buckets.codes", "16", "[0, 16)"});
  b.codes(1, 3) = -1;
  test::expect_error([&] { layer.forward(b); }, {"buckets.codes", "-1"});
  b = layer.hash()(mf::RowMatrix<float>::Ones(2, 16));
  b.scores.resize(2, 3);
  test::expect_error([&] { layer.forward(b); }, {"buckets.scores", "2 x 3", "2 x 4"});
}

TEST(Errors, GradientsBeforeBackward) {
  const mf::MemoryLayer<float> layer(valid());
  test::expect_error([&] { layer.table_grad(); }, {"table_grad", "backward()"});
  test::expect_error([&] { layer.bias_grad(); }, {"bias_grad", "backward()"});
}

TEST(Errors, BadThreadCountAndPathName) {
  test::expect_error([] { mf::set_num_threads(-1); }, {"threads", "-1"});
  test::expect_error([] { mf::parse_kernel_path("sse"); }, {"\"sse\"", "scalar, avx2, avx512"});
}

TEST(Errors, ErrorIsAStandardException) {
  const mf::Error e("x");
  const std::invalid_argument& base = e;
  EXPECT_STREQ(base.what(), "x");
}

}  // namespace

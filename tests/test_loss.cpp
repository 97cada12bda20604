// Cross-entropy: value against an explicit softmax, gradient against central differences,
// stability for huge logits, argument errors.
#include "test_support.hpp"

#include <memoryformer/loss.hpp>

namespace {

double explicit_cross_entropy(const mf::RowMatrix<double>& logits, const mf::TokenMatrix& targets) {
  double total = 0;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    double denominator = 0;
    for (Eigen::Index c = 0; c < logits.cols(); ++c) denominator += std::exp(logits(i, c));
    total -= std::log(std::exp(logits(i, targets(i))) / denominator);
  }
  return total / double(logits.rows());
}

TEST(CrossEntropy, MatchesExplicitSoftmaxAndItsGradient) {
  mf::RowMatrix<double> logits = test::random_matrix<double>(5, 7, 1, 0.0, 3.0);
  mf::TokenMatrix targets(5, 1);
  targets << 0, 6, 3, 3, 1;
  mf::RowMatrix<double> grad;
  EXPECT_NEAR(mf::cross_entropy<double>(logits, targets, &grad), explicit_cross_entropy(logits, targets),
              1e-12);
  for (Eigen::Index i = 0; i < logits.size(); ++i)
    EXPECT_NEAR(grad.data()[i],
                test::central_difference(logits.data()[i],
                                         [&] { return mf::cross_entropy<double>(logits, targets); }),
                1e-8);
}

TEST(CrossEntropy, HugeLogitsStayFinite) {
  mf::RowMatrix<float> logits(2, 3);
  logits << 1e4f, 0.f, -1e4f, 5e3f, 5e3f, 0.f;
  mf::TokenMatrix targets(1, 2);
  targets << 1, 0;
  mf::RowMatrix<float> grad;
  const double loss = mf::cross_entropy<float>(logits, targets, &grad);
  EXPECT_NEAR(loss, (1e4 + std::log(2.0)) / 2, 1e-6);  // row 0: -log softmax = 1e4; row 1: log 2
  EXPECT_TRUE(grad.allFinite());
  EXPECT_NEAR(grad(1, 0), (0.5 - 1) / 2, 1e-7);
}

TEST(CrossEntropy, BadArgumentsAreNamed) {
  const mf::RowMatrix<float> logits = mf::RowMatrix<float>::Zero(3, 4);
  mf::TokenMatrix two(1, 2);
  two << 0, 1;
  test::expect_error([&] { mf::cross_entropy<float>(logits, two); }, {"targets", "2 ids", "(3)"});
  mf::TokenMatrix bad(1, 3);
  bad << 0, 4, 1;
  test::expect_error([&] { mf::cross_entropy<float>(logits, bad); }, {"targets[1] = 4", "[0, 4)"});
}

// Bits per byte by hand: three tokens of probability 1/2, 1/4 and 1/8 carry 1 + 2 + 3 = 6 bits; over
// 4 bytes of text that is 1.5 bits per byte. The NLL comes from cross_entropy on logits log(p).
TEST(BitsPerByte, IsTheTotalNllInBitsOverTheTextBytes) {
  mf::RowMatrix<double> logits(3, 4);
  logits << std::log(0.5), std::log(0.25), std::log(0.125), std::log(0.125),  //
      std::log(0.25), std::log(0.25), std::log(0.25), std::log(0.25),         //
      std::log(0.125), std::log(0.125), std::log(0.5), std::log(0.25);
  mf::TokenMatrix targets(3, 1);
  targets << 0, 2, 1;
  const double total_nats = 3 * mf::cross_entropy<double>(logits, targets);
  EXPECT_NEAR(total_nats, 6 * std::log(2.0), 1e-12);
  EXPECT_NEAR(mf::bits_per_byte(total_nats, 4), 1.5, 1e-12);
  test::expect_error([] { mf::bits_per_byte(1.0, 0); }, {"text_bytes", "at least one byte"});
  test::expect_error([] { mf::bits_per_byte(-1.0, 3); }, {"total_nll_nats", ">= 0"});
}

}  // namespace

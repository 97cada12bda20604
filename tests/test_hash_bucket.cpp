// SignHash: codes (bit order, zero as positive), scores in both modes, and their gradient.
#include "test_support.hpp"

namespace {

using Hash = mf::SignHash<double>;

mf::RowMatrix<double> row(std::initializer_list<double> values) {
  mf::RowMatrix<double> m(1, static_cast<Eigen::Index>(values.size()));
  Eigen::Index i = 0;
  for (double v : values) m(0, i++) = v;
  return m;
}

TEST(SignHash, CodesOfTheMethodExamplesAreMsbFirst) {
  // docs/method.md §1 step 2, worked by hand.
  EXPECT_EQ(Hash(2, 2)(row({0.7, -0.1})).codes(0, 0), 2);
  EXPECT_EQ(Hash(3, 3)(row({-1.1, -2.7, 0.6})).codes(0, 0), 1);
  EXPECT_EQ(Hash(3, 3)(row({3.4, -1.9, -2.3})).codes(0, 0), 4);
}

TEST(SignHash, ZeroHashesAsPositive) {
  EXPECT_EQ(Hash(3, 3)(row({0.0, -0.0, -1.0})).codes(0, 0), 0b110);
  EXPECT_EQ(Hash(4, 4)(row({0, 0, 0, 0})).codes(0, 0), 15);
}

TEST(SignHash, FirstElementIsTheMostSignificantBitOfEachChunk) {
  // Two chunks of 4: only element 0 of chunk 0 and element 3 of chunk 1 are non-negative.
  const auto b = Hash(8, 4)(row({1, -1, -1, -1, -1, -1, -1, 1}));
  EXPECT_EQ(b.codes(0, 0), 8);
  EXPECT_EQ(b.codes(0, 1), 1);
}

TEST(SignHash, CodesMatchReferenceForEveryTau) {
  for (int tau : {1, 3, 8, 13, 16}) {
    const auto x = test::random_matrix<double>(7, 2 * tau, 100u + static_cast<unsigned>(tau));
    const auto b = Hash(2 * tau, tau)(x);
    for (Eigen::Index n = 0; n < x.rows(); ++n)
      for (int k = 0; k < 2; ++k) {
        EXPECT_EQ(b.codes(n, k), test::reference_code(x.row(n).data() + k * tau, tau)) << "tau " << tau;
        EXPECT_GE(b.codes(n, k), 0);
        EXPECT_LT(b.codes(n, k), 1 << tau);
      }
  }
}

TEST(SignHash, ClosedFormProbabilityEqualsExplicitSoftmax) {
  // docs/method.md §4: the closed form p = prod sigmoid(2|z|/t) equals the 2^tau-way softmax (tau = 8).
  for (double t : {0.25, 1.0, 3.0}) {
    const auto z = test::random_matrix<double>(20, 8, 7u, 0.0, 2.0);
    for (Eigen::Index n = 0; n < z.rows(); ++n)
      EXPECT_NEAR(Hash::probability(z.row(n).data(), 8, t),
                  test::reference_probability(z.row(n).data(), 8, t), 1e-12)
          << "t " << t;
  }
}

TEST(SignHash, ProbabilityIsBoundedAndStable) {
  // 2^-tau < p <= 1 (p = 2^-tau exactly at z = 0), and no overflow for huge |z| / t.
  const double zeros[8] = {};
  EXPECT_NEAR(Hash::probability(zeros, 8, 1.0), 1.0 / 256, 1e-15);
  const double huge[4] = {1e30, -1e30, 5e3, -7e2};
  EXPECT_DOUBLE_EQ(Hash::probability(huge, 4, 1e-3), 1.0);
  const auto z = test::random_matrix<double>(50, 6, 3u, 0.0, 4.0);
  for (Eigen::Index n = 0; n < z.rows(); ++n) {
    const double p = Hash::probability(z.row(n).data(), 6, 0.5);
    EXPECT_GT(p, 1.0 / 64);
    EXPECT_LE(p, 1.0);
  }
}

TEST(SignHash, ScoresMatchReferenceInBothModes) {
  for (mf::Score score : {mf::Score::paper, mf::Score::l1})
    for (double t : {0.5, 1.0, 2.0}) {
      const auto x = test::random_matrix<double>(5, 12, 11u);
      const auto b = Hash(12, 4, score, t)(x);
      for (Eigen::Index n = 0; n < x.rows(); ++n)
        for (int k = 0; k < 3; ++k)
          EXPECT_NEAR(b.scores(n, k), test::reference_score(x.row(n).data() + 4 * k, 4, t, score), 1e-12)
              << mf::to_string(score) << " t " << t;
    }
}

TEST(SignHash, FloatScoresAgreeWithDouble) {
  const auto xd = test::random_matrix<double>(9, 32, 5u);
  const mf::RowMatrix<float> xf = xd.cast<float>();
  const auto bd = Hash(32, 8, mf::Score::l1)(xd);
  const auto bf = mf::SignHash<float>(32, 8, mf::Score::l1)(xf);
  EXPECT_EQ(bf.codes, bd.codes);
  EXPECT_LT(test::relative_error(bf.scores, bd.scores), 1e-6);
}

// Central finite differences of L = sum_k w_k s_k(x) against backward(x, w).
void check_score_gradient(mf::Score score, double t, int tau) {
  const Hash hash(3 * tau, tau, score, t);
  const auto x = test::random_matrix<double>(4, 3 * tau, 21u, 0.05, 1.5);
  const auto w = test::random_matrix<double>(4, 3, 22u);
  const auto dx = hash.backward(x, w);
  const double eps = 1e-6;
  for (Eigen::Index n = 0; n < x.rows(); ++n)
    for (Eigen::Index i = 0; i < x.cols(); ++i) {
      auto xp = x, xm = x;
      xp(n, i) += eps;
      xm(n, i) -= eps;
      const double fd =
          (hash(xp).scores.cwiseProduct(w).sum() - hash(xm).scores.cwiseProduct(w).sum()) / (2 * eps);
      EXPECT_NEAR(dx(n, i), fd, 1e-7 * std::max(1.0, std::abs(fd)))
          << mf::to_string(score) << " t " << t << " tau " << tau << " at (" << n << ", " << i << ")";
    }
}

TEST(SignHash, PaperScoreGradientMatchesFiniteDifferences) {
  for (double t : {0.5, 1.0, 2.5}) check_score_gradient(mf::Score::paper, t, 4);
  check_score_gradient(mf::Score::paper, 1.0, 8);
}

TEST(SignHash, L1ScoreGradientMatchesFiniteDifferences) {
  for (double t : {0.5, 1.0, 2.5}) check_score_gradient(mf::Score::l1, t, 4);
  check_score_gradient(mf::Score::l1, 1.0, 8);
}

TEST(SignHash, GradientAtZeroTakesSignPlusOne) {
  // d p / d z_j at z_j = 0 is p (2/t) sigmoid(0) = p / t with sign(0) = +1 (docs/method.md §1).
  const Hash hash(2, 2, mf::Score::paper, 2.0);
  const auto x = row({0.0, 1.0});
  const auto dx = hash.backward(x, row({1.0}));
  const double p = Hash::probability(x.data(), 2, 2.0);
  EXPECT_NEAR(dx(0, 0), p * (2.0 / 2.0) * 0.5, 1e-15);
}

TEST(SignHash, HashesEmptyBatch) {
  const auto b = Hash(8, 4)(mf::RowMatrix<double>(0, 8));
  EXPECT_EQ(b.codes.rows(), 0);
  EXPECT_EQ(b.codes.cols(), 2);
}

}  // namespace

// Rotary position embedding, GPT-NeoX "rotate half" (docs/method.md §2): hand-worked values, the
// properties that make it a position encoding (norm kept, relative positions), its transpose as
// the backward, and the position offsets used by the KV cache and by batches.
#include "test_support.hpp"

#include <memoryformer/rotary.hpp>

#include <cmath>
#include <limits>

namespace {

// One row [1, 2, ..., n].
mf::RowMatrix<double> iota_row(int n) {
  mf::RowMatrix<double> x(1, n);
  for (int j = 0; j < n; ++j) x(0, j) = j + 1;
  return x;
}

double dot(const mf::RowMatrix<double>& a, const mf::RowMatrix<double>& b) { return a.cwiseProduct(b).sum(); }

TEST(Rotary, RotDimIsTheFloorOfPctTimesHeadDim) {
  EXPECT_EQ(mf::Rotary<float>(64).rot_dim(), 16);  // the paper's models: head_dim 64, pct 0.25
  EXPECT_EQ(mf::Rotary<float>(8).rot_dim(), 2);
  EXPECT_EQ(mf::Rotary<float>(10, 0.25).rot_dim(), 2);  // floor(2.5)
  EXPECT_EQ(mf::Rotary<float>(8, 0.5).rot_dim(), 4);
  EXPECT_EQ(mf::Rotary<float>(8, 1.0).rot_dim(), 8);
  EXPECT_EQ(mf::Rotary<float>(8, 0.0).rot_dim(), 0);
  EXPECT_EQ(mf::Rotary<float>(3).rot_dim(), 0);  // floor(0.75)
  const mf::Rotary<double> r(8, 0.5);
  EXPECT_EQ(r.head_dim(), 8);
  EXPECT_DOUBLE_EQ(r.rotary_pct(), 0.5);
  EXPECT_DOUBLE_EQ(r.base(), 10000.0);
  EXPECT_DOUBLE_EQ(r.inv_freq(0), 1.0);
  EXPECT_DOUBLE_EQ(r.inv_freq(1), 0.01);  // 10000^(-2/4)
  // rot 0 rotates nothing.
  const auto x = test::random_matrix<float>(5, 12, 1u);
  EXPECT_EQ(mf::Rotary<float>(3).apply(x, 4, 7), x);
}

TEST(Rotary, HandWorkedValues) {
  // head_dim 8, pct 0.5: rot 4, x1 = dims 0-1, x2 = dims 2-3, angles pos * [1, 0.01]; dims 4-7 pass.
  const mf::Rotary<double> rotary(8, 0.5);
  const mf::RowMatrix<double> x = iota_row(8);
  EXPECT_EQ(rotary.apply(x, 1, 0), x);  // position 0 is the identity
  const mf::RowMatrix<double> y1 = rotary.apply(x, 1, 1);
  const double want1[8] = {1 * std::cos(1.0) - 3 * std::sin(1.0),
                           2 * std::cos(0.01) - 4 * std::sin(0.01),
                           3 * std::cos(1.0) + 1 * std::sin(1.0),
                           4 * std::cos(0.01) + 2 * std::sin(0.01),
                           5,
                           6,
                           7,
                           8};
  for (int j = 0; j < 8; ++j) EXPECT_NEAR(y1(0, j), want1[j], 1e-14) << "pos 1, dim " << j;
  // Position 5, worked out by hand (angles 5 and 0.05 rad).
  const mf::RowMatrix<double> y5 = rotary.apply(x, 1, 5);
  const double want5[8] = {
      3.1604350094526414, 1.7975838437072191, -0.10793771827345966, 4.094959380121222, 5, 6, 7, 8};
  for (int j = 0; j < 8; ++j) EXPECT_NEAR(y5(0, j), want5[j], 1e-13) << "pos 5, dim " << j;
  EXPECT_NEAR(y1(0, 0), -1.9841106485555495, 1e-13);
  // Each head rotates the same way: two heads [1..8, 1..8] give [y, y]; rows are positions 1, 2, ...
  mf::RowMatrix<double> two(2, 16);
  two << x, x, x, x;
  const mf::RowMatrix<double> y = rotary.apply(two, 2, 5);
  EXPECT_LT(test::relative_error(y.block(0, 0, 1, 8), y5), 1e-15);
  EXPECT_LT(test::relative_error(y.block(0, 8, 1, 8), y5), 1e-15);
  EXPECT_LT(test::relative_error(y.block(1, 8, 1, 8), rotary.apply(x, 1, 6)), 1e-15);
}

TEST(Rotary, PassThroughAndPairNorms) {
  // head_dim 16, pct 0.25: rot 4 (pairs (0, 2) and (1, 3)), dims 4-15 untouched; 3 heads.
  const mf::Rotary<float> rotary(16);
  const int half = rotary.rot_dim() / 2;
  const auto x = test::random_matrix<float>(9, 48, 2u);
  const mf::RowMatrix<float> y = rotary.apply(x, 3, 1000);
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    for (int h = 0; h < 3; ++h) {
      const int o = h * 16;
      for (int j = rotary.rot_dim(); j < 16; ++j) EXPECT_EQ(y(r, o + j), x(r, o + j));
      for (int i = 0; i < half; ++i) {
        const float before = std::hypot(x(r, o + i), x(r, o + half + i));
        const float after = std::hypot(y(r, o + i), y(r, o + half + i));
        EXPECT_NEAR(after, before, 1e-6f * (1 + before));
      }
    }
}

TEST(Rotary, ScoresDependOnlyOnRelativePosition) {
  // <R(m) q, R(n) k> = <q, R(n - m) k> on the rotated dims: the property RoPE exists for.
  const mf::Rotary<double> rotary(16, 1.0, 500.0);
  const auto q = test::random_matrix<double>(1, 16, 3u), k = test::random_matrix<double>(1, 16, 4u);
  for (int shift : {1, 37, 4096}) {
    for (int m : {0, 3, 11}) {
      for (int n : {0, 2, 9}) {
        const double score = dot(rotary.apply(q, 1, m), rotary.apply(k, 1, n));
        const double shifted = dot(rotary.apply(q, 1, m + shift), rotary.apply(k, 1, n + shift));
        EXPECT_NEAR(shifted, score, 1e-11) << "m " << m << " n " << n << " shift " << shift;
        if (n >= m) {
          EXPECT_NEAR(dot(q, rotary.apply(k, 1, n - m)), score, 1e-11);
        }
      }
    }
  }
}

TEST(Rotary, BackwardIsTheTransposeAndMatchesFiniteDifferences) {
  const mf::Rotary<double> rotary(12, 0.5);
  mf::RowMatrix<double> x = test::random_matrix<double>(7, 24, 5u);
  const auto g = test::random_matrix<double>(7, 24, 6u);
  const mf::RowMatrix<double> dx = rotary.apply_backward(g, 2, 13);
  // <apply(x), g> == <x, apply_backward(g)>, and apply_backward undoes apply.
  EXPECT_NEAR(dot(rotary.apply(x, 2, 13), g), dot(x, dx), 1e-12);
  EXPECT_LT(test::relative_error(rotary.apply_backward(rotary.apply(x, 2, 13), 2, 13), x), 1e-15);
  // Central differences of L = <apply(x), g>.
  mf::RowMatrix<double> numeric(x.rows(), x.cols());
  const double h = 1e-6;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const double keep = x.data()[i];
    x.data()[i] = keep + h;
    const double up = dot(rotary.apply(x, 2, 13), g);
    x.data()[i] = keep - h;
    const double down = dot(rotary.apply(x, 2, 13), g);
    x.data()[i] = keep;
    numeric.data()[i] = (up - down) / (2 * h);
  }
  EXPECT_LT(test::relative_error(dx, numeric), 1e-8);
}

TEST(Rotary, FirstPositionMatchesSlicingALongerSequence) {
  // The KV cache: rotating tokens 5..9 with first_position 5 equals rows 5..9 of the whole
  // sequence, bit for bit, and so does decoding one token at a time.
  const mf::Rotary<float> rotary(16, 0.5);
  const auto x = test::random_matrix<float>(10, 64, 7u);
  const mf::RowMatrix<float> full = rotary.apply(x, 4, 0);
  EXPECT_EQ(rotary.apply(x.middleRows(5, 5), 4, 5), full.middleRows(5, 5));
  for (Eigen::Index t = 0; t < x.rows(); ++t) EXPECT_EQ(rotary.apply(x.row(t), 4, t), full.row(t));
  const mf::RowMatrix<float> dfull = rotary.apply_backward(x, 4, 0);
  EXPECT_EQ(rotary.apply_backward(x.middleRows(3, 6), 4, 3), dfull.middleRows(3, 6));
  // Float against double at a long position (angles are taken in double).
  const mf::Rotary<double> ref(16, 0.5);
  EXPECT_LT(test::relative_error(rotary.apply(x, 4, 100000), ref.apply(x.cast<double>(), 4, 100000)), 1e-6);
}

TEST(Rotary, BatchRestartsPositionsEverySequence) {
  const mf::Rotary<double> rotary(8, 0.5);
  const int batch = 3, seq = 4;
  const auto x = test::random_matrix<double>(batch * seq, 16, 8u);
  const mf::RowMatrix<double> y = rotary.apply_batch(x, 2, seq, 2);
  const mf::RowMatrix<double> dx = rotary.apply_batch_backward(x, 2, seq, 2);
  for (int b = 0; b < batch; ++b) {
    EXPECT_EQ(y.middleRows(b * seq, seq), rotary.apply(x.middleRows(b * seq, seq), 2, 2)) << "sequence " << b;
    EXPECT_EQ(dx.middleRows(b * seq, seq), rotary.apply_backward(x.middleRows(b * seq, seq), 2, 2));
  }
  // One sequence of all the rows is the plain apply.
  EXPECT_EQ(rotary.apply_batch(x, 2, batch * seq, 2), rotary.apply(x, 2, 2));
  EXPECT_EQ(rotary.apply_batch(mf::RowMatrix<double>(0, 16), 2, 0).rows(), 0);
}

TEST(Rotary, ErrorsNameTheArgument) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  test::expect_error([] { mf::Rotary<float> r(0); }, {"Rotary", "head_dim = 0", "positive"});
  test::expect_error([] { mf::Rotary<float> r(8, -0.25); }, {"Rotary", "rotary_pct = -0.25", "[0, 1]"});
  test::expect_error([] { mf::Rotary<float> r(8, 1.5); }, {"rotary_pct = 1.5"});
  test::expect_error([&] { mf::Rotary<float> r(8, nan); }, {"rotary_pct = nan"});
  test::expect_error([] { mf::Rotary<float> r(8, 0.25, 0.0); }, {"Rotary", "base = 0", "> 0"});
  test::expect_error([&] { mf::Rotary<float> r(8, 0.25, inf); }, {"base = inf"});
  test::expect_error([] { mf::Rotary<float> r(6, 0.5); }, {"Rotary", "rotary_pct = 0.5", "even", "rot = 3"});
  test::expect_error([] { mf::Rotary<float> r(7, 1.0); }, {"head_dim = 7", "rot = 7"});

  const mf::Rotary<float> rotary(8);
  const auto x = test::random_matrix<float>(6, 16, 9u);
  test::expect_error([&] { rotary.apply(x, 3); }, {"Rotary::apply", "x = 6 x 16", "6 x 24"});
  test::expect_error([&] { rotary.apply_backward(x, 1, 0); }, {"Rotary::apply_backward", "dy = 6 x 16"});
  test::expect_error([&] { rotary.apply(x, 0); }, {"Rotary::apply", "n_heads = 0"});
  test::expect_error([&] { rotary.apply(x, 2, -1); }, {"Rotary::apply", "first_position = -1", ">= 0"});
  test::expect_error([&] { rotary.apply_batch(x, 2, 4); }, {"Rotary::apply_batch", "seq_len = 4", "6 rows"});
  test::expect_error([&] { rotary.apply_batch(x, 2, 0); }, {"seq_len = 0"});
  test::expect_error([&] { rotary.apply_batch_backward(x, 2, -2); },
                     {"Rotary::apply_batch_backward", "seq_len = -2"});
}

}  // namespace

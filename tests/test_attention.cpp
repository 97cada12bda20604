// Causal self-attention and the KV cache: forward against an explicit softmax written from the
// formula in double, stability for large scores, causality, central-difference gradients, decode
// against the full forward, the tensor overload, thread-count independence and argument errors.
#include "test_support.hpp"

#include <memoryformer/attention.hpp>

#include <limits>

namespace {

// out[i] = sum_{j <= i} exp(s_ij - max) v_j / sum exp(...), s_ij = <q_i, k_j> / sqrt(d_h), per
// sequence and head, every loop written out.
template <class Scalar>
Eigen::MatrixXd reference_attention(const mf::RowMatrix<Scalar>& q, const mf::RowMatrix<Scalar>& k,
                                    const mf::RowMatrix<Scalar>& v, Eigen::Index seq, int heads) {
  const Eigen::Index d = q.cols(), hd = d / heads;
  Eigen::MatrixXd out = Eigen::MatrixXd::Zero(q.rows(), d);
  for (Eigen::Index b = 0; b < q.rows() / seq; ++b)
    for (int h = 0; h < heads; ++h)
      for (Eigen::Index i = 0; i < seq; ++i) {
        std::vector<double> s(static_cast<std::size_t>(i + 1));
        double max = -std::numeric_limits<double>::infinity();
        for (Eigen::Index j = 0; j <= i; ++j) {
          double dot = 0;
          for (Eigen::Index c = 0; c < hd; ++c)
            dot += double(q(b * seq + i, h * hd + c)) * double(k(b * seq + j, h * hd + c));
          s[std::size_t(j)] = dot / std::sqrt(double(hd));
          max = std::max(max, s[std::size_t(j)]);
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - max));
        for (Eigen::Index j = 0; j <= i; ++j)
          for (Eigen::Index c = 0; c < hd; ++c)
            out(b * seq + i, h * hd + c) += s[std::size_t(j)] / sum * double(v(b * seq + j, h * hd + c));
      }
  return out;
}

struct Inputs {
  mf::RowMatrix<double> q, k, v;
};

Inputs random_inputs(Eigen::Index rows, int d, unsigned seed, double scale = 1.0) {
  return {test::random_matrix<double>(rows, d, seed) * scale,
          test::random_matrix<double>(rows, d, seed + 1) * scale,
          test::random_matrix<double>(rows, d, seed + 2)};
}

// backward() from forward()'s saved state against central differences of sum(out * weights), for
// every `stride`-th input value; batch 2.
void expect_backward_matches_central_differences(int d, int heads, Eigen::Index seq, Eigen::Index stride,
                                                 unsigned seed) {
  const mf::CausalSelfAttention<double> attention(d, heads);
  Inputs in = random_inputs(2 * seq, d, seed);
  const mf::RowMatrix<double> weights = test::random_matrix<double>(2 * seq, d, seed + 4);
  auto loss = [&] { return attention.forward(in.q, in.k, in.v, seq).cwiseProduct(weights).sum(); };
  mf::CausalSelfAttention<double>::Saved saved;
  attention.forward(in.q, in.k, in.v, seq, &saved);
  const auto g = attention.backward(saved, weights);
  for (auto [m, grad] : {std::pair{&in.q, &g.dq}, std::pair{&in.k, &g.dk}, std::pair{&in.v, &g.dv}})
    for (Eigen::Index i = 0; i < m->size(); i += stride)
      EXPECT_NEAR(grad->data()[i], test::central_difference(m->data()[i], loss), 1e-7) << i;
}

TEST(Attention, ForwardMatchesExplicitSoftmax) {
  for (int heads : {1, 3}) {
    const mf::CausalSelfAttention<double> attention(12, heads);
    const Inputs in = random_inputs(2 * 5, 12, 7);
    EXPECT_LT(test::relative_error(attention.forward(in.q, in.k, in.v, 5),
                                   reference_attention(in.q, in.k, in.v, 5, heads)),
              1e-12);
    const mf::CausalSelfAttention<float> attention_f(12, heads);
    const mf::RowMatrix<float> qf = in.q.cast<float>(), kf = in.k.cast<float>(), vf = in.v.cast<float>();
    EXPECT_LT(test::relative_error(attention_f.forward(qf, kf, vf, 5),
                                   reference_attention(in.q, in.k, in.v, 5, heads)),
              1e-5);
  }
}

// Sequences longer than forward()'s causal query block (64 rows), the last block partial.
TEST(Attention, ForwardMatchesExplicitSoftmaxAcrossCausalBlocks) {
  const mf::CausalSelfAttention<double> attention(8, 2);
  const Inputs in = random_inputs(2 * 150, 8, 17);
  EXPECT_LT(test::relative_error(attention.forward(in.q, in.k, in.v, 150),
                                 reference_attention(in.q, in.k, in.v, 150, 2)),
            1e-12);
}

// Two query blocks; every 7th value, so rows of both are checked.
TEST(Attention, BackwardAcrossCausalBlocksMatchesCentralDifferences) {
  expect_backward_matches_central_differences(4, 2, 70, 7, 19);
}

TEST(Attention, LargeScoresStayFinite) {
  const mf::CausalSelfAttention<float> attention(8, 2);
  const Inputs in = random_inputs(6, 8, 3, 300.0);  // scores up to ~1e5: exp overflows without the shift
  const mf::RowMatrix<float> out =
      attention.forward(in.q.cast<float>(), in.k.cast<float>(), in.v.cast<float>(), 6);
  EXPECT_TRUE(out.allFinite());
  EXPECT_LT(test::relative_error(out, reference_attention(in.q, in.k, in.v, 6, 2)), 1e-4);
}

TEST(Attention, LaterPositionsNeverChangeEarlierOutputs) {
  const mf::CausalSelfAttention<double> attention(8, 2);
  Inputs in = random_inputs(2 * 6, 8, 11);
  const mf::RowMatrix<double> before = attention.forward(in.q, in.k, in.v, 6);
  for (auto* m : {&in.q, &in.k, &in.v}) m->row(4).setConstant(5.0);  // position 4 of sequence 0
  const mf::RowMatrix<double> after = attention.forward(in.q, in.k, in.v, 6);
  EXPECT_EQ(before.topRows(4), after.topRows(4));
  EXPECT_NE(before.row(4), after.row(4));
  EXPECT_EQ(before.bottomRows(6), after.bottomRows(6));  // the other sequence is untouched
}

TEST(Attention, BackwardMatchesCentralDifferences) {
  expect_backward_matches_central_differences(6, 2, 4, 1, 5);
}

TEST(Attention, DecodeInPiecesEqualsFullForward) {
  const mf::CausalSelfAttention<double> attention(12, 3);
  const Inputs in = random_inputs(7, 12, 21);
  const mf::RowMatrix<double> full = attention.forward(in.q, in.k, in.v, 7);
  mf::KVCache<double> cache(12, 7);
  Eigen::Index at = 0;
  for (Eigen::Index n : {3, 1, 2, 1}) {
    const mf::RowMatrix<double> part =
        attention.decode(in.q.middleRows(at, n), in.k.middleRows(at, n), in.v.middleRows(at, n), cache);
    EXPECT_LT(test::relative_error(part, full.middleRows(at, n)), 1e-14) << "rows " << at << "+" << n;
    at += n;
  }
  EXPECT_EQ(cache.size(), 7);
  test::expect_error([&] { attention.decode(in.q.topRows(1), in.k.topRows(1), in.v.topRows(1), cache); },
                     {"KVCache::append", "capacity 7", "7 used"});
  // Rewinding to 5 and decoding positions 5, 6 again gives the same rows.
  cache.truncate(5);
  EXPECT_LT(test::relative_error(
                attention.decode(in.q.bottomRows(2), in.k.bottomRows(2), in.v.bottomRows(2), cache),
                full.bottomRows(2)),
            1e-14);
  test::expect_error([&] { cache.truncate(8); }, {"KVCache::truncate", "size = 8", "[0, 7]"});
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
}

TEST(Attention, TensorOverloadEqualsStackedMatrices) {
  const mf::CausalSelfAttention<float> attention(8, 2);
  mf::CausalSelfAttention<float>::Tensor3 q(3, 4, 8), k(3, 4, 8), v(3, 4, 8);
  q.setRandom();
  k.setRandom();
  v.setRandom();
  using Map = Eigen::Map<const mf::RowMatrix<float>>;
  const mf::RowMatrix<float> expected =
      attention.forward(Map(q.data(), 12, 8), Map(k.data(), 12, 8), Map(v.data(), 12, 8), 4);
  const auto out = attention.forward(q, k, v);
  ASSERT_EQ(out.dimension(0), 3);
  ASSERT_EQ(out.dimension(1), 4);
  EXPECT_EQ(Map(out.data(), 12, 8), expected);
  mf::CausalSelfAttention<float>::Tensor3 bad(3, 5, 8);
  test::expect_error([&] { attention.forward(q, bad, v); }, {"k", "[3, 5, 8]", "[3, 4, 8]"});
}

TEST(Attention, ResultDoesNotDependOnThreadCount) {
  const mf::CausalSelfAttention<float> attention(64, 4);
  const Inputs in = random_inputs(4 * 32, 64, 31);
  const mf::RowMatrix<float> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>();
  const int before = mf::num_threads();
  mf::set_num_threads(1);
  mf::CausalSelfAttention<float>::Saved s1;
  const mf::RowMatrix<float> one = attention.forward(q, k, v, 32, &s1);
  const auto g1 = attention.backward(s1, v);
  mf::set_num_threads(3);
  mf::CausalSelfAttention<float>::Saved s3;
  const mf::RowMatrix<float> three = attention.forward(q, k, v, 32, &s3);
  const auto g3 = attention.backward(s3, v);
  mf::set_num_threads(before);
  EXPECT_EQ(one, three);
  EXPECT_EQ(g1.dq, g3.dq);
  EXPECT_EQ(g1.dk, g3.dk);
  EXPECT_EQ(g1.dv, g3.dv);
}

TEST(Attention, BadArgumentsAreNamed) {
  test::expect_error([] { mf::CausalSelfAttention<float>(12, 5); },
                     {"n_heads = 5", "divisor of d_model = 12"});
  test::expect_error([] { mf::CausalSelfAttention<float>(0, 1); }, {"d_model = 0"});
  test::expect_error([] { mf::KVCache<float>(8, 0); }, {"capacity = 0"});
  const mf::CausalSelfAttention<float> attention(8, 2);
  const mf::RowMatrix<float> x = mf::RowMatrix<float>::Ones(6, 8), narrow = mf::RowMatrix<float>::Ones(6, 7);
  test::expect_error([&] { attention.forward(x, x, x, 4); }, {"seq_len = 4", "divisor of the row count 6"});
  test::expect_error([&] { attention.forward(x, narrow, x, 3); }, {"k", "6 x 7", "6 x 8"});
  mf::CausalSelfAttention<float>::Saved saved;
  attention.forward(x, x, x, 3, &saved);
  test::expect_error([&] { attention.backward(saved, narrow); }, {"dout", "6 x 7"});
  mf::KVCache<float> wide(16, 4);
  test::expect_error([&] { attention.decode(x.topRows(1), x.topRows(1), x.topRows(1), wide); },
                     {"cache", "width 16"});
}

}  // namespace

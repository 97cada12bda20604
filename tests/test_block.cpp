// The Memory Block and both Transformer blocks (docs/method.md §2): the Memory Block against a reference
// built from the independent Memory Layer reference and LayerNorm written out, every block's
// backward against central finite differences, KV-cached decoding against the full forward.
#include "test_support.hpp"

#include <tuple>

namespace {

mf::ModelConfig small_config(mf::Score score = mf::Score::paper, int expand_bits = 1) {
  mf::ModelConfig c;
  c.vocab_size = 13;
  c.d_model = 16;
  c.n_heads = 2;  // head_dim 8
  c.n_layers = 2;
  c.tau = 4;  // K = 4
  c.expand_bits = expand_bits;
  c.rotary_pct = 0.5;  // rot 4
  c.score = score;
  c.seed = 7;
  return c;
}

// (x - mean) / sqrt(var + eps) * w + b per row, in double.
Eigen::MatrixXd reference_layer_norm(const Eigen::MatrixXd& x, const mf::LayerNorm<double>& norm) {
  Eigen::MatrixXd y(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const double mean = x.row(i).mean();
    const double var = (x.row(i).array() - mean).square().mean();
    for (Eigen::Index j = 0; j < x.cols(); ++j)
      y(i, j) = (x(i, j) - mean) / std::sqrt(var + norm.eps()) * norm.weight()(0, j) + norm.bias()(0, j);
  }
  return y;
}

TEST(MemoryBlock, ForwardIsUpThenLayerNormThenDown) {
  for (int e : {0, 1, 2}) {
    const mf::ModelConfig c = small_config(mf::Score::l1, e);
    mf::MemoryBlock<double> block(c, 3);
    EXPECT_EQ(block.hidden_width(), (c.tau + e) * c.num_chunks());
    EXPECT_EQ(block.down().tau(), c.tau + e);
    EXPECT_EQ(block.down().tables().rows(), c.num_chunks() << (c.tau + e));
    block.norm().weight().setRandom();
    block.norm().bias().setRandom();
    const auto m = test::random_matrix<double>(6, c.d_model, 11u);
    const Eigen::MatrixXd u = test::reference_forward(m, block.up());
    const mf::RowMatrix<double> u_norm = reference_layer_norm(u, block.norm());
    const Eigen::MatrixXd want = test::reference_forward(u_norm, block.down());
    EXPECT_LT(test::relative_error(block.forward(m), want), 1e-12) << "expand_bits " << e;
  }
}

// L = sum(block.forward(x) .* G): checks dL/dx and every parameter's gradient.
template <class Block>
void check_block_gradients(Block& block, const mf::RowMatrix<double>& x, Eigen::Index seq_len) {
  const auto g = test::random_matrix<double>(x.rows(), x.cols(), 99u);
  auto loss = [&](const mf::RowMatrix<double>& input) {
    return block.forward(input, seq_len).cwiseProduct(g).sum();
  };
  block.zero_grad();
  typename Block::Saved saved;
  block.forward(x, seq_len, &saved);
  const mf::RowMatrix<double> dx = block.backward(saved, g);
  mf::RowMatrix<double> xp = x;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const double fd = test::central_difference(xp.data()[i], [&] { return loss(xp); });
    EXPECT_NEAR(dx.data()[i], fd, 1e-6 * std::max(1.0, std::abs(fd))) << "dx[" << i << "]";
  }
  mf::ParameterList<double> params;
  block.append_parameters("block", params);
  test::expect_parameter_gradients(params, [&] { return loss(x); });
}

TEST(MemoryBlock, BackwardMatchesFiniteDifferences) {
  for (mf::Score score : {mf::Score::paper, mf::Score::l1}) {
    mf::MemoryBlock<double> block(small_config(score, 2), 5);
    const auto m = test::random_matrix<double>(5, 16, 21u, 0.05, 1.5);
    const auto g = test::random_matrix<double>(5, 16, 22u);
    block.zero_grad();
    mf::MemoryBlock<double>::Saved saved;
    block.forward(m, &saved);
    const mf::RowMatrix<double> dm = block.backward(saved, g);
    mf::RowMatrix<double> mp = m;
    for (Eigen::Index i = 0; i < m.size(); ++i) {
      const double fd =
          test::central_difference(mp.data()[i], [&] { return block.forward(mp).cwiseProduct(g).sum(); });
      EXPECT_NEAR(dm.data()[i], fd, 1e-6 * std::max(1.0, std::abs(fd))) << "dm[" << i << "]";
    }
    mf::ParameterList<double> params;
    block.append_parameters("mlp", params);
    test::expect_parameter_gradients(params, [&] { return block.forward(m).cwiseProduct(g).sum(); });
  }
}

TEST(MemoryFormerBlock, BackwardMatchesFiniteDifferences) {
  for (mf::Score score : {mf::Score::paper, mf::Score::l1}) {
    mf::MemoryFormerBlock<double> block(small_config(score), 1);
    check_block_gradients(block, test::random_matrix<double>(2 * 4, 16, 31u, 0.05, 1.5), 4);
  }
}

// The ablation variants (docs/method.md §6): W_O as a Memory Layer, a GeLU in the Memory Block, the
// released code's RMSNorm; each changes the forward and keeps the gradients exact.
TEST(MemoryFormerBlock, VariantsBackwardMatchesFiniteDifferences) {
  const auto x = test::random_matrix<double>(2 * 4, 16, 41u, 0.05, 1.5);
  const mf::RowMatrix<double> plain = mf::MemoryFormerBlock<double>(small_config(), 1).forward(x, 4);
  for (int variant = 0; variant < 3; ++variant) {
    mf::ModelConfig c = small_config();
    if (variant == 0) c.output_projection = true;
    if (variant == 1) c.memory_block_activation = mf::Activation::gelu;
    if (variant == 2) {
      c.rms_form = mf::RmsForm::eps_after_root;
      c.norm_eps = 1e-2;  // large, so the forward visibly differs
    }
    SCOPED_TRACE("variant " + std::to_string(variant));
    mf::MemoryFormerBlock<double> block(c, 1);
    EXPECT_EQ(block.o() != nullptr, c.output_projection);
    EXPECT_GT(test::relative_error(block.forward(x, 4), plain), 1e-6);
    check_block_gradients(block, x, 4);
  }
}

TEST(MemoryBlock, GeluSitsBetweenTheLayerNormAndTheDownLayer) {
  mf::ModelConfig c = small_config(mf::Score::l1, 2);
  c.memory_block_activation = mf::Activation::gelu;
  mf::MemoryBlock<double> block(c, 3);
  EXPECT_EQ(block.activation(), mf::Activation::gelu);
  block.norm().weight().setRandom();
  block.norm().bias().setRandom();
  const auto m = test::random_matrix<double>(6, c.d_model, 12u);
  const Eigen::MatrixXd u = reference_layer_norm(test::reference_forward(m, block.up()), block.norm());
  Eigen::MatrixXd act = u;
  for (Eigen::Index i = 0; i < u.size(); ++i) act.data()[i] = u.data()[i] * 0.5 * std::erfc(-u.data()[i] / std::sqrt(2.0));
  const mf::RowMatrix<double> act_rows = act;
  EXPECT_LT(test::relative_error(block.forward(m), test::reference_forward(act_rows, block.down())), 1e-12);
}

TEST(MemoryFormerBlock, OutputProjectionIsAMemoryLayerOfItsOwnNamedAttnO) {
  mf::ModelConfig c = small_config(mf::Score::paper, 2);
  c.output_projection = true;
  mf::MemoryFormerBlock<float> block(c, 1);
  mf::ParameterList<float> params;
  block.append_parameters("blocks.0", params);
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.name);
  for (const char* name : {"blocks.0.attn.o.tables", "blocks.0.attn.o.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  std::int64_t values = 0;
  for (const auto& p : params) values += static_cast<std::int64_t>(p.rows) * p.cols;
  EXPECT_EQ(values, mf::MemoryFormerBlock<float>::parameter_values(c));
  c.output_projection = false;
  EXPECT_EQ(values - mf::MemoryFormerBlock<float>::parameter_values(c),
            static_cast<std::int64_t>(c.num_chunks()) * (1 << c.tau) * c.d_model + c.d_model);
  // Its own tables, drawn from its own stream.
  EXPECT_NE(block.o()->tables(), block.q().tables());
}

TEST(DenseBlock, BackwardMatchesFiniteDifferences) {
  mf::DenseBlock<double> block(small_config(), 2);
  check_block_gradients(block, test::random_matrix<double>(3 * 5, 16, 32u), 5);
}

TEST(MemoryFormerBlock, ParameterNamesAndShapesFollowTheWeightFormat) {
  const mf::ModelConfig c = small_config(mf::Score::paper, 2);
  mf::MemoryFormerBlock<float> block(c, 1);
  mf::ParameterList<float> params;
  block.append_parameters("blocks.3", params);
  const long k = c.num_chunks(), d = c.d_model, w = (c.tau + 2) * k;
  // docs/method.md §5, with tables [K, 2^bits, out] flattened to [K * 2^bits, out].
  const std::vector<std::tuple<std::string, long, long, bool>> want = {
      {"blocks.3.attn_norm.weight", 1, d, false},
      {"blocks.3.attn.q.tables", k << c.tau, d, true},
      {"blocks.3.attn.q.bias", 1, d, false},
      {"blocks.3.attn.k.tables", k << c.tau, d, true},
      {"blocks.3.attn.k.bias", 1, d, false},
      {"blocks.3.attn.v.tables", k << c.tau, d, true},
      {"blocks.3.attn.v.bias", 1, d, false},
      {"blocks.3.mlp_norm.weight", 1, d, false},
      {"blocks.3.mlp.up.tables", k << c.tau, w, true},
      {"blocks.3.mlp.up.bias", 1, w, false},
      {"blocks.3.mlp.norm.weight", 1, w, false},
      {"blocks.3.mlp.norm.bias", 1, w, false},
      {"blocks.3.mlp.down.tables", k << (c.tau + 2), d, true},
      {"blocks.3.mlp.down.bias", 1, d, false},
  };
  ASSERT_EQ(params.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(params[i].name, std::get<0>(want[i]));
    EXPECT_EQ(params[i].rows, std::get<1>(want[i])) << params[i].name;
    EXPECT_EQ(params[i].cols, std::get<2>(want[i])) << params[i].name;
    EXPECT_EQ(params[i].decay, std::get<3>(want[i])) << params[i].name;
  }
}

TEST(MemoryFormerBlock, InitialisationFollowsTheReleasedCode) {
  // Q/K/V tables N(0, sqrt(2 / (5 d))), Memory Block tables N(0, 0.02), biases 0.001 N(0, 1).
  mf::ModelConfig c = small_config();
  c.d_model = 64;
  c.tau = 8;
  mf::MemoryFormerBlock<float> block(c, 1);
  auto std_dev = [](const auto& m) {
    const double mean = m.template cast<double>().mean();
    return std::sqrt((m.template cast<double>().array() - mean).square().mean());
  };
  EXPECT_NEAR(std_dev(block.q().tables()), std::sqrt(2.0 / (5 * 64)), 0.002);
  EXPECT_NEAR(std_dev(block.mlp().up().tables()), 0.02, 0.0005);
  EXPECT_NEAR(std_dev(block.mlp().down().tables()), 0.02, 0.0005);
  EXPECT_LT(block.q().bias().cwiseAbs().maxCoeff(), 0.006f);
  // Q, K and V are initialised independently.
  EXPECT_NE(block.q().tables(), block.k().tables());
}

// Feeding a sequence piece by piece through decode() with a KV cache gives the rows of forward().
template <class Block>
void check_decode_matches_forward(const Block& block) {
  const Eigen::Index seq = 7;
  const auto x = test::random_matrix<float>(seq, 16, 41u);
  const mf::RowMatrix<float> full = block.forward(x, seq);
  for (Eigen::Index piece : {1, 3, 7}) {
    mf::KVCache<float> cache(16, seq);
    for (Eigen::Index begin = 0; begin < seq; begin += piece) {
      const Eigen::Index n = std::min(piece, seq - begin);
      const mf::RowMatrix<float> y = block.decode(x.middleRows(begin, n), cache);
      EXPECT_LT(test::relative_error(y, full.middleRows(begin, n)), 1e-5)
          << "piece " << piece << " at " << begin;
    }
    EXPECT_EQ(cache.size(), seq);
  }
}

TEST(MemoryFormerBlock, DecodeWithCacheEqualsForward) {
  check_decode_matches_forward(mf::MemoryFormerBlock<float>(small_config(), 3));
  mf::ModelConfig variants = small_config();
  variants.output_projection = true;
  variants.memory_block_activation = mf::Activation::gelu;
  check_decode_matches_forward(mf::MemoryFormerBlock<float>(variants, 3));
}

TEST(DenseBlock, DecodeWithCacheEqualsForward) {
  check_decode_matches_forward(mf::DenseBlock<float>(small_config(), 3));
}

TEST(Blocks, SequencesInABatchAreIndependent) {
  // Row b * seq + t sees only sequence b: the batched forward equals each sequence on its own.
  const mf::MemoryFormerBlock<double> block(small_config(), 4);
  const auto x = test::random_matrix<double>(3 * 5, 16, 51u);
  const mf::RowMatrix<double> batched = block.forward(x, 5);
  for (Eigen::Index b = 0; b < 3; ++b)
    EXPECT_LT(test::relative_error(batched.middleRows(b * 5, 5), block.forward(x.middleRows(b * 5, 5), 5)),
              1e-13);
}

TEST(Blocks, GeluIsExact) {
  // x Phi(x) with Phi from erfc, the complementary form; and its derivative by central differences.
  mf::RowMatrix<double> x(1, 5);
  x << -3.0, -0.5, 0.0, 0.7, 4.0;
  const mf::RowMatrix<double> y = mf::detail::gelu(x);
  for (Eigen::Index j = 0; j < x.cols(); ++j)
    EXPECT_NEAR(y(0, j), x(0, j) * 0.5 * std::erfc(-x(0, j) / std::sqrt(2.0)), 1e-15);
  const mf::RowMatrix<double> dx =
      mf::detail::gelu_backward(x, mf::RowMatrix<double>(mf::RowMatrix<double>::Ones(1, 5)));
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    const double fd = test::central_difference(x(0, j), [&] { return mf::detail::gelu(x)(0, j); });
    EXPECT_NEAR(dx(0, j), fd, 1e-8);
  }
}

}  // namespace

// Q, K and V read one hash, which the block owns: it hashes with the model's tau, score and
// temperature, and Q computes from it what it computes from the normed input itself.
TEST(MemoryFormerBlock, QkvShareTheBlocksHash) {
  mf::ModelConfig config;
  config.d_model = 32;
  config.n_heads = 2;
  config.tau = 4;
  config.score = mf::Score::l1;
  config.temperature = 0.5;
  mf::MemoryFormerBlock<float> block(config, 7);
  const mf::SignHash<float>& h = block.qkv_hash();
  EXPECT_EQ(h.in_dim(), 32);
  EXPECT_EQ(h.tau(), 4);
  EXPECT_EQ(h.score(), mf::Score::l1);
  EXPECT_EQ(h.temperature(), 0.5f);
  const auto a = test::random_matrix<float>(5, 32, 91u);
  EXPECT_EQ(block.q().forward(h(a)), block.q().forward(a));
  EXPECT_EQ(block.v().forward(h(a)), block.v().forward(a));
}

namespace {

template <class Block>
void check_tensor_forward(const Block& block, const char* where) {
  const auto x = test::random_matrix<float>(2 * 5, 16, 43u);
  const mf::Tensor3<float> y = block.forward(test::tensor_of(x, 2, 5));
  test::expect_tensor_equals_rows(y, block.forward(x, 5));
  test::expect_error([&] { block.forward(mf::Tensor3<float>(2, 5, 8)); }, {where, "x = [2, 5, 8]", "[batch, seq, 16]"});
}

TEST(Blocks, ForwardOnATensorEqualsForwardOnTheStackedSequences) {
  check_tensor_forward(mf::MemoryFormerBlock<float>(small_config(), 3), "MemoryFormerBlock::forward");
  check_tensor_forward(mf::DenseBlock<float>(small_config(), 3), "DenseBlock::forward");
}

// What Model<Block> requires, as a trait: both blocks model it; a type missing any member does not.
struct NotABlock {
  using Scalar = float;
  struct Saved {};
};
struct DenseBlockWithoutZeroGrad : mf::DenseBlock<float> {
  using mf::DenseBlock<float>::DenseBlock;
  void zero_grad(int) = delete;  // hides DenseBlock::zero_grad()
};
struct DenseBlockWithoutArch : mf::DenseBlock<float> {
  using mf::DenseBlock<float>::DenseBlock;
  static constexpr int kArch = 0;  // not a name a file can record
};

TEST(Blocks, TheBlockConceptAcceptsBothBlocksAndRefusesIncompleteOnes) {
  EXPECT_TRUE(mf::is_block_v<mf::MemoryFormerBlock<float>>);
  EXPECT_TRUE(mf::is_block_v<mf::DenseBlock<double>>);
  EXPECT_FALSE(mf::is_block_v<NotABlock>);
  EXPECT_FALSE(mf::is_block_v<DenseBlockWithoutZeroGrad>);
  EXPECT_FALSE(mf::is_block_v<DenseBlockWithoutArch>);
  EXPECT_FALSE(mf::is_block_v<int>);
}

}  // namespace

// The whole model (docs/method.md §3): loss gradients against central finite differences, causality,
// KV-cached decoding against the full forward, generation against argmax of the full forward,
// a short training run whose loss must fall, parameter names and configuration errors.
#include "test_support.hpp"

#include <set>
#include <tuple>

namespace {

mf::ModelConfig small_config(mf::Score score = mf::Score::paper) {
  mf::ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  c.expand_bits = 1;
  c.rotary_pct = 0.5;
  c.score = score;
  c.seed = 5;
  return c;
}

template <class Model>
void check_loss_gradients(Model& model) {
  const int vocab = model.config().vocab_size;
  const mf::TokenMatrix tokens = test::random_tokens(2, 5, vocab, 1u), targets = test::random_tokens(2, 5, vocab, 2u);
  auto loss = [&] { return mf::cross_entropy<double>(model.forward(tokens), targets); };
  model.zero_grad();
  typename Model::Saved saved;
  mf::RowMatrix<double> dlogits;
  mf::cross_entropy<double>(model.forward(tokens, &saved), targets, &dlogits);
  model.backward(saved, dlogits);
  test::expect_parameter_gradients(model.parameters(), loss, 6);
}

TEST(Model, MemoryFormerLossGradientsMatchFiniteDifferences) {
  for (mf::Score score : {mf::Score::paper, mf::Score::l1}) {
    mf::MemoryFormerModel<double> model(small_config(score));
    check_loss_gradients(model);
  }
}

TEST(Model, DenseLossGradientsMatchFiniteDifferences) {
  mf::DenseModel<double> model(small_config());
  check_loss_gradients(model);
}

template <class Model>
void check_causal(const Model& model) {
  const mf::TokenMatrix tokens = test::random_tokens(1, 9, model.config().vocab_size, 3u);
  const auto logits = model.forward(tokens);
  for (Eigen::Index t = 1; t < tokens.cols(); ++t) {
    mf::TokenMatrix changed = tokens;
    changed(0, t) = (changed(0, t) + 1) % model.config().vocab_size;
    const auto other = model.forward(changed);
    EXPECT_EQ(other.topRows(t), logits.topRows(t)) << "changing token " << t;
    EXPECT_NE(other.row(t), logits.row(t)) << "token " << t << " must change its own logits";
  }
}

TEST(Model, ChangingALaterTokenNeverChangesEarlierLogits) {
  check_causal(mf::MemoryFormerModel<float>(small_config()));
  check_causal(mf::DenseModel<float>(small_config()));
}

template <class Model>
void check_decode(const Model& model) {
  const mf::TokenMatrix tokens = test::random_tokens(1, 10, model.config().vocab_size, 4u);
  const auto full = model.forward(tokens);
  auto state = model.start_decoding(10);
  Eigen::Index begin = 0;
  for (Eigen::Index n : {4, 1, 1, 3, 1}) {  // a prompt, then single tokens and a chunk
    const auto logits = model.decode(tokens.middleCols(begin, n), state);
    EXPECT_LT(test::relative_error(logits, full.middleRows(begin, n)), 1e-5)
        << "tokens " << begin << "+" << n;
    begin += n;
  }
  EXPECT_EQ(state.position, 10);
  test::expect_error([&] { model.decode(tokens.leftCols(1), state); },
                     {"Model::decode", "tokens", "capacity 10"});
}

TEST(Model, IncrementalDecodingEqualsFullForward) {
  check_decode(mf::MemoryFormerModel<float>(small_config()));
  check_decode(mf::DenseModel<float>(small_config()));
}

TEST(Model, GreedyGenerationTakesTheArgmaxOfTheFullForward) {
  const mf::MemoryFormerModel<double> model(small_config(mf::Score::l1));
  const std::vector<std::int32_t> prompt = {3, 1, 4};
  mf::SamplingOptions greedy;
  greedy.temperature = 0;
  const std::vector<std::int32_t> out = mf::generate(model, prompt, 6, greedy);
  ASSERT_EQ(out.size(), 9u);
  // Independently: run the whole sequence so far and take the argmax of its last row.
  std::vector<std::int32_t> seq = prompt;
  for (int step = 0; step < 6; ++step) {
    const mf::TokenMatrix t =
        Eigen::Map<const mf::TokenMatrix>(seq.data(), 1, static_cast<Eigen::Index>(seq.size()));
    Eigen::Index best = 0;
    model.forward(t).bottomRows(1).maxCoeff(&best, &best);
    seq.push_back(static_cast<std::int32_t>(best));
  }
  EXPECT_EQ(out, seq);
}

TEST(Generate, SamplingFollowsTheSoftmaxAndTopK) {
  Eigen::RowVectorXd logits(4);
  logits << 1.0, 2.0, 0.5, 2.0;
  mf::detail::Rng rng(9);
  mf::SamplingOptions o;
  o.temperature = 0;
  EXPECT_EQ(mf::sample_token(logits, o, rng), 1) << "greedy takes the first of tied maxima";
  o.temperature = 0.7;
  o.top_k = 1;
  EXPECT_EQ(mf::sample_token(logits, o, rng), 1);
  // Frequencies against softmax(logits / t), over the top 3 (index 2 must never appear).
  o.top_k = 3;
  std::vector<int> counts(4, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++counts[static_cast<std::size_t>(mf::sample_token(logits, o, rng))];
  EXPECT_EQ(counts[2], 0);
  double z = 0;
  for (int i : {0, 1, 3}) z += std::exp(logits(i) / 0.7);
  for (int i : {0, 1, 3})
    EXPECT_NEAR(counts[static_cast<std::size_t>(i)] / double(draws), std::exp(logits(i) / 0.7) / z, 0.015);
  o.temperature = -1;
  test::expect_error([&] { mf::sample_token(logits, o, rng); }, {"temperature", "-1", ">= 0"});
}

// Brute force: the nucleus of softmax(logits / t) found by sorting every probability, and the
// frequencies of 40000 draws against its renormalised probabilities.
TEST(Generate, TopPSamplesOnlyTheNucleusInProportion) {
  Eigen::RowVectorXd logits(6);
  logits << 0.3, 2.0, -1.0, 1.2, 2.0, 0.9;
  const double t = 0.8, p = 0.8;
  std::vector<std::pair<double, int>> probs;
  double z = 0;
  for (int i = 0; i < 6; ++i) z += std::exp(logits(i) / t);
  for (int i = 0; i < 6; ++i) probs.push_back({std::exp(logits(i) / t) / z, i});
  std::stable_sort(probs.begin(), probs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<int> nucleus;
  double mass = 0;
  for (const auto& [prob, i] : probs) {
    if (mass >= p) break;
    mass += prob;
    nucleus.push_back(i);
  }
  ASSERT_EQ(nucleus.size(), 3u) << "the case must cut the distribution: tokens 1, 4, 3 (mass 0.86)";

  mf::SamplingOptions o;
  o.temperature = t;
  o.top_p = p;
  mf::detail::Rng rng(5);
  std::vector<int> counts(6, 0);
  const int draws = 40000;
  for (int d = 0; d < draws; ++d) ++counts[static_cast<std::size_t>(mf::sample_token(logits, o, rng))];
  for (int i = 0; i < 6; ++i) {
    const bool inside = std::find(nucleus.begin(), nucleus.end(), i) != nucleus.end();
    const double expected = inside ? std::exp(logits(i) / t) / z / mass : 0.0;
    EXPECT_NEAR(counts[static_cast<std::size_t>(i)] / double(draws), expected, 0.01) << "token " << i;
  }
  // A mass smaller than the top token's keeps that token alone (the first of tied maxima).
  o.top_p = 0.05;
  for (int d = 0; d < 50; ++d) EXPECT_EQ(mf::sample_token(logits, o, rng), 1);
  for (const double bad : {0.0, -0.5, 1.5, std::nan("")}) {
    o.top_p = bad;
    test::expect_error([&] { mf::sample_token(logits, o, rng); }, {"top_p", "(0, 1]"});
  }
}

TEST(Model, ShortTrainingRunLearnsARepeatingPattern) {
  // A sequence with period 5 is fully predictable after one period: the loss must fall from about
  // log(vocab) to a small fraction of it.
  mf::ModelConfig c = small_config();
  c.vocab_size = 8;
  c.d_model = 32;
  c.tau = 4;
  mf::MemoryFormerModel<float> model(c);
  mf::TokenMatrix tokens(4, 17), targets(4, 17);
  for (Eigen::Index b = 0; b < 4; ++b)
    for (Eigen::Index t = 0; t < 17; ++t) {
      tokens(b, t) = static_cast<std::int32_t>((b + t) % 5);
      targets(b, t) = static_cast<std::int32_t>((b + t + 1) % 5);
    }
  auto params = model.parameters();
  mf::AdamW<float> optimizer(params);
  float first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    model.zero_grad();
    decltype(model)::Saved saved;
    mf::RowMatrix<float> dlogits;
    last = mf::cross_entropy<float>(model.forward(tokens, &saved), targets, &dlogits);
    if (step == 0) first = last;
    model.backward(saved, dlogits);
    optimizer.step(params, 3e-3);
  }
  EXPECT_NEAR(first, std::log(8.0f), 0.3f);
  EXPECT_LT(last, 0.2f * first) << "first " << first << " last " << last;
}

TEST(Model, ParametersCoverEveryTensorOnce) {
  mf::MemoryFormerModel<float> model(small_config());
  const auto params = model.parameters();
  EXPECT_EQ(params.front().name, "embed.weight");
  EXPECT_EQ(params[params.size() - 2].name, "final_norm.weight");
  EXPECT_EQ(params.back().name, "lm_head.weight");
  EXPECT_EQ(params.back().rows, 11);
  EXPECT_EQ(params.back().cols, 16);
  std::set<std::string> names;
  for (const auto& p : params) EXPECT_TRUE(names.insert(p.name).second) << p.name;
  EXPECT_EQ(params.size(), 2u * 14u + 3u);  // 14 tensors per block (docs/method.md §5)
  // Q, K, V, up: K * 2^4 * width; down: K * 2^5 * 16 (K = 4, width 16, up width 20).
  const Eigen::Index tables = 2 * (3 * 64 * 16 + 64 * 20 + 128 * 16);
  EXPECT_EQ(mf::table_bytes(params), tables * 4);
}

TEST(Model, SameSeedSameWeightsOtherSeedOtherWeights) {
  mf::ModelConfig c = small_config();
  mf::MemoryFormerModel<float> a(c), b(c);
  c.seed = 6;
  mf::MemoryFormerModel<float> other(c);
  const auto pa = a.parameters(), pb = b.parameters(), po = other.parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].value_map(), pb[i].value_map()) << pa[i].name;
    if (pa[i].decay) {
      EXPECT_NE(pa[i].value_map(), po[i].value_map()) << pa[i].name;
    }
  }
}

// EmbeddingInit: the embedding and the LM head are N(0, 0.02) by default and N(0, sqrt(2 / (5 d)))
// with small_init; the sample standard deviation of their 11 x 64 values lies within 15% of it.
TEST(Model, EmbeddingInitSetsTheStdOfTheEmbeddingAndTheHead) {
  mf::ModelConfig c = small_config();
  c.d_model = 64;
  c.n_layers = 0;
  for (auto init : {mf::EmbeddingInit::normal_0_02, mf::EmbeddingInit::small_init}) {
    c.embedding_init = init;
    const double want = init == mf::EmbeddingInit::small_init ? std::sqrt(2.0 / (5.0 * 64)) : 0.02;
    mf::MemoryFormerModel<double> model(c);
    for (const auto& p : model.parameters()) {
      if (p.name != "embed.weight" && p.name != "lm_head.weight") continue;
      const Eigen::Map<const Eigen::ArrayXd> v(p.value, static_cast<Eigen::Index>(p.rows) * p.cols);
      const double sample_std = std::sqrt((v - v.mean()).square().mean());
      EXPECT_NEAR(sample_std / want, 1.0, 0.15) << p.name << " with " << init;
    }
  }
}

TEST(ModelConfig, PaperSizes) {
  const mf::ModelConfig tiny = mf::ModelConfig::tiny(50000), small = mf::ModelConfig::small(50000),
                        base = mf::ModelConfig::base(50000);
  EXPECT_EQ(std::make_tuple(tiny.n_layers, tiny.d_model, tiny.n_heads, tiny.num_chunks()),
            std::make_tuple(6, 512, 8, 64));
  EXPECT_EQ(std::make_tuple(small.n_layers, small.d_model, small.n_heads, small.num_chunks()),
            std::make_tuple(12, 768, 12, 96));
  EXPECT_EQ(std::make_tuple(base.n_layers, base.d_model, base.n_heads, base.num_chunks()),
            std::make_tuple(24, 1024, 16, 128));
  EXPECT_EQ(base.memory_block_width(), 10 * 128);
}

TEST(ModelConfig, ErrorsNameTheField) {
  auto with = [](auto change) {
    mf::ModelConfig c = small_config();
    change(c);
    return [c] { mf::MemoryFormerModel<float> m(c); };
  };
  test::expect_error(with([](mf::ModelConfig& c) { c.vocab_size = 0; }), {"vocab_size", "0"});
  test::expect_error(with([](mf::ModelConfig& c) { c.n_heads = 3; }),
                     {"n_heads", "3", "divisor of d_model = 16"});
  test::expect_error(with([](mf::ModelConfig& c) { c.tau = 3; }), {"d_model", "16", "multiple of tau = 3"});
  test::expect_error(with([](mf::ModelConfig& c) { c.expand_bits = 13; }), {"expand_bits", "13", "<= 16"});
  test::expect_error(with([](mf::ModelConfig& c) { c.temperature = 0; }), {"temperature", "0"});
  test::expect_error(with([](mf::ModelConfig& c) { c.rotary_pct = 1.5; }), {"rotary_pct", "1.5"});
  test::expect_error(with([](mf::ModelConfig& c) { c.norm_eps = -1; }), {"norm_eps", "-1"});
  test::expect_error(with([](mf::ModelConfig& c) { c.n_layers = -1; }), {"n_layers", "-1"});
  // (tau + e) K overflowing int was undefined behaviour in memory_block_width().
  mf::ModelConfig wide = small_config();
  wide.d_model = wide.n_heads = 1 << 30;
  wide.tau = 1;
  wide.expand_bits = 15;
  test::expect_error([&] { wide.validate(); },
                     {"ModelConfig", "d_model = 1073741824", "Memory Block width", "17179869184 fits in int"});
  const mf::MemoryFormerModel<float> model(small_config());
  test::expect_error([&] { model.forward(mf::TokenMatrix(1, 0)); }, {"Model::forward", "tokens", "1 x 0"});
  test::expect_error([&] { model.forward(mf::TokenMatrix::Constant(1, 2, 11)); }, {"11"});
  test::expect_error([&] { model.start_decoding(0); }, {"capacity", "0"});
}

}  // namespace

namespace {

TEST(Model, ForwardOnATokenTensorEqualsForwardOnTheTokenMatrix) {
  const mf::MemoryFormerModel<float> model(small_config());
  const mf::TokenMatrix tokens = test::random_tokens(3, 4, model.config().vocab_size, 9u);
  mf::TokenTensor ids(3, 4);
  for (Eigen::Index b = 0; b < 3; ++b)
    for (Eigen::Index s = 0; s < 4; ++s) ids(b, s) = tokens(b, s);
  const mf::Tensor3<float> logits = model.forward(ids);
  ASSERT_EQ(logits.dimension(0), 3);
  ASSERT_EQ(logits.dimension(1), 4);
  ASSERT_EQ(logits.dimension(2), model.config().vocab_size);
  test::expect_tensor_equals_rows(logits, model.forward(tokens));
}

}  // namespace

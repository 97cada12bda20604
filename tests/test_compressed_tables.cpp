// Compressed tables (bf16, int8, fp32 in tiles) for inference: a layer's compressed copy against
// its rounding bounds and the reference, then Model::compress_tables.
#include "test_support.hpp"

#include <utility>
#include <vector>

// ---- MemoryLayer::compressed on every kernel path: fp32 changes nothing; bf16 and int8 tables
// stay within their rounding bounds, element by element and in the output; and the forward pass
// equals the double-precision reference of docs/method.md §1 run on the dequantised tables.

namespace {

class CompressedOnPath : public test::PathTest {};

// Odd sizes: K = 6 tables of 16 rows, width 37 (full vectors plus a tail on every path).
mf::MemoryLayer<float> odd_layer(mf::Score score = mf::Score::l1) {
  mf::MemoryLayerOptions o;
  o.in_dim = 24;
  o.out_dim = 37;
  o.tau = 4;
  o.score = score;
  o.temperature = 0.7f;
  mf::MemoryLayer<float> layer(o);
  layer.bias() = test::random_matrix<float>(1, 37, 4);
  return layer;
}

// A float layer whose tables are `tables`: the reference runs on what the compressed layer stores.
mf::MemoryLayer<float> with_tables(const mf::MemoryLayer<float>& layer, const mf::RowMatrix<float>& tables) {
  mf::MemoryLayer<float> copy = layer;
  copy.tables() = tables;
  return copy;
}

// sum_k |s_k| * bound(row_k, c) per output element, in double.
template <class RowBound>
Eigen::MatrixXd output_bound(const mf::MemoryLayer<float>& layer, const mf::RowMatrix<float>& x,
                             RowBound bound) {
  const mf::Buckets<float> b = layer.hash()(x);
  Eigen::MatrixXd out = Eigen::MatrixXd::Zero(x.rows(), layer.out_dim());
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (int k = 0; k < layer.num_chunks(); ++k) {
      const Eigen::Index row = Eigen::Index{k} * layer.num_buckets() + b.codes(i, k);
      for (int c = 0; c < layer.out_dim(); ++c) out(i, c) += std::abs(double(b.scores(i, k))) * bound(row, c);
    }
  return out;
}

TEST_P(CompressedOnPath, Fp32PackingChangesNothing) {
  const auto layer = odd_layer();
  const mf::MemoryLayer<float> compressed = layer.compressed(mf::TableType::fp32);
  const mf::RowMatrix<float> x = test::random_matrix<float>(9, 24, 5, 0.05);
  EXPECT_EQ(compressed.forward(x), layer.forward(x));
  EXPECT_EQ(compressed.table_bytes(), std::size_t(6 * 16 * 37 * 4));
}

TEST_P(CompressedOnPath, Bf16StaysWithinHalfAnUlp) {
  for (mf::Score score : {mf::Score::paper, mf::Score::l1}) {
    const auto layer = odd_layer(score);
    const mf::MemoryLayer<float> compressed = layer.compressed(mf::TableType::bf16);
    EXPECT_EQ(compressed.table_bytes(), std::size_t(6 * 16 * 37 * 2));
    const mf::RowMatrix<float> stored = compressed.table_values();
    const auto t = layer.tables();
    const double half_ulp = std::ldexp(1.0, -8);  // 8 significant bits, round to nearest
    for (Eigen::Index i = 0; i < t.size(); ++i)
      ASSERT_LE(std::abs(double(stored.data()[i]) - t.data()[i]), half_ulp * std::abs(double(t.data()[i])))
          << i;
    const mf::RowMatrix<float> x = test::random_matrix<float>(9, 24, 6, 0.05);
    const mf::RowMatrix<float> y = compressed.forward(x);
    EXPECT_LT(test::relative_error(y, test::reference_forward(x, with_tables(layer, stored))), 1e-5);
    const Eigen::MatrixXd bound =
        output_bound(layer, x, [&](Eigen::Index r, int c) { return half_ulp * std::abs(double(t(r, c))); });
    const Eigen::MatrixXd diff = (y.cast<double>() - layer.forward(x).cast<double>()).cwiseAbs();
    EXPECT_TRUE((diff.array() <= bound.array() * 1.01 + 1e-6).all())
        << "max excess " << (diff - bound).maxCoeff();
  }
}

TEST_P(CompressedOnPath, Int8StaysWithinHalfAStep) {
  auto layer = odd_layer();
  layer.tables().row(5).setZero();  // an all-zero row quantises to zeros with scale 0
  const mf::MemoryLayer<float> compressed = layer.compressed(mf::TableType::int8);
  EXPECT_EQ(compressed.table_bytes(), std::size_t(6 * 16 * 37 + 6 * 16 * 4));
  const mf::RowMatrix<float> stored = compressed.table_values();
  const auto t = layer.tables();
  auto step = [&](Eigen::Index r) { return double(t.row(r).cwiseAbs().maxCoeff()) / 127.0; };
  for (Eigen::Index r = 0; r < t.rows(); ++r)
    for (Eigen::Index c = 0; c < t.cols(); ++c)
      ASSERT_LE(std::abs(double(stored(r, c)) - t(r, c)), step(r) / 2 * 1.0001 + 1e-12) << r << ", " << c;
  EXPECT_EQ(stored.row(5).cwiseAbs().maxCoeff(), 0.0f);
  const mf::RowMatrix<float> x = test::random_matrix<float>(9, 24, 7, 0.05);
  const mf::RowMatrix<float> y = compressed.forward(x);
  EXPECT_LT(test::relative_error(y, test::reference_forward(x, with_tables(layer, stored))), 1e-5);
  const Eigen::MatrixXd bound = output_bound(layer, x, [&](Eigen::Index r, int) { return step(r) / 2; });
  const Eigen::MatrixXd diff = (y.cast<double>() - layer.forward(x).cast<double>()).cwiseAbs();
  EXPECT_TRUE((diff.array() <= bound.array() * 1.01 + 1e-6).all())
      << "max excess " << (diff - bound).maxCoeff();
}

TEST_P(CompressedOnPath, WideLayerAndSingleTokenMatchReference) {
  // d = h = 256, tau 8: kernel pieces of 512 columns are not reached, 16-lane blocks are; N = 1
  // splits columns across threads.
  mf::MemoryLayerOptions o;
  o.in_dim = 256;
  o.out_dim = 256;
  o.tau = 8;
  const mf::MemoryLayer<float> layer(o);
  for (mf::TableType type : {mf::TableType::bf16, mf::TableType::int8}) {
    const mf::MemoryLayer<float> compressed = layer.compressed(type);
    for (Eigen::Index n : {1, 33}) {
      const mf::RowMatrix<float> x = test::random_matrix<float>(n, 256, 8, 0.05);
      EXPECT_LT(test::relative_error(compressed.forward(x),
                                     test::reference_forward(x, with_tables(layer, compressed.table_values()))),
                1e-5)
          << type << " N " << n;
    }
  }
}

TEST_P(CompressedOnPath, LargeBatchPanelScheduleMatchesReference) {
  const mf::MemoryLayer<float> layer(test::panel_layer_options());
  ASSERT_EQ(test::schedule_for(test::kPanelTokens, layer, true), mf::detail::Schedule::panels);
  const mf::RowMatrix<float> x = test::random_matrix<float>(test::kPanelTokens, layer.in_dim(), 9, 0.05);
  for (mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const mf::MemoryLayer<float> compressed = layer.compressed(type);
    EXPECT_LT(test::relative_error(compressed.forward(x),
                                   test::reference_forward(x, with_tables(layer, compressed.table_values()))),
              1e-5)
        << type;
  }
}

// Tiled tables (TableLayout::tiles) on each schedule: per token (N = 1, 3), whole-tile panels
// (1.25 tokens a row) and 64-column panels cut from the tiles (kPanelTokens). The tiles of 128
// and 72 columns make the last tile narrower than the first, and its last panel slice 8 wide.
TEST_P(CompressedOnPath, TiledLayoutMatchesReferenceOnEverySchedule) {
  const mf::MemoryLayer<float> layer(test::panel_layer_options());
  using mf::detail::Schedule;
  const std::vector<std::pair<Eigen::Index, Schedule>> cases = {{1, Schedule::per_token},
                                                                {3, Schedule::per_token},
                                                                {20, Schedule::tile_panels},
                                                                {test::kPanelTokens, Schedule::panels}};
  for (mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const mf::MemoryLayer<float> tiled = layer.compressed(type, mf::TableLayout::tiles);
    const mf::MemoryLayer<float> rows = layer.compressed(type);
    ASSERT_EQ(tiled.table_layout(), mf::TableLayout::tiles);
    ASSERT_EQ(tiled.table_values(), rows.table_values()) << type;  // the same values, stored elsewhere
    for (const auto& [n, schedule] : cases) {
      ASSERT_EQ(test::schedule_for(n, layer, true), schedule) << "N " << n;
      const mf::RowMatrix<float> x = test::random_matrix<float>(n, layer.in_dim(), 10, 0.05);
      EXPECT_LT(test::relative_error(tiled.forward(x),
                                     test::reference_forward(x, with_tables(layer, tiled.table_values()))),
                1e-5)
          << type << " N " << n;
    }
  }
}

TEST(CompressedLayout, UnknownLayoutIsRejected) {
  const auto layer = odd_layer();
  test::expect_error(
      [&] { layer.compressed(mf::TableType::int8, static_cast<mf::TableLayout>(7)); },
      {"MemoryLayer::compress", "layout", "7", "TableLayout::rows or tiles"});
}

MF_INSTANTIATE_ON_ALL_PATHS(CompressedOnPath);

}  // namespace

// ---- Model::compress_tables: every table stored as bf16 or int8 (or fp32 in tiles) for
// inference, in place. The reference is the same model with each table overwritten by the values
// its compressed copy stands for (MemoryLayer::compressed(type).table_values(), read element by
// element, not through the gather kernels), run on the ordinary fp32 path.

namespace {

mf::ModelConfig small_config() {
  mf::ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 32;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  c.expand_bits = 1;
  c.seed = 5;
  return c;
}

// Every Memory Layer of a MemoryFormer block.
std::vector<mf::MemoryLayer<float>*> layers_of(mf::MemoryFormerBlock<float>& b) {
  return {&b.q(), &b.k(), &b.v(), &b.mlp().up(), &b.mlp().down()};
}

// `model` with each table replaced by the values of its `type` copy.
void overwrite_with_compressed_values(mf::MemoryFormerModel<float>& model, mf::TableType type) {
  for (int i = 0; i < model.n_layers(); ++i)
    for (mf::MemoryLayer<float>* layer : layers_of(model.block(i)))
      layer->tables() = layer->compressed(type).table_values();
}

class CompressTables : public ::testing::TestWithParam<mf::TableType> {};

TEST_P(CompressTables, ForwardReadsTheCompressedValues) {
  const mf::TableType type = GetParam();
  mf::MemoryFormerModel<float> model(small_config());
  mf::MemoryFormerModel<float> reference(small_config());
  overwrite_with_compressed_values(reference, type);
  const mf::TokenMatrix tokens = test::random_tokens(2, 9, small_config().vocab_size, 3u);
  const mf::RowMatrix<float> exact = model.forward(tokens);

  model.compress_tables(type);
  EXPECT_EQ(model.table_type(), type);
  const mf::RowMatrix<float> compressed = model.forward(tokens);
  EXPECT_LT(test::relative_error(compressed, reference.forward(tokens)), 1e-5);
  // The copies are really read: compression changes the logits. (By how much is not bounded here:
  // a small change in one layer's output can flip the next layer's bucket codes. The per-layer
  // error bounds are the CompressedOnPath tests above.)
  EXPECT_GT(test::relative_error(compressed, exact), 1e-6);

  // The trained tables are gone: back to fp32 holds the rounded values, in rows as trained.
  model.compress_tables(mf::TableType::fp32);
  EXPECT_EQ(model.table_type(), mf::TableType::fp32);
  EXPECT_EQ(model.table_layout(), mf::TableLayout::rows);
  EXPECT_EQ(model.forward(tokens), reference.forward(tokens));
}

TEST_P(CompressTables, DecodeMatchesTheCompressedForward) {
  mf::MemoryFormerModel<float> model(small_config());
  model.compress_tables(GetParam());
  const mf::TokenMatrix tokens = test::random_tokens(1, 8, small_config().vocab_size, 4u);
  const mf::RowMatrix<float> full = model.forward(tokens);
  auto state = model.start_decoding(8);
  Eigen::Index begin = 0;
  for (Eigen::Index n : {3, 1, 4}) {
    EXPECT_LT(
        test::relative_error(model.decode(tokens.middleCols(begin, n), state), full.middleRows(begin, n)),
        1e-5)
        << "tokens " << begin << "+" << n;
    begin += n;
  }
}

// Tiled tables hold the same values: forward and decode agree with the row layout's.
TEST_P(CompressTables, TiledLayoutGivesTheRowLayoutsOutput) {
  mf::MemoryFormerModel<float> model(small_config()), tiled(small_config());
  const mf::TokenMatrix tokens = test::random_tokens(2, 9, small_config().vocab_size, 6u);
  model.compress_tables(GetParam());
  const mf::RowMatrix<float> rows = model.forward(tokens);
  tiled.compress_tables(GetParam(), mf::TableLayout::tiles);
  EXPECT_EQ(tiled.table_layout(), mf::TableLayout::tiles);
  EXPECT_LT(test::relative_error(tiled.forward(tokens), rows), 1e-6);
  auto state = tiled.start_decoding(9);
  EXPECT_LT(test::relative_error(tiled.decode(tokens.row(0), state), rows.topRows(9)), 1e-5);
  tiled.compress_tables(mf::TableType::fp32);
  EXPECT_EQ(tiled.table_layout(), mf::TableLayout::rows);
}

// fp32 tables in tiles: the trained values, read through the tiled schedules, for inference only.
TEST(CompressTablesLayout, Fp32TilesGiveTheTrainedOutputAndRefuseTraining) {
  mf::MemoryFormerModel<float> model(small_config()), tiled(small_config());
  const mf::TokenMatrix tokens = test::random_tokens(2, 9, small_config().vocab_size, 7u);
  tiled.compress_tables(mf::TableType::fp32, mf::TableLayout::tiles);
  EXPECT_EQ(tiled.table_type(), mf::TableType::fp32);
  EXPECT_EQ(tiled.table_layout(), mf::TableLayout::tiles);
  EXPECT_LT(test::relative_error(tiled.forward(tokens), model.forward(tokens)), 1e-6);
  decltype(tiled)::Saved saved;
  test::expect_error([&] { tiled.forward(tokens, &saved); },
                     {"MemoryFormerBlock::forward", "saved", "fp32 tables in tiles", "fp32 in rows"});
}

// A compressed layer keeps no trained tables: what needs them says so, naming the storage.
TEST_P(CompressTables, CompressedLayerRefusesBackwardAndTheRowView) {
  mf::MemoryLayerOptions opt;
  opt.in_dim = 16;
  opt.out_dim = 24;
  opt.tau = 4;
  mf::MemoryLayer<float> layer(opt);
  const mf::RowMatrix<float> values = layer.compressed(GetParam()).table_values();
  layer.compress(GetParam());
  EXPECT_EQ(layer.table_values(), values);
  EXPECT_FALSE(layer.has_grad());
  const mf::RowMatrix<float> x = test::random_matrix<float>(3, 16, 1u), dy = test::random_matrix<float>(3, 24, 2u);
  const char* type = mf::to_string(GetParam());
  test::expect_error([&] { layer.backward(x, dy); }, {"MemoryLayer::backward", "tables", type, "fp32 in rows"});
  test::expect_error([&] { (void)layer.tables(); }, {"MemoryLayer::tables", type, "table_values()"});
  mf::ParameterList<float> params;
  test::expect_error([&] { layer.append_parameters("l", params); },
                     {"MemoryLayer::append_parameters", type});
  EXPECT_TRUE(params.empty());
}

TEST_P(CompressTables, TrainingForwardIsRefused) {
  mf::MemoryFormerModel<float> model(small_config());
  model.compress_tables(GetParam());
  decltype(model)::Saved saved;
  const mf::TokenMatrix tokens = test::random_tokens(1, 4, small_config().vocab_size, 5u);
  test::expect_error(
      [&] { model.forward(tokens, &saved); },
      {"MemoryFormerBlock::forward", "saved", mf::to_string(GetParam()), "fp32 in rows"});
  mf::MemoryBlock<float>::Saved mlp_saved;
  const mf::RowMatrix<float> m = mf::RowMatrix<float>::Ones(2, 32);
  test::expect_error([&] { model.block(0).mlp().forward(m, &mlp_saved); }, {"MemoryBlock::forward", "saved"});
}

INSTANTIATE_TEST_SUITE_P(Types, CompressTables, ::testing::Values(mf::TableType::bf16, mf::TableType::int8),
                         [](const auto& info) { return std::string(mf::to_string(info.param)); });

TEST(CompressTablesDouble, OnlyFp32IsAccepted) {
  mf::MemoryFormerModel<double> model(small_config());
  model.compress_tables(mf::TableType::fp32);
  test::expect_error([&] { model.compress_tables(mf::TableType::int8); },
                     {"MemoryLayer::compress", "int8", "double"});
}

}  // namespace

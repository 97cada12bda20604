// Model::compress_tables: every table stored as bf16 or int8 (or fp32 in tiles) for inference, in
// place. The reference is the same model with each table overwritten by the values its compressed
// copy stands for (PackedMemoryLayer::tables(), read element by element, not through the gather
// kernels), run on the ordinary fp32 path.
#include "test_support.hpp"

#include <vector>

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
      layer->tables() = mf::PackedMemoryLayer(*layer, type).tables();
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
  // error bounds are in test_packed_memory_layer.cpp.)
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
  const mf::RowMatrix<float> values = mf::PackedMemoryLayer(layer, GetParam()).tables();
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

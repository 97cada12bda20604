// Model::compress_tables: inference from bf16 or int8 copies of every table. The reference is the
// same model with each table overwritten by the values its compressed copy stands for
// (PackedMemoryLayer::tables(), read element by element, not through the gather kernels), run on
// the ordinary fp32 path.
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

  model.compress_tables(mf::TableType::fp32);
  EXPECT_EQ(model.table_type(), mf::TableType::fp32);
  EXPECT_EQ(model.forward(tokens), exact);  // back to the trained tables, bit for bit
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

// Tiled copies hold the same values: forward and decode agree with the row layout's.
TEST_P(CompressTables, TiledLayoutGivesTheRowLayoutsOutput) {
  mf::MemoryFormerModel<float> model(small_config());
  const mf::TokenMatrix tokens = test::random_tokens(2, 9, small_config().vocab_size, 6u);
  model.compress_tables(GetParam());
  const mf::RowMatrix<float> rows = model.forward(tokens);
  model.compress_tables(GetParam(), mf::TableLayout::tiles);
  EXPECT_EQ(model.table_layout(), mf::TableLayout::tiles);
  EXPECT_LT(test::relative_error(model.forward(tokens), rows), 1e-6);
  auto state = model.start_decoding(9);
  EXPECT_LT(test::relative_error(model.decode(tokens.row(0), state), rows.topRows(9)), 1e-5);
  model.compress_tables(mf::TableType::fp32);
  EXPECT_EQ(model.table_layout(), mf::TableLayout::rows);
}

TEST(CompressTablesLayout, Fp32WithTilesIsRejected) {
  mf::MemoryFormerModel<float> model(small_config());
  test::expect_error([&] { model.compress_tables(mf::TableType::fp32, mf::TableLayout::tiles); },
                     {"compress_tables", "layout", "tiles", "TableLayout::rows with TableType::fp32"});
}

TEST_P(CompressTables, TrainingForwardIsRefused) {
  mf::MemoryFormerModel<float> model(small_config());
  model.compress_tables(GetParam());
  decltype(model)::Saved saved;
  const mf::TokenMatrix tokens = test::random_tokens(1, 4, small_config().vocab_size, 5u);
  test::expect_error(
      [&] { model.forward(tokens, &saved); },
      {"MemoryFormerBlock::forward", "saved", mf::to_string(GetParam()), "compress_tables(TableType::fp32)"});
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
                     {"compress_tables", "int8", "double"});
}

}  // namespace

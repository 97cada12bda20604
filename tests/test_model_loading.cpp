// Loading that allocates only what it fills: no random initialisation, no gradients until training
// asks, tables read in place from the mapped file (io::Weights::map), and models written to disk
// without being held (io::write_initial_model). Initialisation is the same on any thread count.
#include "test_support.hpp"

#include <memoryformer/io/model_file.hpp>

#include <cstring>
#include <fstream>
#include <iterator>

namespace {

namespace io = mf::io;
using Model = mf::MemoryFormerModel<float>;

mf::ModelConfig small_config() {
  mf::ModelConfig c;
  c.vocab_size = 13;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  c.expand_bits = 1;
  c.seed = 21;
  return c;
}

std::string temp_path(const std::string& name) { return ::testing::TempDir() + "mf_loading_" + name; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

mf::TokenMatrix tokens() {
  mf::TokenMatrix t(1, 6);
  t << 3, 1, 4, 1, 5, 9;
  return t;
}

// Every module's has_grad(), which parameters() turns on.
template <class M>
std::vector<bool> gradients_present(M& model) {
  std::vector<bool> out{model.embedding().has_grad(), model.final_norm().has_grad(), model.lm_head().has_grad()};
  for (const auto& named : model.memory_layers()) out.push_back(named.second->has_grad());
  return out;
}

TEST(ModelLoading, LoadingAllocatesNoGradients) {
  Model model(small_config());
  const std::string path = temp_path("grads.safetensors");
  io::save_model(model, path);
  for (const io::Weights how : {io::Weights::copy, io::Weights::map}) {
    Model loaded = io::load_model<Model>(path, how);
    for (const bool present : gradients_present(loaded)) EXPECT_FALSE(present);
    EXPECT_EQ(loaded.forward(tokens()), model.forward(tokens()));
  }
  // Saving allocates none either; parameters() does, as training needs.
  io::save_model(model, path);
  for (const bool present : gradients_present(model)) EXPECT_FALSE(present);
  model.parameters();
  for (const bool present : gradients_present(model)) EXPECT_TRUE(present);
}

TEST(ModelLoading, MappedTablesPointIntoTheFile) {
  Model model(small_config());
  for (const mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const std::string path = temp_path(std::string("mapped_") + mf::to_string(type) + ".safetensors");
    io::save_model(model, path, {}, type);
    const auto file = io::SafetensorsFile::open(path);
    Model mapped = io::load_model<Model>(file, io::Weights::map);
    Model copied = io::load_model<Model>(file, io::Weights::copy);
    EXPECT_EQ(io::mapped_tables(mapped), 10) << type;
    EXPECT_EQ(io::mapped_tables(copied), 0) << type;
    for (const auto& [name, layer] : mapped.memory_layers()) {
      EXPECT_EQ(layer->table_store().stored_values(), file.data(name + ".tables")) << name;
      EXPECT_EQ(layer->table_type(), type) << name;
    }
    for (const auto& [name, layer] : copied.memory_layers())
      EXPECT_NE(layer->table_store().stored_values(), file.data(name + ".tables")) << name;
    EXPECT_EQ(mapped.forward(tokens()), copied.forward(tokens())) << type;
  }
}

TEST(ModelLoading, AMappedModelKeepsItsFileMapped) {
  Model model(small_config());
  const std::string path = temp_path("outlives.safetensors");
  io::save_model(model, path);
  const mf::RowMatrix<float> expected = model.forward(tokens());
  // The SafetensorsFile is gone when load_model returns, and the model is moved twice: the tables
  // must still be readable (ASan reports a read of an unmapped page otherwise).
  auto make = [&] { return io::load_model<Model>(path, io::Weights::map); };
  std::vector<Model> models;
  models.push_back(make());
  Model moved = std::move(models.front());
  models.clear();
  EXPECT_EQ(io::mapped_tables(moved), 10);
  EXPECT_EQ(moved.forward(tokens()), expected);
  // A copy shares the mapping and outlives the original.
  auto copy = std::make_unique<Model>(moved);
  { Model gone = std::move(moved); }
  EXPECT_EQ(copy->forward(tokens()), expected);
}

TEST(ModelLoading, MappedTablesAreForInference) {
  Model model(small_config());
  const std::string path = temp_path("inference.safetensors");
  io::save_model(model, path);
  Model mapped = io::load_model<Model>(path, io::Weights::map);
  test::expect_error([&] { mapped.parameters(); }, {"mapped file", "Weights::copy"});
  test::expect_error([&] { mapped.block(0).q().tables(); }, {"MemoryLayer::tables", "mapped file"});
  // Saving reads the values and writes the same file.
  const std::string again = temp_path("inference_again.safetensors");
  io::save_model(mapped, again);
  EXPECT_EQ(read_bytes(again), read_bytes(path));
  // Compressing makes tables of the model's own, trainable when fp32 in rows.
  mapped.compress_tables(mf::TableType::fp32);
  EXPECT_EQ(io::mapped_tables(mapped), 0);
  EXPECT_FALSE(mapped.parameters().empty());
}

TEST(ModelLoading, UnalignedFilesAreCopied) {
  Model model(small_config());
  const std::string path = temp_path("unaligned.safetensors");
  io::save_model(model, path, {}, mf::TableType::int8);
  // Four more spaces of header padding move every tensor 4 bytes off its 64-byte boundary; the
  // data, and so the checksums, are unchanged.
  std::string bytes = read_bytes(path);
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  bytes.insert(8 + header, "    ");
  header += 4;
  std::memcpy(&bytes[0], &header, 8);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  const auto file = io::SafetensorsFile::open(path);
  Model loaded = io::load_model<Model>(file, io::Weights::map);
  EXPECT_EQ(io::mapped_tables(loaded), 0);
  EXPECT_FALSE(mf::detail::table_is_mappable(file, "blocks.0.attn.q.tables", mf::TableType::int8));
  Model aligned = model;
  aligned.compress_tables(mf::TableType::int8);
  EXPECT_EQ(loaded.forward(tokens()), aligned.forward(tokens()));
}

TEST(ModelLoading, WriterStartsTensorsOnCacheLines) {
  Model model(small_config());
  const std::string path = temp_path("aligned.safetensors");
  io::save_model(model, path);
  const auto file = io::SafetensorsFile::open(path);
  std::uint64_t header = 0;
  std::memcpy(&header, read_bytes(path).data(), 8);
  EXPECT_EQ((8 + header) % 64, 0u) << "the data section starts on a 64-byte boundary";
  int aligned = 0;
  for (const io::TensorInfo& t : file.tensors())
    if ((t.end - t.begin) % 64 == 0) {
      EXPECT_EQ(t.begin % 64, 0u) << t.name;
      ++aligned;
    }
  EXPECT_GE(aligned, 10);  // every table
}

TEST(ModelLoading, InitialModelsOnDiskEqualConstructedOnes) {
  mf::ModelConfig c = small_config();
  for (const mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const std::string tag = mf::to_string(type);
    const std::string streamed = temp_path("init_" + tag + ".safetensors"),
                      saved = temp_path("saved_" + tag + ".safetensors");
    io::write_initial_model<Model>(c, streamed, type);
    Model model(c);
    io::save_model(model, saved, {}, type);
    EXPECT_EQ(read_bytes(streamed), read_bytes(saved)) << tag;
    Model compressed = model;
    compressed.compress_tables(type);
    EXPECT_EQ(io::load_model<Model>(streamed).forward(tokens()), compressed.forward(tokens())) << tag;
  }
  // Dense models, and tables of many streamed blocks.
  io::write_initial_model<mf::DenseModel<float>>(c, temp_path("init_dense.safetensors"));
  mf::DenseModel<float> dense(c);
  io::save_model(dense, temp_path("saved_dense.safetensors"));
  EXPECT_EQ(read_bytes(temp_path("init_dense.safetensors")), read_bytes(temp_path("saved_dense.safetensors")));
  // Blocks of 5 rows: every table takes many, the last one short.
  Model model(c);
  io::save_model(model, temp_path("saved_blocks.safetensors"), {}, mf::TableType::int8);
  io::write_initial_model<Model>(c, temp_path("init_blocks.safetensors"), mf::TableType::int8, {}, mf::Context(3), 5 * 20 * 4);
  EXPECT_EQ(read_bytes(temp_path("init_blocks.safetensors")), read_bytes(temp_path("saved_blocks.safetensors")));
}

TEST(ModelLoading, InitialisationIsTheSameOnAnyThreadCount) {
  mf::ModelConfig c = small_config();
  c.d_model = 64;
  c.tau = 8;
  mf::set_num_threads(1);
  Model one(c);
  mf::set_num_threads(3);
  Model three(c);
  mf::set_num_threads(0);
  auto a = one.parameters(), b = three.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].value_map(), b[i].value_map()) << a[i].name;
  // A layer's rows drawn alone are the rows it was built with, and look N(0, sqrt(2 / (5 d))).
  const mf::MemoryLayer<float>& q = one.block(0).q();
  mf::RowMatrix<float> rows(7, q.out_dim());
  q.draw_table_rows(100, 7, rows.data());
  EXPECT_EQ(rows, q.tables().middleRows(100, 7));
  const auto t = q.tables();
  const double mean = t.mean(), var = (t.array() - mean).square().mean(), want = 2.0 / (5 * 64);
  EXPECT_NEAR(mean, 0.0, 0.01 * std::sqrt(want));
  EXPECT_NEAR(var / want, 1.0, 0.01);
  test::expect_error([&] { q.draw_table_rows(q.table_store().rows() - 1, 2, rows.data()); },
                     {"draw_table_rows", "rows", "within"});
}

TEST(ModelLoading, UnallocatedTablesAreAClearError) {
  Model model(small_config(), mf::Init::none);
  EXPECT_FALSE(model.block(0).q().table_store().is_allocated());
  test::expect_error([&] { model.forward(tokens()); }, {"MemoryLayer::forward", "not allocated", "load_model"});
  test::expect_error([&] { model.parameters(); }, {"not allocated"});
}

}  // namespace

// A model split by outputs (output_shard.hpp, Model::shard_outputs, io::load_model with a shard),
// without MPI: P threads each load their part of one file and meet in an in-process ColumnGather.
// Every part's logits and decoded logits must equal the whole model's, for every table type, while
// each part holds only its columns. distributed/ runs the same code over MPI (tests/distributed).
#include "test_support.hpp"

#include <memoryformer/io/model_file.hpp>

#include <condition_variable>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// P threads meeting in gather(): each hands in its columns and gets the whole rows, assembled here
// from every part's block (a stand-in for MPI_Allgatherv).
class Rendezvous {
 public:
  explicit Rendezvous(int parts) : parts_(parts), blocks_(static_cast<std::size_t>(parts)) {}

  mf::RowMatrix<float> exchange(int part, const mf::RowMatrix<float>& local, Eigen::Index width) {
    std::unique_lock<std::mutex> lock(mutex_);
    blocks_[static_cast<std::size_t>(part)] = local;
    wait_for_all(lock);
    mf::RowMatrix<float> whole(local.rows(), width);
    Eigen::Index column = 0;
    for (const mf::RowMatrix<float>& block : blocks_) {
      whole.middleCols(column, block.cols()) = block;
      column += block.cols();
    }
    EXPECT_EQ(column, width);
    wait_for_all(lock);  // nobody overwrites a block before every part has read it
    return whole;
  }

 private:
  void wait_for_all(std::unique_lock<std::mutex>& lock) {
    const long generation = generation_;
    if (++arrived_ == parts_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
  }

  int parts_, arrived_ = 0;
  long generation_ = 0;
  std::vector<mf::RowMatrix<float>> blocks_;
  std::mutex mutex_;
  std::condition_variable cv_;
};

class ThreadGather : public mf::ColumnGather<float> {
 public:
  ThreadGather(std::shared_ptr<Rendezvous> rendezvous, int part) : rendezvous_(std::move(rendezvous)), part_(part) {}
  mf::RowMatrix<float> gather(const mf::RowMatrix<float>& local, Eigen::Index width) const override {
    return rendezvous_->exchange(part_, local, width);
  }

 private:
  std::shared_ptr<Rendezvous> rendezvous_;
  int part_;
};

using Model = mf::MemoryFormerModel<float>;

mf::ModelConfig config() {
  mf::ModelConfig c;
  c.vocab_size = 37;
  c.d_model = 32;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 4;
  c.expand_bits = 1;  // Memory Block width (4 + 1) * 8 = 40
  c.seed = 5;
  return c;
}

std::string saved_model(const std::string& tag, mf::TableType type) {
  const std::string path = ::testing::TempDir() + "mf_shard_" + tag + ".safetensors";
  Model model(config());
  mf::io::save_model(model, path, {}, type);
  return path;
}

// Runs body(part, model) on `parts` threads, each with its part of the file's model.
template <class Body>
void with_parts(const std::string& path, int parts, const Body& body) {
  const auto file = mf::io::SafetensorsFile::open(path);
  const auto rendezvous = std::make_shared<Rendezvous>(parts);
  std::vector<std::thread> threads;
  for (int part = 0; part < parts; ++part)
    threads.emplace_back([&, part] {
      mf::OutputShard<float> shard{part, parts, std::make_shared<ThreadGather>(rendezvous, part)};
      Model model = mf::io::load_model<Model>(file, shard);
      model.set_context(mf::Context(1));  // each part on its own pool, as each rank would be
      body(part, model);
    });
  for (std::thread& t : threads) t.join();
}

TEST(OutputShard, EveryPartComputesTheWholeModelsLogits) {
  const mf::TokenMatrix tokens = test::random_tokens(2, 9, config().vocab_size, 3);
  for (const mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const std::string path = saved_model(std::string("logits_") + mf::to_string(type), type);
    const Model whole = mf::io::load_model<Model>(path);
    const mf::RowMatrix<float> expected = whole.forward(tokens);
    for (const int parts : {2, 3}) {
      std::vector<mf::RowMatrix<float>> got(static_cast<std::size_t>(parts));
      with_parts(path, parts, [&](int part, Model& model) { got[static_cast<std::size_t>(part)] = model.forward(tokens); });
      for (const auto& logits : got)
        EXPECT_LT(test::relative_error(logits, expected), 1e-5) << mf::to_string(type) << ", " << parts << " parts";
    }
  }
}

TEST(OutputShard, EveryPartDecodesLikeTheWholeModel) {
  const std::string path = saved_model("decode", mf::TableType::int8);
  const Model whole = mf::io::load_model<Model>(path);
  const mf::TokenMatrix tokens = test::random_tokens(1, 7, config().vocab_size, 8);
  const mf::RowMatrix<float> expected = whole.forward(tokens);
  std::vector<mf::RowMatrix<float>> got(3);
  with_parts(path, 3, [&](int part, Model& model) {
    auto state = model.start_decoding(tokens.cols());
    mf::RowMatrix<float> rows(tokens.cols(), config().vocab_size);
    rows.topRows(3) = model.decode(tokens.leftCols(3), state);  // a prompt, then one token at a time
    for (Eigen::Index t = 3; t < tokens.cols(); ++t) rows.row(t) = model.decode(tokens.middleCols(t, 1), state);
    got[static_cast<std::size_t>(part)] = rows;
  });
  for (const auto& rows : got) EXPECT_LT(test::relative_error(rows, expected), 1e-5);
}

// A part holds its columns of every table and bias and its rows of the LM head, no more.
TEST(OutputShard, APartHoldsOnlyItsColumns) {
  const std::string path = saved_model("sizes", mf::TableType::fp32);
  Model whole = mf::io::load_model<Model>(path);
  std::vector<Eigen::Index> widths(3, 0), head_rows(3, 0);
  with_parts(path, 3, [&](int part, Model& model) {
    for (const auto& [name, layer] : model.memory_layers()) {
      const mf::detail::Range c = mf::OutputShard<float>::columns_of(layer->out_dim(), 3, part);
      EXPECT_EQ(layer->table_store().width(), c.size()) << name;
      EXPECT_EQ(layer->bias().cols(), c.size()) << name;
    }
    widths[static_cast<std::size_t>(part)] = model.memory_layers().front().second->table_store().width();
    head_rows[static_cast<std::size_t>(part)] = model.lm_head().weight().rows();
    EXPECT_EQ(model.lm_head().out_dim(), config().vocab_size);
  });
  EXPECT_EQ(widths[0] + widths[1] + widths[2], config().d_model);
  EXPECT_EQ(head_rows[0] + head_rows[1] + head_rows[2], config().vocab_size);
  for (int part = 0; part < 3; ++part) EXPECT_GE(widths[static_cast<std::size_t>(part)], 1);
  // Part 1's columns of a table are the whole table's, bit for bit.
  with_parts(path, 3, [&](int part, Model& model) {
    const auto [name, layer] = model.memory_layers()[2];  // a copy: memory_layers() is a temporary
    const mf::MemoryLayer<float>& full = *whole.memory_layers()[2].second;
    const mf::detail::Range c = mf::OutputShard<float>::columns_of(full.out_dim(), 3, part);
    EXPECT_EQ(mf::RowMatrix<float>(layer->tables()), mf::RowMatrix<float>(full.tables().middleCols(c.begin, c.size())))
        << name;
  });
}

TEST(OutputShard, RefusesWhatASplitCannotDo) {
  auto gather = std::make_shared<ThreadGather>(std::make_shared<Rendezvous>(2), 0);
  Model trained(config());
  test::expect_error([&] { trained.block(0).q().shard_output({0, 2, gather}); },
                     {"MemoryLayer::shard_output", "tables", "allocated", "Init::none"});
  mf::MemoryLayer<float> layer(trained.block(0).q().options(), mf::Init::none);
  test::expect_error([&] { layer.shard_output({0, 33, gather}); }, {"shard.parts", "33", "32 output columns"});
  test::expect_error([&] { layer.shard_output({2, 2, gather}); }, {"shard", "2 of 2", "part in [0, parts)"});
  test::expect_error([&] { layer.shard_output({0, 2, nullptr}); }, {"shard.gather", "null"});
  layer.shard_output({0, 2, gather});
  test::expect_error([&] { layer.shard_output({0, 2, gather}); }, {"already sharded"});
  const mf::Buckets<float> buckets = layer.hash()(mf::RowMatrix<float>::Ones(1, 32), layer.context());
  test::expect_error([&] { layer.backward_scores(buckets, mf::RowMatrix<float>::Zero(1, 32)); },
                     {"MemoryLayer::backward", "sharded", "for inference"});
  mf::Linear<float> head(32, 37);
  head.shard_output({1, 2, gather});
  EXPECT_EQ(head.out_dim(), 37);
  EXPECT_EQ(head.weight().rows(), 37 - 16);  // part 1 of 37 rows: [16, 37)
  test::expect_error([&] { head.backward(mf::RowMatrix<float>::Ones(1, 32), mf::RowMatrix<float>::Zero(1, 37)); },
                     {"Linear::backward", "sharded", "for inference"});
}

// The ranks of a sharded load share the checksum hashing: the parts cover every tensor once.
TEST(OutputShard, ChecksumPartsCoverEveryTensorOnce) {
  const std::string path = saved_model("checksums", mf::TableType::fp32);
  const std::string damaged = "blocks.1.mlp.up.bias";  // 40 values
  std::size_t offset = 0;
  {
    const auto file = mf::io::SafetensorsFile::open(path);
    offset = static_cast<std::size_t>(file.data(damaged) - static_cast<const std::uint8_t*>(file.mapping().get()));
  }
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  const char byte = static_cast<char>(f.get());
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(byte ^ 0x40));
  f.close();
  const auto file = mf::io::SafetensorsFile::open(path, mf::io::Checksums::report);
  ASSERT_EQ(file.checksum_mismatches().size(), 1u);
  for (const int parts : {2, 3}) {
    std::size_t found = 0;
    for (int part = 0; part < parts; ++part)
      for (const auto& bad : file.checksum_mismatches(part, parts)) {
        EXPECT_EQ(bad.tensor, damaged);
        ++found;
      }
    EXPECT_EQ(found, 1u) << parts << " parts";
  }
  test::expect_error([&] { file.checksum_mismatches(3, 3); }, {"part", "3 of 3"});
  float out[4];
  test::expect_error([&] { file.read_elements(damaged, 39, 2, out); }, {"read_elements", "[39, 41)", "40 elements"});
  file.read_elements(damaged, 38, 2, out);  // the last two of the damaged tensor's 40: in range
}

}  // namespace

// MemoryFormer::mpi under mpiexec (tests/distributed/CMakeLists.txt runs it with 2 and 3 ranks):
// a model loaded sharded over the ranks computes the single-process model's logits and decoded
// logits, each rank holding only its columns, and a failure on one rank ends the step on every
// rank with that rank's message. Every rank computes the single-process reference itself.
#include "test_support.hpp"

#include <memoryformer/distributed/gradient_sum.hpp>
#include <memoryformer/distributed/sharded_loading.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>

namespace {

namespace dist = mf::distributed;
using Model = mf::MemoryFormerModel<float>;

const dist::Communicator& world() {
  static const dist::Communicator comm;
  return comm;
}

mf::ModelConfig config() {
  mf::ModelConfig c;
  c.vocab_size = 41;
  c.d_model = 48;
  c.n_heads = 2;
  c.n_layers = 2;
  c.tau = 8;
  c.expand_bits = 2;  // Memory Block width (8 + 2) * 6 = 60
  c.seed = 9;
  return c;
}

// Rank 0 writes the model file, the others wait for it; the name tells runs of different sizes apart.
std::string shared_model(const std::string& tag, mf::TableType type) {
  const std::string path = ::testing::TempDir() + "mf_mpi_" + std::to_string(world().size()) + "_" + tag + ".safetensors";
  world().run_together([&] {
    if (world().rank() != 0) return;
    Model model(config());
    mf::io::save_model(model, path, {}, type);
  });
  return path;
}

// The sum over ranks, for sizes each rank holds part of.
std::int64_t summed(std::int64_t value) {
  world().all_reduce_sum(&value, 1);
  return value;
}

TEST(Distributed, ShardedLogitsEqualOneProcess) {
  const mf::TokenMatrix tokens = test::random_tokens(2, 11, config().vocab_size, 4);
  for (const mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const std::string path = shared_model(std::string("logits_") + mf::to_string(type), type);
    const mf::RowMatrix<float> expected = mf::io::load_model<Model>(path).forward(tokens);
    const Model sharded = dist::load_sharded_model<Model>(path, world());
    EXPECT_LT(test::relative_error(sharded.forward(tokens), expected), 1e-5) << mf::to_string(type);
  }
}

TEST(Distributed, ShardedDecodeEqualsOneProcess) {
  const std::string path = shared_model("decode", mf::TableType::int8);
  const mf::TokenMatrix tokens = test::random_tokens(1, 9, config().vocab_size, 6);
  Model whole = mf::io::load_model<Model>(path);
  Model sharded = dist::load_sharded_model<Model>(path, world());
  auto whole_state = whole.start_decoding(tokens.cols());
  auto state = sharded.start_decoding(tokens.cols());
  // A prompt of 4, then one token at a time.
  EXPECT_LT(test::relative_error(sharded.decode(tokens.leftCols(4), state), whole.decode(tokens.leftCols(4), whole_state)), 1e-5);
  for (Eigen::Index t = 4; t < tokens.cols(); ++t)
    EXPECT_LT(test::relative_error(sharded.decode(tokens.middleCols(t, 1), state),
                                   whole.decode(tokens.middleCols(t, 1), whole_state)),
              1e-5)
        << "token " << t;
}

// Each rank holds its columns of every table and its rows of the LM head; together, the whole.
TEST(Distributed, EachRankHoldsOnlyItsShard) {
  const std::string path = shared_model("sizes", mf::TableType::fp32);
  Model sharded = dist::load_sharded_model<Model>(path, world());
  const Model whole = mf::io::load_model<Model>(path);
  for (const auto& [name, layer] : sharded.memory_layers()) {
    const Eigen::Index width = layer->table_store().width();
    EXPECT_EQ(width, mf::OutputShard<float>::columns_of(layer->out_dim(), world().size(), world().rank()).size()) << name;
    EXPECT_LT(width, layer->out_dim()) << name;
    EXPECT_EQ(summed(width), layer->out_dim()) << name;
  }
  EXPECT_EQ(summed(sharded.lm_head().weight().rows()), config().vocab_size);
  EXPECT_EQ(sharded.lm_head().out_dim(), config().vocab_size);
}

// raise_first/run_together: every rank throws the failing rank's error, with its kind.
TEST(Distributed, AFailureOnOneRankIsThrownOnEveryRank) {
  const int last = world().size() - 1;
  try {
    world().run_together([&] {
      if (world().rank() == last) throw mf::FileError(ENOENT, "/nowhere/x.safetensors", "open");
    });
    ADD_FAILURE() << "no rank threw";
  } catch (const dist::DistributedError& e) {
    EXPECT_EQ(e.rank(), last);
    EXPECT_EQ(e.kind(), dist::ErrorKind::file);
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(last) + ": "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/nowhere/x.safetensors"), std::string::npos) << e.what();
  }
  world().run_together([] {});  // nothing failed: nothing thrown
}

TEST(Distributed, AMissingFileIsAFileErrorOnEveryRank) {
  const std::string missing = ::testing::TempDir() + "mf_mpi_no_such_model.safetensors";
  test::expect_error([&] { dist::load_sharded_model<Model>(missing, world()); }, {"rank 0", missing.c_str()});
  try {
    dist::load_sharded_model<Model>(missing, world());
  } catch (const dist::DistributedError& e) {
    EXPECT_EQ(e.kind(), dist::ErrorKind::file);
  }
}

// The ranks share the checksum hashing: whichever rank hashes the damaged tensor, all ranks fail.
TEST(Distributed, ADamagedTensorFailsEveryRank) {
  const std::string path = shared_model("damaged", mf::TableType::fp32);
  world().run_together([&] {
    if (world().rank() != 0) return;
    const auto file = mf::io::SafetensorsFile::open(path);
    const auto offset = file.data("blocks.1.mlp.down.bias") - static_cast<const std::uint8_t*>(file.mapping().get());
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put('\x7f');
  });
  try {
    dist::load_sharded_model<Model>(path, world());
    ADD_FAILURE() << "the damaged file loaded";
  } catch (const dist::DistributedError& e) {
    EXPECT_EQ(e.kind(), dist::ErrorKind::format);
    EXPECT_NE(std::string(e.what()).find("blocks.1.mlp.down.bias"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
}

// The gradients of a batch's mean loss, from rows [first, first + count) of its `tokens.rows()`:
// this rows' share, summed over the ranks by `sum` when there is one.
void gradients(Model& model, mf::ParameterList<float>& params, const mf::TokenMatrix& tokens,
               const mf::TokenMatrix& targets, Eigen::Index first, Eigen::Index count, dist::GradientSum* sum) {
  model.zero_grad();
  Model::Saved saved;
  mf::RowMatrix<float> dlogits;
  mf::cross_entropy<float>(model.forward(tokens.middleRows(first, count), &saved), targets.middleRows(first, count), &dlogits);
  dlogits *= static_cast<float>(count) / static_cast<float>(tokens.rows());
  model.backward(saved, dlogits);
  if (sum != nullptr) sum->sum(params);
}

void adamw_step(mf::ParameterList<float>& params, mf::AdamW<float>& optimizer) {
  optimizer.step(params, 1e-2, mf::clip_scale(mf::global_grad_norm(params), 1.0));
}

// Data-parallel steps: each rank takes its rows of every batch and the gradients are summed. The
// sums must be the whole batch's gradients of one process, to rounding, and so must the parameters
// after each step; the parameters stay bit for bit the same on every rank. Tables are summed by
// touched rows at tau 8 (a step touches few of a table's 256 rows), whole at tau 4.
TEST(Distributed, DataParallelStepsEqualOneProcessOnTheWholeBatch) {
  for (const int tau : {8, 4}) {
    mf::ModelConfig c = config();
    c.tau = tau;
    c.expand_bits = tau == 8 ? 2 : 0;
    Model single(c), parallel(c);
    mf::ParameterList<float> single_params = single.parameters(), params = parallel.parameters();
    // AdamW's update is g / (sqrt(v) + eps): with the default eps 1e-8 a first step moves a value by
    // about lr * sign(g), so a gradient at rounding level (attention's key bias: zero in exact
    // arithmetic, as softmax ignores a shift common to all keys) moves it by +-lr at random. An eps
    // above rounding keeps the update a smooth function of the gradient, so "equal to rounding" holds.
    mf::AdamWOptions adam;
    adam.eps = 1e-4;
    mf::AdamW<float> single_optimizer(single_params, adam), optimizer(params, adam);
    dist::GradientSum sum(world(), tau == 8 ? 1.0 : 0.0);
    const Eigen::Index batch = 6, seq = 8;
    const mf::detail::Range mine = mf::detail::split_range(batch, world().size(), world().rank());
    for (unsigned step = 0; step < 3; ++step) {
      const mf::TokenMatrix tokens = test::random_tokens(batch, seq, c.vocab_size, 20 + step),
                            targets = test::random_tokens(batch, seq, c.vocab_size, 40 + step);
      gradients(single, single_params, tokens, targets, 0, batch, nullptr);
      gradients(parallel, params, tokens, targets, mine.begin, mine.size(), &sum);
      EXPECT_GT(tau == 8 ? sum.last_traffic().sparse_tables : sum.last_traffic().dense_tables, 0)
          << "step " << step << ", tau " << tau;
      // Against the whole gradient's norm: the key bias's own norm is rounding.
      const double norm = mf::global_grad_norm(single_params);
      for (std::size_t i = 0; i < params.size(); ++i)
        EXPECT_LT((params[i].grad_map() - single_params[i].grad_map()).norm() / norm, 1e-6)
            << params[i].name << ", step " << step << ", tau " << tau;
      adamw_step(single_params, single_optimizer);
      adamw_step(params, optimizer);
      // The biases start at 0: their values are the updates alone, whose rounding the division by
      // sqrt(v) can magnify ten times.
      for (std::size_t i = 0; i < params.size(); ++i)
        EXPECT_LT(test::relative_error(params[i].value_map(), single_params[i].value_map()), 1e-4)
            << params[i].name << ", step " << step << ", tau " << tau;
    }
    // Bit for bit the same parameters on every rank: a checksum of all of them, gathered.
    std::uint64_t hash = 1469598103934665603ull;  // FNV-1a over the bytes
    for (const auto& p : params)
      for (Eigen::Index j = 0; j < p.size() * static_cast<Eigen::Index>(sizeof(float)); ++j)
        hash = (hash ^ reinterpret_cast<const unsigned char*>(p.value)[j]) * 1099511628211ull;
    std::vector<std::int64_t> hashes(static_cast<std::size_t>(world().size()));
    const std::int64_t mine_hash = static_cast<std::int64_t>(hash);
    world().all_gather(&mine_hash, std::vector<int>(hashes.size(), 1), hashes.data());
    for (const std::int64_t h : hashes) EXPECT_EQ(h, mine_hash) << "tau " << tau;
  }
}

// Ranks other than 0 print only their failures, each prefixed with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", world().rank(), result.file_name() ? result.file_name() : "?",
                   result.line_number(), result.summary());
  }
};

}  // namespace

int main(int argc, char** argv) {
  const dist::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (world().rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter);
  }
  return RUN_ALL_TESTS();
}

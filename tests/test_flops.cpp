// MAC counts and table sizes against docs/method.md §4. Expected values are written out as integers
// computed by hand from the formulas (not by the library), then compared with the paper's printed
// rounding where docs/method.md says the two agree.
#include "test_support.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace {

// The counts are constexpr: a valid call folds at compile time.
static_assert(mf::dense_block_macs(2048, 512) == 10737418240, "Table 1 tiny, dense");
static_assert(mf::memory_block_table_bytes(512, 8, 2, 2) == 88080384, "Memory Block, e = 2");

constexpr std::int64_t kSeq = 2048;  // Table 1's sequence length

// Table 1 models (docs/method.md §3), tau = 8 so K = d / 8.
struct Model {
  const char* name;
  std::int64_t d;
};
constexpr Model kTiny{"tiny", 512};
constexpr Model kSmall{"small", 768};
constexpr Model kBase{"base", 1024};

// x rounded to `digits` decimals, in units of `unit` (1e9 for G, 1e6 for decimal MB).
double rounded(std::int64_t x, double unit, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(static_cast<double>(x) / unit * scale) / scale;
}

double giga1(std::int64_t macs) { return rounded(macs, 1e9, 1); }
double mega1(std::int64_t bytes) { return rounded(bytes, 1e6, 1); }

TEST(Flops, LayerMacsAndMemoryLayerIsExactlyDenseOverTau) {
  EXPECT_EQ(mf::dense_layer_macs(3, 512, 768), 3 * 512 * 768);
  EXPECT_EQ(mf::dense_layer_macs(0, 512, 768), 0);
  EXPECT_EQ(mf::memory_layer_macs(3, 512, 768, 8), 3 * 64 * 768);
  for (int tau : {1, 2, 4, 8, 16}) {
    for (std::int64_t tokens : {1, 7, 2048}) {
      const std::int64_t dense = mf::dense_layer_macs(tokens, 1024, 640);
      const std::int64_t memory = mf::memory_layer_macs(tokens, 1024, 640, tau);
      EXPECT_EQ(dense % tau, 0) << "tau " << tau;
      EXPECT_EQ(memory, dense / tau) << "tau " << tau << ", tokens " << tokens;
    }
  }
}

TEST(Flops, BlockFormulasEqualHandComputedCounts) {
  // 2s^2d, 12sd^2 and 6Ksd at s = 2048, computed outside the library.
  struct Row {
    Model model;
    std::int64_t attention, dense_rest, mf_rest;
  };
  const Row rows[] = {
      {kTiny, 4294967296, 6442450944, 402653184},
      {kSmall, 6442450944, 14495514624, 905969664},
      {kBase, 8589934592, 25769803776, 1610612736},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.model.name);
    EXPECT_EQ(mf::attention_macs(kSeq, r.model.d), r.attention);
    EXPECT_EQ(mf::dense_block_macs_without_attention(kSeq, r.model.d), r.dense_rest);
    EXPECT_EQ(mf::dense_block_macs(kSeq, r.model.d), r.attention + r.dense_rest);
    EXPECT_EQ(mf::memoryformer_block_macs_without_attention(kSeq, r.model.d, 8), r.mf_rest);
    EXPECT_EQ(mf::memoryformer_block_macs(kSeq, r.model.d, 8), r.attention + r.mf_rest);
  }
}

TEST(Flops, Table1DenseColumnsMatchPaperRounding) {
  EXPECT_DOUBLE_EQ(giga1(mf::dense_block_macs(kSeq, kTiny.d)), 10.7);
  EXPECT_DOUBLE_EQ(giga1(mf::dense_block_macs(kSeq, kSmall.d)), 20.9);
  EXPECT_DOUBLE_EQ(giga1(mf::dense_block_macs(kSeq, kBase.d)), 34.4);
  EXPECT_DOUBLE_EQ(giga1(mf::dense_block_macs_without_attention(kSeq, kTiny.d)), 6.4);
  EXPECT_DOUBLE_EQ(giga1(mf::dense_block_macs_without_attention(kSeq, kSmall.d)), 14.5);
  EXPECT_DOUBLE_EQ(giga1(mf::dense_block_macs_without_attention(kSeq, kBase.d)), 25.8);
}

TEST(Flops, Table1MemoryFormerTinyAndBaseMatchPaperRounding) {
  EXPECT_DOUBLE_EQ(giga1(mf::memoryformer_block_macs(kSeq, kTiny.d, 8)), 4.7);
  EXPECT_DOUBLE_EQ(giga1(mf::memoryformer_block_macs(kSeq, kBase.d, 8)), 10.2);
  EXPECT_DOUBLE_EQ(giga1(mf::memoryformer_block_macs_without_attention(kSeq, kTiny.d, 8)), 0.4);
  EXPECT_DOUBLE_EQ(giga1(mf::memoryformer_block_macs_without_attention(kSeq, kBase.d, 8)), 1.6);
}

TEST(Flops, Table1MemoryFormerSmallIsWhatTheFormulaGivesNotThePrint) {
  // The paper prints 7.4G and 1.0G; 2s^2d + 6Ksd gives 7.348G and 0.906G (docs/method.md §4).
  const std::int64_t total = mf::memoryformer_block_macs(kSeq, kSmall.d, 8);
  const std::int64_t rest = mf::memoryformer_block_macs_without_attention(kSeq, kSmall.d, 8);
  EXPECT_DOUBLE_EQ(rounded(total, 1e9, 2), 7.35);
  EXPECT_DOUBLE_EQ(rounded(rest, 1e9, 2), 0.91);
  EXPECT_EQ(total, 7348420608);
  EXPECT_EQ(rest, 905969664);
}

TEST(Flops, ExactBlockCountFromLayerShapes) {
  for (const Model& m : {kTiny, kSmall, kBase}) {
    SCOPED_TRACE(m.name);
    const std::int64_t d = m.d, k = d / 8, hidden = 10 * k;  // tau = 8, e = 2
    const std::int64_t layers = 3 * mf::memory_layer_macs(kSeq, d, d, 8) +
                                mf::memory_layer_macs(kSeq, d, hidden, 8) +
                                mf::memory_layer_macs(kSeq, hidden, d, 10);
    const std::int64_t exact = mf::memoryformer_block_macs_exact(kSeq, d, 8, 2);
    EXPECT_EQ(exact, mf::attention_macs(kSeq, d) + layers);
    // 5.25Ksd = 21Ksd / 4, against the paper's 6Ksd.
    EXPECT_EQ(4 * (exact - mf::attention_macs(kSeq, d)), 21 * k * kSeq * d);
    EXPECT_LT(exact, mf::memoryformer_block_macs(kSeq, d, 8));
  }
  EXPECT_EQ(mf::memoryformer_block_macs_exact(kSeq, 512, 8, 2), 4647288832);
  // The two conventions agree when e = tau, i.e. the up layer is 2d wide.
  for (int tau : {1, 2, 4, 8}) {
    EXPECT_EQ(mf::memoryformer_block_macs_exact(kSeq, 512, tau, tau),
              mf::memoryformer_block_macs(kSeq, 512, tau))
        << "tau " << tau;
  }
  // tau + e = 16 is the largest block ModelConfig builds, and so the largest one counted.
  EXPECT_EQ(mf::memoryformer_block_macs_exact(4, 32, 8, 8),
            mf::attention_macs(4, 32) + 4 * 4 * (4 * 32 + 16 * 4));
  test::expect_error([] { mf::memoryformer_block_macs_exact(4, 32, 16, 1); },
                     {"expand_bits = 1", "tau + expand_bits <= 16"});
}

TEST(Flops, QueryLayerTableMemoryInFp16) {
  // d = h = 512: K * 2^tau * 512 values of 2 bytes.
  EXPECT_EQ(mf::memory_layer_table_bytes(512, 512, 4, 2), 2097152);
  EXPECT_EQ(mf::memory_layer_table_bytes(512, 512, 8, 2), 16777216);
  EXPECT_EQ(mf::memory_layer_table_values(512, 512, 8), 64 * 256 * 512);
  EXPECT_DOUBLE_EQ(mega1(mf::memory_layer_table_bytes(512, 512, 4, 2)), 2.1);
  EXPECT_DOUBLE_EQ(mega1(mf::memory_layer_table_bytes(512, 512, 8, 2)), 16.8);
  // The layer form and the chunk form agree whenever tau divides d.
  EXPECT_EQ(mf::memory_layer_table_bytes(512, 512, 4, 2), mf::memory_table_bytes(128, 4, 512, 2));
  EXPECT_EQ(mf::memory_layer_table_values(512, 512, 8), mf::memory_table_values(64, 8, 512));
}

TEST(Flops, QueryLayerTau10UsesFiftyOneChunks) {
  // The paper's tau = 10 row: K = 51 chunks cover 510 of the 512 dims, so only the chunk form
  // expresses it; the layer form refuses a d that tau does not divide.
  EXPECT_EQ(mf::memory_table_bytes(51, 10, 512, 2), 53477376);
  EXPECT_DOUBLE_EQ(mega1(mf::memory_table_bytes(51, 10, 512, 2)), 53.5);
  EXPECT_EQ(mf::memory_layer_table_bytes(510, 512, 10, 2), mf::memory_table_bytes(51, 10, 512, 2));
  test::expect_error([] { mf::memory_layer_table_bytes(512, 512, 10, 2); },
                     {"memory_layer_table_bytes", "in_dim", "512", "multiple of tau = 10"});
}

// Paper Table 3 prints 0.14 / 0.07 / 0.06 G for tau = 4 / 8 / 10. One Memory Layer, d = h = 512,
// s = 2048, K = 128 / 64 / 51 (the chunk counts of its memory column) gives 0.134 / 0.067 / 0.053 G:
// rounded up to two decimals these are the printed values; rounded to nearest two of them are not.
TEST(Flops, Table3FlopsColumnIsOneLayerRoundedUp) {
  const std::int64_t chunks[] = {128, 64, 51};
  const double printed[] = {0.14, 0.07, 0.06}, nearest[] = {0.13, 0.07, 0.05};
  for (int i = 0; i < 3; ++i) {
    const std::int64_t macs = mf::memory_chunk_macs(kSeq, chunks[i], 512);
    EXPECT_EQ(macs, kSeq * chunks[i] * 512);
    EXPECT_DOUBLE_EQ(std::ceil(static_cast<double>(macs) / 1e7) / 100, printed[i]) << "K = " << chunks[i];
    EXPECT_DOUBLE_EQ(rounded(macs, 1e9, 2), nearest[i]) << "K = " << chunks[i];
  }
  // Where tau divides d the layer form gives the same count.
  EXPECT_EQ(mf::memory_chunk_macs(kSeq, 64, 512), mf::memory_layer_macs(kSeq, 512, 512, 8));
  EXPECT_EQ(mf::memory_chunk_macs(kSeq, 128, 512), mf::memory_layer_macs(kSeq, 512, 512, 4));
  test::expect_error([] { mf::memory_chunk_macs(1, -1, 512); }, {"memory_chunk_macs", "chunks", "-1"});
}

TEST(Flops, MemoryBlockTableMemoryInFp16) {
  // d = 512, tau = 8, K = 64: up [64, 256, (8+e)*64] + down [64, 2^(8+e), 512], 2 bytes each.
  const std::int64_t bytes[] = {33554432, 52428800, 88080384, 157286400};
  const double printed[] = {33.6, 52.4, 88.1, 157.3};
  for (int e = 0; e < 4; ++e) {
    SCOPED_TRACE("e = " + std::to_string(e));
    EXPECT_EQ(mf::memory_block_table_bytes(512, 8, e, 2), bytes[e]);
    EXPECT_DOUBLE_EQ(mega1(mf::memory_block_table_bytes(512, 8, e, 2)), printed[e]);
    EXPECT_EQ(mf::memory_block_table_values(512, 8, e),
              mf::memory_table_values(64, 8, (8 + e) * 64) + mf::memory_table_values(64, 8 + e, 512));
  }
}

TEST(Flops, BadArgumentsThrowNamingTheArgument) {
  test::expect_error([] { mf::memory_layer_macs(1, 512, 512, 0); }, {"memory_layer_macs", "tau", "1..16"});
  test::expect_error([] { mf::memory_layer_macs(1, 512, 512, 17); }, {"tau", "17", "1..16"});
  test::expect_error([] { mf::memoryformer_block_macs(2048, 500, 8); },
                     {"memoryformer_block_macs", "d", "500", "multiple of tau = 8"});
  test::expect_error([] { mf::dense_layer_macs(-1, 4, 4); }, {"dense_layer_macs", "tokens", "-1", ">= 0"});
  test::expect_error([] { mf::dense_block_macs(2048, -5); }, {"dense_block_macs", "d", "-5"});
  test::expect_error([] { mf::attention_macs(-2, 8); }, {"attention_macs", "s", "-2"});
  test::expect_error([] { mf::memoryformer_block_macs_exact(-3, 512, 8, 2); },
                     {"memoryformer_block_macs_exact", "s", "-3"});
  test::expect_error([] { mf::memoryformer_block_macs_exact(2048, 512, 8, 9); },
                     {"expand_bits", "9", "tau + expand_bits <= 16"});
  test::expect_error([] { mf::memory_block_table_bytes(512, 8, -1, 2); }, {"expand_bits", "-1", ">= 0"});
  test::expect_error([] { mf::memory_block_table_bytes(512, 8, 2, 0); }, {"bytes_per_value", "0", ">= 1"});
  test::expect_error([] { mf::memory_table_values(51, 17, 512); }, {"memory_table_values", "bits", "17", "1..16"});
  test::expect_error([] { mf::memory_layer_macs(1, 0, 512, 8); }, {"memory_layer_macs", "in_dim", "0", "positive"});
  test::expect_error([] { mf::memory_table_values(-1, 8, 512); }, {"chunks", "-1"});
}

// HashShape is the one definition of the hash's limits: the counts, SignHash, MemoryLayer and
// ModelConfig accept exactly the same (d, tau), and refuse the rest naming tau or the width.
TEST(Flops, CountsAndModulesAcceptTheSameHashShapes) {
  struct Case {
    int d, tau;
    bool valid;
  };
  const Case cases[] = {{64, 8, true},  {64, 16, true}, {48, 16, true},  {7, 1, true},  {64, 0, false},
                        {64, 17, false}, {68, 8, false}, {0, 8, false},   {-8, 8, false}, {32, 64, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE("d = " + std::to_string(c.d) + ", tau = " + std::to_string(c.tau));
    auto throws = [](auto&& f) {
      try {
        f();
      } catch (const mf::ArgumentError&) {
        return true;
      }
      return false;
    };
    const bool counts = throws([&] { mf::memory_layer_macs(1, c.d, 4, c.tau); });
    const bool hash = throws([&] { mf::SignHash<float>(c.d, c.tau); });
    mf::MemoryLayerOptions opt;
    opt.in_dim = c.d;
    opt.out_dim = 4;
    opt.tau = c.tau;
    const bool layer = throws([&] { mf::MemoryLayer<float>(opt, mf::Init::none); });
    mf::ModelConfig config;
    config.d_model = c.d;
    config.n_heads = 1;
    config.tau = c.tau;
    config.expand_bits = 0;
    const bool model = throws([&] { config.validate(); });
    EXPECT_EQ(counts, !c.valid);
    EXPECT_EQ(hash, !c.valid);
    EXPECT_EQ(layer, !c.valid);
    EXPECT_EQ(model, !c.valid);
    if (c.valid) {
      const mf::HashShape shape = mf::SignHash<float>(c.d, c.tau).shape();
      EXPECT_EQ(shape.chunks * c.tau, c.d);
      EXPECT_EQ(shape.buckets, std::int64_t{1} << c.tau);
      EXPECT_EQ(shape.table_rows(), mf::memory_layer_table_values(c.d, 1, c.tau));
    }
  }
  // The expansion bits of a block: the counts and the config share the bound tau + e <= 16.
  EXPECT_GT(mf::memory_block_table_values(64, 8, 8), 0);
  for (int e : {-1, 9}) {
    mf::ModelConfig config;
    config.expand_bits = e;
    const std::string value = "expand_bits = " + std::to_string(e);
    test::expect_error([&] { config.validate(); }, {"ModelConfig", value.c_str(), "tau + expand_bits <= 16"});
    test::expect_error([&] { mf::memory_block_table_values(512, 8, e); },
                       {"memory_block_table_values", value.c_str(), "tau + expand_bits <= 16"});
  }
}

TEST(Flops, OverflowThrowsInsteadOfWrapping) {
  const std::int64_t big = std::int64_t{1} << 40;
  test::expect_error([&] { mf::dense_layer_macs(big, big, 2); }, {"dense_layer_macs", "count", "2^63"});
  test::expect_error([&] { mf::memory_table_values(big, 16, big); }, {"memory_table_values", "count"});
  // 2^62 is the largest power of two that fits; twice it does not.
  const std::int64_t half = std::int64_t{1} << 31;
  EXPECT_EQ(mf::dense_layer_macs(half, half, 1), std::int64_t{1} << 62);
  test::expect_error([&] { mf::dense_layer_macs(half, half, 2); }, {"count", "2^63"});
}

}  // namespace

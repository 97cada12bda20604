// The gather and hash kernels of every SIMD path against the scalar path, at widths that exercise
// full blocks, single vectors and masked tails, and for a single selected row.
#include "test_support.hpp"

#include <memoryformer/detail/dispatch.hpp>

namespace {

using mf::detail::GatherKernels;
using mf::detail::RowSelection;

struct Tables {
  int count, buckets, width;
  mf::RowMatrix<float> table;
  std::vector<std::int32_t> codes;
  std::vector<float> scores;

  Tables(int count_, int buckets_, int width_, unsigned seed)
      : count(count_),
        buckets(buckets_),
        width(width_),
        table(test::random_matrix<float>(count_ * buckets_, width_, seed)) {
    std::mt19937 gen(seed);
    for (int k = 0; k < count; ++k) {
      codes.push_back(static_cast<std::int32_t>(gen() % static_cast<unsigned>(buckets)));
      scores.push_back(std::uniform_real_distribution<float>(-1.0f, 1.0f)(gen));
    }
  }
  RowSelection selection() const { return {codes.data(), count, buckets, table.cols()}; }
};

// A pass of `tokens` tokens over a panel of t's tables (gather_schedule.hpp): each token's codes
// and scores drawn anew; token i's y at y + i * y_ld.
struct Pass {
  int tables, buckets;
  std::vector<std::int32_t> codes;
  std::vector<float> scores;

  Pass(const Tables& t, int tokens, unsigned seed) : tables(t.count), buckets(t.buckets) {
    std::mt19937 gen(seed);
    for (int j = 0; j < tokens * tables; ++j) {
      codes.push_back(static_cast<std::int32_t>(gen() % static_cast<unsigned>(buckets)));
      scores.push_back(std::uniform_real_distribution<float>(-1.0f, 1.0f)(gen));
    }
  }
  std::ptrdiff_t tokens() const { return static_cast<std::ptrdiff_t>(codes.size()) / tables; }
  RowSelection selection(std::ptrdiff_t i, std::ptrdiff_t ld) const {
    return {codes.data() + i * tables, tables, buckets, ld};
  }
  mf::detail::PanelPass<float> over(std::ptrdiff_t ld, float* y, std::ptrdiff_t y_ld) const {
    return {codes.data(), scores.data(), tables, buckets, ld, y, y_ld, tokens()};
  }
};

class KernelsOnPath : public test::PathTest {
 protected:
  GatherKernels<float> kernels() const { return mf::detail::kernels_for<float>(GetParam()); }
  static GatherKernels<float> scalar() { return mf::detail::kernels_for<float>(mf::KernelPath::scalar); }
};

const int kWidths[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 1000};

TEST_P(KernelsOnPath, GatherMatchesScalar) {
  for (int count : {1, 5, 64})
    for (int width : kWidths) {
      const Tables t(count, 16, width, static_cast<unsigned>(count * 7919 + width));
      std::vector<float> expected(static_cast<std::size_t>(width), 0.25f), got = expected;
      scalar().gather(t.table.data(), t.selection(), t.scores.data(), expected.data(), width);
      kernels().gather(t.table.data(), t.selection(), t.scores.data(), got.data(), width);
      for (int c = 0; c < width; ++c)
        ASSERT_NEAR(got[c], expected[c], 1e-5f * (1 + std::abs(expected[c])))
            << "K " << count << " width " << width << " col " << c;
    }
}

TEST_P(KernelsOnPath, ScatterMatchesScalarAndTouchesOnlySelectedRows) {
  for (int width : kWidths) {
    const Tables t(6, 8, width, static_cast<unsigned>(width));
    const auto dy = test::random_matrix<float>(1, width, 99u);
    mf::RowMatrix<float> expected = test::random_matrix<float>(6 * 8, width, 98u), got = expected;
    const mf::RowMatrix<float> before = expected;
    scalar().scatter(expected.data(), t.selection(), t.scores.data(), dy.data(), width);
    kernels().scatter(got.data(), t.selection(), t.scores.data(), dy.data(), width);
    EXPECT_LT(test::relative_error(got, expected), 1e-6) << "width " << width;
    for (int k = 0; k < 6; ++k)
      for (int b = 0; b < 8; ++b)
        if (b != t.codes[static_cast<std::size_t>(k)]) {
          EXPECT_EQ(got.row(k * 8 + b), before.row(k * 8 + b));
        }
  }
}

TEST_P(KernelsOnPath, DotMatchesScalar) {
  for (int width : kWidths) {
    const Tables t(9, 4, width, static_cast<unsigned>(3 * width));
    const auto dy = test::random_matrix<float>(1, width, 97u);
    std::vector<float> expected(9), got(9);
    scalar().dot(t.table.data(), t.selection(), dy.data(), width, expected.data());
    kernels().dot(t.table.data(), t.selection(), dy.data(), width, got.data());
    for (int k = 0; k < 9; ++k)
      EXPECT_NEAR(got[k], expected[k], 1e-5f * (1 + std::sqrt(static_cast<float>(width))))
          << "width " << width;
  }
}

// The by-code backward of one row and the run of tokens that picked it: runs shorter than, equal to
// and longer than a vector's lanes (the dots are summed one by one or kLanes at a time), at widths
// with and without a tail, reading dy rows ld values apart. Only the row's gradient and the run's
// dots may change.
TEST_P(KernelsOnPath, RunBackwardMatchesScalar) {
  const int ld = 211;
  const auto strip = test::random_matrix<float>(50, ld, 95u);
  for (int count : {1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 40})
    for (int width : {1, 7, 16, 31, 63, 64, 65, 128, 200}) {
      std::mt19937 gen(static_cast<unsigned>(count * 1000 + width));
      std::vector<std::int32_t> tokens;
      std::vector<float> scores;
      for (int j = 0; j < count; ++j) {
        tokens.push_back(static_cast<std::int32_t>(gen() % 50u));
        scores.push_back(std::uniform_real_distribution<float>(-1.0f, 1.0f)(gen));
      }
      const mf::detail::CodeRun<float> run{tokens.data(), scores.data(), count};
      const auto row = test::random_matrix<float>(1, width + 1, static_cast<unsigned>(width));
      mf::RowMatrix<float> expected_grad = test::random_matrix<float>(1, width + 1, 94u), got_grad = expected_grad;
      std::vector<float> expected_dots(static_cast<std::size_t>(count) + 1, 0.5f), got_dots = expected_dots;
      scalar().run_backward(row.data(), expected_grad.data(), run, strip.data(), ld, width, expected_dots.data());
      kernels().run_backward(row.data(), got_grad.data(), run, strip.data(), ld, width, got_dots.data());
      EXPECT_LT(test::relative_error(got_grad, expected_grad), 1e-6) << "count " << count << " width " << width;
      EXPECT_EQ(got_grad(0, width), expected_grad(0, width)) << "count " << count << " width " << width;
      for (int j = 0; j < count; ++j)
        ASSERT_NEAR(got_dots[j], expected_dots[j], 1e-5f * (1 + std::sqrt(static_cast<float>(width))))
            << "count " << count << " width " << width << " token " << j;
      EXPECT_EQ(got_dots[count], 0.5f) << "count " << count << " width " << width;
    }
}

TEST_P(KernelsOnPath, ColumnSliceReadsOnlyItsColumns) {
  // The layer hands threads column slices of a wider table; a slice must neither read nor write
  // outside [begin, begin + width). NaN outside the slice would poison any stray read.
  const Tables t(4, 8, 96, 5u);
  mf::RowMatrix<float> poisoned = t.table;
  poisoned.leftCols(16).setConstant(std::numeric_limits<float>::quiet_NaN());
  poisoned.rightCols(16).setConstant(std::numeric_limits<float>::quiet_NaN());
  std::vector<float> y(96, 1.0f);
  kernels().gather(poisoned.data() + 16, t.selection(), t.scores.data(), y.data() + 16, 64);
  for (int c = 0; c < 96; ++c) {
    if (c < 16 || c >= 80)
      EXPECT_EQ(y[c], 1.0f) << c;
    else
      EXPECT_TRUE(std::isfinite(y[c])) << c;
  }
}

// The panel kernel over a pass of 3 tokens of `table` (t's rows, stored as T) against the scalar
// gather token by token. The tokens' y rows are width + 3 apart: the 3 values between them must stay
// untouched.
template <class T>
void expect_pass_matches_scalar(const T* table, const Tables& t, int width, unsigned seed, float y_start,
                                mf::detail::GatherKernel<T, float> scalar_gather,
                                mf::detail::PanelKernel<T, float> panel) {
  const Pass pass(t, 3, seed);
  const std::ptrdiff_t y_ld = width + 3, ld = t.table.cols();
  std::vector<float> expected(static_cast<std::size_t>(3 * y_ld), y_start), got = expected;
  for (std::ptrdiff_t i = 0; i < 3; ++i)
    scalar_gather(table, pass.selection(i, ld), pass.scores.data() + i * t.count, expected.data() + i * y_ld,
                  width);
  panel(table, pass.over(ld, got.data(), y_ld), width);
  for (std::size_t c = 0; c < got.size(); ++c)
    ASSERT_NEAR(got[c], expected[c], 1e-5f * (1 + std::abs(expected[c])))
        << "K " << t.count << " width " << width << " value " << c;
}

// A panel (gather_schedule.hpp): rows of kPanelColumns values, a pass of several tokens. The panel
// kernel takes the full width in registers and hands narrower last slices to the general gather.
TEST_P(KernelsOnPath, PanelGatherMatchesScalar) {
  const int columns = mf::detail::kPanelColumns;
  for (int count : {1, 2, 7, 8})
    for (int width : {columns, columns - 1, 17, 1}) {
      const Tables t(count, 16, columns, static_cast<unsigned>(count * 131 + width));
      expect_pass_matches_scalar<float>(t.table.data(), t, width, static_cast<unsigned>(count + width), -0.5f,
                                        scalar().gather, kernels().panel);
    }
}

template <class T>
void expect_packed_panel_matches_scalar(mf::KernelPath path, T (*store)(float)) {
  const int columns = mf::detail::kPanelColumns;
  const auto kernels = mf::detail::compressed_kernels_for<T>(path);
  const auto scalar = mf::detail::compressed_kernels_for<T>(mf::KernelPath::scalar);
  for (int count : {1, 8, 9})
    for (int width : {columns, 40}) {
      const Tables t(count, 4, columns, static_cast<unsigned>(count + width));
      std::vector<T> stored;
      for (Eigen::Index i = 0; i < t.table.size(); ++i) stored.push_back(store(t.table.data()[i] * 100.0f));
      expect_pass_matches_scalar<T>(stored.data(), t, width, static_cast<unsigned>(count * 7 + width), 2.0f,
                                    scalar.gather, kernels.panel);
    }
}

TEST_P(KernelsOnPath, CompressedPanelGatherMatchesScalar) {
  expect_packed_panel_matches_scalar<mf::detail::bf16>(
      GetParam(), [](float v) { return mf::detail::bf16{mf::detail::float_to_bf16(v)}; });
  expect_packed_panel_matches_scalar<std::int8_t>(
      GetParam(), [](float v) { return static_cast<std::int8_t>(std::clamp(std::lround(v), -127L, 127L)); });
}

// The hash of one row (Eq. 9-10): codes exactly, scores to a few float roundings per factor of
// the chunk's product. Chunk counts around the lane widths (8, 16) exercise the masked tails;
// the values include signed zeros (both hash as positive), magnitudes whose exp underflows, and
// infinities.
TEST_P(KernelsOnPath, HashMatchesScalar) {
  const auto hash = mf::detail::hash_kernel_for<float>(GetParam());
  const auto reference = mf::detail::hash_kernel_for<float>(mf::KernelPath::scalar);
  const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e30f, -1e30f, INFINITY, -INFINITY, 40.0f, -0.01f};
  for (int tau : {1, 3, 4, 8, 10, 13, 16})
    for (int chunks : {1, 5, 8, 16, 17, 37})
      for (mf::Score score : {mf::Score::paper, mf::Score::l1})
        for (float t : {0.05f, 1.0f, 7.0f}) {
          const int n = chunks * tau;
          auto x = test::random_matrix<float>(1, n, static_cast<unsigned>(tau * 1000 + chunks), 0.0, 3.0);
          for (int i = 0; i < n; i += 7) x(0, i) = special[(i / 7) % 10];
          std::vector<std::int32_t> codes(static_cast<std::size_t>(chunks)), expected_codes = codes;
          std::vector<float> scores(static_cast<std::size_t>(chunks)), expected = scores;
          reference(x.data(), chunks, tau, t, score, expected_codes.data(), expected.data());
          hash(x.data(), chunks, tau, t, score, codes.data(), scores.data());
          for (int k = 0; k < chunks; ++k) {
            const std::string where = "tau " + std::to_string(tau) + " K " + std::to_string(chunks) + " " +
                                      mf::to_string(score) + " t " + std::to_string(t) + " chunk " +
                                      std::to_string(k);
            ASSERT_EQ(codes[k], expected_codes[k]) << where;
            if (std::isinf(expected[k]))
              ASSERT_EQ(scores[k], expected[k]) << where;
            else
              ASSERT_NEAR(scores[k], expected[k], 4e-6f * std::abs(expected[k])) << where;
          }
        }
}

TEST_P(KernelsOnPath, HashOfNanIsNan) {
  const auto hash = mf::detail::hash_kernel_for<float>(GetParam());
  float x[16] = {};
  x[9] = NAN;
  std::int32_t codes[2];
  float scores[2];
  hash(x, 2, 8, 1.0f, mf::Score::paper, codes, scores);
  EXPECT_EQ(codes[1], 0b10111111);  // NaN >= 0 is false, as in the scalar code
  EXPECT_TRUE(std::isnan(scores[1]));
  EXPECT_FLOAT_EQ(scores[0], 1.0f / 256);
}

MF_INSTANTIATE_ON_ALL_PATHS(KernelsOnPath);

TEST(KernelPath, ScalarIsAlwaysSupportedAndListedFirst) {
  const auto paths = mf::supported_kernel_paths();
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.front(), mf::KernelPath::scalar);
  EXPECT_TRUE(mf::kernel_path_supported(mf::KernelPath::scalar));
#if !MF_HAVE_X86_SIMD
  EXPECT_EQ(paths.size(), 1u);  // the scalar preset compiles the SIMD paths out
#endif
}

TEST(KernelPath, NamesRoundTrip) {
  for (mf::KernelPath p : {mf::KernelPath::scalar, mf::KernelPath::avx2, mf::KernelPath::avx512})
    EXPECT_EQ(mf::parse_kernel_path(mf::to_string(p)), p);
}

// Sets MEMORYFORMER_PATH for one test and restores it.
class EnvironmentPath : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* old = std::getenv("MEMORYFORMER_PATH");
    had_ = old != nullptr;
    if (had_) old_ = old;
  }
  void TearDown() override {
    if (had_)
      setenv("MEMORYFORMER_PATH", old_.c_str(), 1);
    else
      unsetenv("MEMORYFORMER_PATH");
  }

 private:
  bool had_ = false;
  std::string old_;
};

TEST_F(EnvironmentPath, SelectsTheNamedPath) {
  setenv("MEMORYFORMER_PATH", "scalar", 1);
  EXPECT_EQ(mf::detail::initial_kernel_path(), mf::KernelPath::scalar);
  unsetenv("MEMORYFORMER_PATH");
  EXPECT_EQ(mf::detail::initial_kernel_path(), mf::supported_kernel_paths().back());
}

TEST_F(EnvironmentPath, UnknownValueIsAClearError) {
  setenv("MEMORYFORMER_PATH", "neon", 1);
  try {
    mf::detail::initial_kernel_path();
    FAIL() << "expected an error";
  } catch (const mf::Error& e) {
    EXPECT_NE(std::string(e.what()).find("MEMORYFORMER_PATH"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("neon"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("scalar, avx2, avx512"), std::string::npos) << e.what();
  }
}

TEST_F(EnvironmentPath, UnsupportedPathIsAClearError) {
  int checked = 0;
  for (mf::KernelPath p : {mf::KernelPath::avx2, mf::KernelPath::avx512}) {
    if (mf::kernel_path_supported(p)) continue;
    ++checked;
    setenv("MEMORYFORMER_PATH", mf::to_string(p), 1);
    EXPECT_THROW(mf::detail::initial_kernel_path(), mf::Error);
    EXPECT_THROW(mf::set_kernel_path(p), mf::Error);
  }
  if (checked == 0) GTEST_SKIP() << "every path is supported here; the scalar preset covers this";
}

}  // namespace

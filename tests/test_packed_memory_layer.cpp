// PackedMemoryLayer on every kernel path: fp32 packing changes nothing; bf16 and int8 tables stay
// within their rounding bounds, element by element and in the output; and the forward pass equals
// the double-precision reference of docs/method.md §1 run on the dequantised tables.
#include "test_support.hpp"

#include <memoryformer/packed_memory_layer.hpp>

#include <utility>
#include <vector>

namespace {

class PackedOnPath : public test::PathTest {};

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

// A float layer whose tables are `tables`: the reference runs on what the packed layer stores.
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

TEST_P(PackedOnPath, Fp32PackingChangesNothing) {
  const auto layer = odd_layer();
  const mf::PackedMemoryLayer packed(layer, mf::TableType::fp32);
  const mf::RowMatrix<float> x = test::random_matrix<float>(9, 24, 5, 0.05);
  EXPECT_EQ(packed.forward(x), layer.forward(x));
  EXPECT_EQ(packed.table_bytes(), std::size_t(6 * 16 * 37 * 4));
}

TEST_P(PackedOnPath, Bf16StaysWithinHalfAnUlp) {
  for (mf::Score score : {mf::Score::paper, mf::Score::l1}) {
    const auto layer = odd_layer(score);
    const mf::PackedMemoryLayer packed(layer, mf::TableType::bf16);
    EXPECT_EQ(packed.table_bytes(), std::size_t(6 * 16 * 37 * 2));
    const mf::RowMatrix<float> stored = packed.tables();
    const auto t = layer.tables();
    const double half_ulp = std::ldexp(1.0, -8);  // 8 significant bits, round to nearest
    for (Eigen::Index i = 0; i < t.size(); ++i)
      ASSERT_LE(std::abs(double(stored.data()[i]) - t.data()[i]), half_ulp * std::abs(double(t.data()[i])))
          << i;
    const mf::RowMatrix<float> x = test::random_matrix<float>(9, 24, 6, 0.05);
    const mf::RowMatrix<float> y = packed.forward(x);
    EXPECT_LT(test::relative_error(y, test::reference_forward(x, with_tables(layer, stored))), 1e-5);
    const Eigen::MatrixXd bound =
        output_bound(layer, x, [&](Eigen::Index r, int c) { return half_ulp * std::abs(double(t(r, c))); });
    const Eigen::MatrixXd diff = (y.cast<double>() - layer.forward(x).cast<double>()).cwiseAbs();
    EXPECT_TRUE((diff.array() <= bound.array() * 1.01 + 1e-6).all())
        << "max excess " << (diff - bound).maxCoeff();
  }
}

TEST_P(PackedOnPath, Int8StaysWithinHalfAStep) {
  auto layer = odd_layer();
  layer.tables().row(5).setZero();  // an all-zero row quantises to zeros with scale 0
  const mf::PackedMemoryLayer packed(layer, mf::TableType::int8);
  EXPECT_EQ(packed.table_bytes(), std::size_t(6 * 16 * 37 + 6 * 16 * 4));
  const mf::RowMatrix<float> stored = packed.tables();
  const auto t = layer.tables();
  auto step = [&](Eigen::Index r) { return double(t.row(r).cwiseAbs().maxCoeff()) / 127.0; };
  for (Eigen::Index r = 0; r < t.rows(); ++r)
    for (Eigen::Index c = 0; c < t.cols(); ++c)
      ASSERT_LE(std::abs(double(stored(r, c)) - t(r, c)), step(r) / 2 * 1.0001 + 1e-12) << r << ", " << c;
  EXPECT_EQ(stored.row(5).cwiseAbs().maxCoeff(), 0.0f);
  const mf::RowMatrix<float> x = test::random_matrix<float>(9, 24, 7, 0.05);
  const mf::RowMatrix<float> y = packed.forward(x);
  EXPECT_LT(test::relative_error(y, test::reference_forward(x, with_tables(layer, stored))), 1e-5);
  const Eigen::MatrixXd bound = output_bound(layer, x, [&](Eigen::Index r, int) { return step(r) / 2; });
  const Eigen::MatrixXd diff = (y.cast<double>() - layer.forward(x).cast<double>()).cwiseAbs();
  EXPECT_TRUE((diff.array() <= bound.array() * 1.01 + 1e-6).all())
      << "max excess " << (diff - bound).maxCoeff();
}

TEST_P(PackedOnPath, WideLayerAndSingleTokenMatchReference) {
  // d = h = 256, tau 8: kernel pieces of 512 columns are not reached, 16-lane blocks are; N = 1
  // splits columns across threads.
  mf::MemoryLayerOptions o;
  o.in_dim = 256;
  o.out_dim = 256;
  o.tau = 8;
  const mf::MemoryLayer<float> layer(o);
  for (mf::TableType type : {mf::TableType::bf16, mf::TableType::int8}) {
    const mf::PackedMemoryLayer packed(layer, type);
    for (Eigen::Index n : {1, 33}) {
      const mf::RowMatrix<float> x = test::random_matrix<float>(n, 256, 8, 0.05);
      EXPECT_LT(test::relative_error(packed.forward(x),
                                     test::reference_forward(x, with_tables(layer, packed.tables()))),
                1e-5)
          << type << " N " << n;
    }
  }
}

TEST_P(PackedOnPath, LargeBatchPanelScheduleMatchesReference) {
  const mf::MemoryLayer<float> layer(test::panel_layer_options());
  ASSERT_EQ(test::schedule_for(test::kPanelTokens, layer, true), mf::detail::Schedule::panels);
  const mf::RowMatrix<float> x = test::random_matrix<float>(test::kPanelTokens, layer.in_dim(), 9, 0.05);
  for (mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const mf::PackedMemoryLayer packed(layer, type);
    EXPECT_LT(test::relative_error(packed.forward(x),
                                   test::reference_forward(x, with_tables(layer, packed.tables()))),
              1e-5)
        << type;
  }
}

// Tiled tables (TableLayout::tiles) on each schedule: per token (N = 1, 3), whole-tile panels
// (1.25 tokens a row) and 64-column panels cut from the tiles (kPanelTokens). The tiles of 128
// and 72 columns make the last tile narrower than the first, and its last panel slice 8 wide.
TEST_P(PackedOnPath, TiledLayoutMatchesReferenceOnEverySchedule) {
  const mf::MemoryLayer<float> layer(test::panel_layer_options());
  using mf::detail::Schedule;
  const std::vector<std::pair<Eigen::Index, Schedule>> cases = {{1, Schedule::per_token},
                                                                {3, Schedule::per_token},
                                                                {20, Schedule::tile_panels},
                                                                {test::kPanelTokens, Schedule::panels}};
  for (mf::TableType type : {mf::TableType::fp32, mf::TableType::bf16, mf::TableType::int8}) {
    const mf::PackedMemoryLayer tiled(layer, type, mf::TableLayout::tiles);
    const mf::PackedMemoryLayer rows(layer, type);
    ASSERT_EQ(tiled.layout(), mf::TableLayout::tiles);
    ASSERT_EQ(tiled.tables(), rows.tables()) << type;  // the same values, stored elsewhere
    for (const auto& [n, schedule] : cases) {
      ASSERT_EQ(test::schedule_for(n, layer, true), schedule) << "N " << n;
      const mf::RowMatrix<float> x = test::random_matrix<float>(n, layer.in_dim(), 10, 0.05);
      EXPECT_LT(test::relative_error(tiled.forward(x),
                                     test::reference_forward(x, with_tables(layer, tiled.tables()))),
                1e-5)
          << type << " N " << n;
    }
  }
}

TEST(PackedLayout, UnknownLayoutIsRejected) {
  const auto layer = odd_layer();
  test::expect_error(
      [&] { mf::PackedMemoryLayer(layer, mf::TableType::int8, static_cast<mf::TableLayout>(7)); },
      {"MemoryLayer::compress", "layout", "7", "TableLayout::rows or tiles"});
}

MF_INSTANTIATE_ON_ALL_PATHS(PackedOnPath);

}  // namespace

// MemoryLayer: forward against the independent reference, backward against finite differences,
// initialisation, and the precomputed-hash overloads; forward and float backward on every path.
#include "test_support.hpp"

namespace {

mf::MemoryLayerOptions options(int in, int out, int tau, mf::Score score = mf::Score::paper, float t = 1.0f,
                               bool bias = true) {
  mf::MemoryLayerOptions o;
  o.in_dim = in;
  o.out_dim = out;
  o.tau = tau;
  o.score = score;
  o.temperature = t;
  o.bias = bias;
  return o;
}

struct ForwardCase {
  int n, d, h, tau;
  mf::Score score;
  float t;
  bool bias;
};

class LayerOnPath : public test::PathTest {};

TEST_P(LayerOnPath, ForwardMatchesReference) {
  const ForwardCase cases[] = {
      {1, 64, 48, 8, mf::Score::paper, 1.0f, true},   {7, 32, 33, 4, mf::Score::l1, 1.0f, true},
      {16, 30, 17, 5, mf::Score::paper, 0.5f, false}, {3, 20, 100, 10, mf::Score::l1, 2.0f, true},
      {64, 16, 8, 1, mf::Score::paper, 1.0f, true},   {5, 24, 1, 3, mf::Score::l1, 0.25f, true},
      {33, 64, 129, 8, mf::Score::paper, 1.5f, true}, {2, 128, 1000, 8, mf::Score::l1, 1.0f, false},
      {1, 512, 1100, 4, mf::Score::l1, 1.0f, true},  // one token, large enough to split across threads
  };
  for (const ForwardCase& c : cases) {
    const mf::MemoryLayer<float> layer(options(c.d, c.h, c.tau, c.score, c.t, c.bias));
    const auto x = test::random_matrix<float>(c.n, c.d, static_cast<unsigned>(c.n * 1000 + c.h), 0.0, 2.0);
    const mf::RowMatrix<float> y = layer.forward(x);
    ASSERT_EQ(y.rows(), c.n);
    ASSERT_EQ(y.cols(), c.h);
    EXPECT_LT(test::relative_error(y, test::reference_forward(x, layer)), 1e-5)
        << "N " << c.n << " d " << c.d << " h " << c.h << " tau " << c.tau << " " << mf::to_string(c.score);
  }
}

TEST_P(LayerOnPath, LargeBatchPanelScheduleMatchesReference) {
  const mf::MemoryLayer<float> layer(test::panel_layer_options());
  ASSERT_EQ(test::schedule_for(test::kPanelTokens, layer, false), mf::detail::Schedule::panels);
  ASSERT_LT(mf::detail::panel_group<float>(layer.num_chunks(), layer.num_buckets(), mf::detail::kPanelColumns,
                                           layer.context().l2_cache_bytes()),
            layer.num_chunks());
  const auto x = test::random_matrix<float>(test::kPanelTokens, layer.in_dim(), 31u, 0.0, 2.0);
  EXPECT_LT(test::relative_error(layer.forward(x), test::reference_forward(x, layer)), 1e-5);
}

// The backward scatter at a forward's panel size against the table gradient summed here explicitly:
// dT[k * 2^tau + code(i, k)] += score(i, k) * dy(i) (Eq. 12).
TEST_P(LayerOnPath, LargeBatchScatterMatchesExplicitSum) {
  mf::MemoryLayer<float> layer(test::panel_layer_options());
  ASSERT_EQ(test::backward_schedule_for(test::kPanelTokens, layer), mf::detail::Schedule::by_code);
  const auto x = test::random_matrix<float>(test::kPanelTokens, layer.in_dim(), 41u, 0.0, 2.0);
  const auto dy = test::random_matrix<float>(test::kPanelTokens, layer.out_dim(), 43u);
  layer.backward(x, dy);
  const mf::Buckets<float> b = layer.hash()(x);
  mf::RowMatrix<double> expected = mf::RowMatrix<double>::Zero(layer.tables().rows(), layer.out_dim());
  for (Eigen::Index i = 0; i < b.codes.rows(); ++i)
    for (Eigen::Index k = 0; k < b.codes.cols(); ++k)
      expected.row(k * layer.num_buckets() + b.codes(i, k)) +=
          double(b.scores(i, k)) * dy.row(i).cast<double>();
  EXPECT_LT(test::relative_error(layer.table_grad(), expected), 1e-6);
}

// More tokens than one pass of the panel schedule holds (kStripTokens): the forward takes three
// passes, the last a short one, each with its own strip of y; the backward's strips hold them all.
TEST_P(LayerOnPath, PanelPassesOverLongInputsMatchExplicitSums) {
  mf::MemoryLayer<float> layer(options(12, 72, 4, mf::Score::paper));
  const Eigen::Index n = 2 * mf::detail::kStripTokens + 5;
  ASSERT_EQ(test::schedule_for(n, layer, false), mf::detail::Schedule::panels);
  const auto x = test::random_matrix<float>(n, layer.in_dim(), 71u, 0.0, 2.0);
  EXPECT_LT(test::relative_error(layer.forward(x), test::reference_forward(x, layer)), 1e-5);
  const auto dy = test::random_matrix<float>(n, layer.out_dim(), 73u);
  layer.backward(x, dy);
  const mf::Buckets<float> b = layer.hash()(x);
  mf::RowMatrix<double> expected = mf::RowMatrix<double>::Zero(layer.tables().rows(), layer.out_dim());
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index k = 0; k < b.codes.cols(); ++k)
      expected.row(k * layer.num_buckets() + b.codes(i, k)) +=
          double(b.scores(i, k)) * dy.row(i).cast<double>();
  EXPECT_LT(test::relative_error(layer.table_grad(), expected), 1e-6);
}

// The backward row dots at a forward's panel size against dL/ds computed here explicitly:
// dscores(i, k) = <dy(i), T[k * 2^tau + code(i, k)]> (Eq. 12). The layer's last slice has 8 columns.
TEST_P(LayerOnPath, LargeBatchDotsMatchExplicitSum) {
  mf::MemoryLayer<float> layer(test::panel_layer_options());
  ASSERT_EQ(test::backward_schedule_for(test::kPanelTokens, layer), mf::detail::Schedule::by_code);
  const auto x = test::random_matrix<float>(test::kPanelTokens, layer.in_dim(), 47u, 0.0, 2.0);
  const auto dy = test::random_matrix<float>(test::kPanelTokens, layer.out_dim(), 53u);
  const mf::Buckets<float> b = layer.hash()(x);
  const mf::RowMatrix<float> dscores = layer.backward_scores(b, dy);
  mf::RowMatrix<double> expected(b.codes.rows(), b.codes.cols());
  for (Eigen::Index i = 0; i < b.codes.rows(); ++i)
    for (Eigen::Index k = 0; k < b.codes.cols(); ++k)
      expected(i, k) = layer.tables()
                           .row(k * layer.num_buckets() + b.codes(i, k))
                           .cast<double>()
                           .dot(dy.row(i).cast<double>());
  EXPECT_LT(test::relative_error(dscores, expected), 1e-6);
}

// The backward on the by-code schedule (each table's tokens in code order) against the table
// gradient and dL/ds summed here explicitly (Eq. 12). 37 chunk tables: threads own ranges of 16
// tables and a shorter last one; h = 200 leaves a row tail on every path. Runs of 1 to about 6 tokens
// (tau 4, 2.5 tokens per row) and of about 40 (tau 2), which the kernels sum kLanes at a time.
TEST_P(LayerOnPath, ByCodeBackwardMatchesExplicitSums) {
  for (const auto& [tau, n] : {std::pair<int, Eigen::Index>{4, 40}, {2, 160}}) {
    mf::MemoryLayer<float> layer(options(tau * 37, 200, tau, mf::Score::l1));
    ASSERT_EQ(test::backward_schedule_for(n, layer), mf::detail::Schedule::by_code);
    const auto x = test::random_matrix<float>(n, layer.in_dim(), 61u, 0.0, 2.0);
    const auto dy = test::random_matrix<float>(n, layer.out_dim(), 67u);
    const mf::Buckets<float> b = layer.hash()(x);
    const mf::RowMatrix<float> dscores = layer.backward_scores(b, dy);
    mf::RowMatrix<double> grad = mf::RowMatrix<double>::Zero(layer.tables().rows(), layer.out_dim());
    mf::RowMatrix<double> expected(n, layer.num_chunks());
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index k = 0; k < b.codes.cols(); ++k) {
        const Eigen::Index row = k * layer.num_buckets() + b.codes(i, k);
        grad.row(row) += double(b.scores(i, k)) * dy.row(i).cast<double>();
        expected(i, k) = layer.tables().row(row).cast<double>().dot(dy.row(i).cast<double>());
      }
    EXPECT_LT(test::relative_error(layer.table_grad(), grad), 1e-6) << "tau " << tau;
    EXPECT_LT(test::relative_error(dscores, expected), 1e-6) << "tau " << tau;
  }
}

TEST_P(LayerOnPath, PrecomputedHashGivesTheSameOutput) {
  const mf::MemoryLayer<float> layer(options(48, 40, 6, mf::Score::l1));
  const auto x = test::random_matrix<float>(9, 48, 2u);
  EXPECT_EQ(layer.forward(layer.hash()(x)), layer.forward(x));
}

TEST_P(LayerOnPath, FloatBackwardMatchesDoubleBackward) {
  // The double layer runs the scalar path; copying its weights into a float layer checks the
  // float kernels (scatter and dot) of this path against it.
  for (mf::Score score : {mf::Score::paper, mf::Score::l1}) {
    mf::MemoryLayer<double> ref(options(40, 37, 5, score));
    mf::MemoryLayer<float> layer(options(40, 37, 5, score));
    layer.tables() = ref.tables().cast<float>();
    layer.bias() = ref.bias().cast<float>();
    const auto x = test::random_matrix<double>(6, 40, 8u, 0.05, 1.0);
    const auto dy = test::random_matrix<double>(6, 37, 9u);
    const auto dx_ref = ref.backward(x, dy);
    const mf::RowMatrix<float> dx = layer.backward(x.cast<float>(), dy.cast<float>());
    EXPECT_LT(test::relative_error(dx, dx_ref), 1e-5);
    EXPECT_LT(test::relative_error(layer.table_grad(), ref.table_grad()), 1e-6);
    EXPECT_LT(test::relative_error(layer.bias_grad(), ref.bias_grad()), 1e-6);
  }
}

MF_INSTANTIATE_ON_ALL_PATHS(LayerOnPath);

// L = sum(forward(x) .* G), so dL/dy = G.
double loss(const mf::MemoryLayer<double>& layer, const mf::RowMatrix<double>& x,
            const mf::RowMatrix<double>& g) {
  return layer.forward(x).cwiseProduct(g).sum();
}

// K = 2 tables of 16 rows; 5 tokens take the backward's per-token schedule, 24 the by-code one.
void check_gradients(mf::Score score, float t, Eigen::Index tokens = 5) {
  mf::MemoryLayer<double> layer(options(8, 3, 4, score, t));
  const auto x = test::random_matrix<double>(tokens, 8, 31u, 0.05, 1.5);
  const auto g = test::random_matrix<double>(tokens, 3, 32u);
  const auto dx = layer.backward(x, g);
  const double eps = 1e-6;
  const auto expect_fd = [&](double analytic, double fd, const std::string& what) {
    EXPECT_NEAR(analytic, fd, 1e-7 * std::max(1.0, std::abs(fd)))
        << what << " " << mf::to_string(score) << " t " << t;
  };
  for (Eigen::Index n = 0; n < x.rows(); ++n)
    for (Eigen::Index i = 0; i < x.cols(); ++i) {
      auto xp = x, xm = x;
      xp(n, i) += eps;
      xm(n, i) -= eps;
      expect_fd(dx(n, i), (loss(layer, xp, g) - loss(layer, xm, g)) / (2 * eps), "dx");
    }
  // Central differences of the loss in one parameter w of the layer (test::central_difference, h = eps).
  const auto central_difference = [&](double& w) {
    return test::central_difference(
        w, [&] { return loss(layer, x, g); }, eps);
  };
  // Every table entry, selected or not: unselected rows must get exactly zero.
  for (Eigen::Index i = 0; i < layer.tables().size(); ++i)
    expect_fd(layer.table_grad().data()[i], central_difference(layer.tables().data()[i]),
              "dtables[" + std::to_string(i) + "]");
  for (Eigen::Index c = 0; c < layer.bias().cols(); ++c)
    expect_fd(layer.bias_grad()(0, c), central_difference(layer.bias()(0, c)), "dbias");
}

TEST(MemoryLayerGradient, PaperScoreMatchesFiniteDifferences) {
  check_gradients(mf::Score::paper, 1.0f);
  check_gradients(mf::Score::paper, 0.5f);
}

TEST(MemoryLayerGradient, L1ScoreMatchesFiniteDifferences) {
  check_gradients(mf::Score::l1, 1.0f);
  check_gradients(mf::Score::l1, 2.0f);
}

TEST(MemoryLayerGradient, ByCodeScheduleMatchesFiniteDifferences) {
  ASSERT_EQ(test::backward_schedule_for(5, mf::MemoryLayer<double>(options(8, 3, 4))),
            mf::detail::Schedule::per_token);
  ASSERT_EQ(test::backward_schedule_for(40, mf::MemoryLayer<double>(options(8, 3, 4))),
            mf::detail::Schedule::by_code);
  check_gradients(mf::Score::l1, 1.0f, 40);
}

TEST(MemoryLayerGradient, BackwardAccumulatesUntilZeroGrad) {
  mf::MemoryLayer<double> layer(options(12, 5, 3));
  const auto x = test::random_matrix<double>(4, 12, 41u);
  const auto dy = test::random_matrix<double>(4, 5, 42u);
  EXPECT_FALSE(layer.has_grad());
  layer.backward(x, dy);
  const mf::RowMatrix<double> once = layer.table_grad();
  const mf::RowMatrix<double> bias_once = layer.bias_grad();
  EXPECT_GT(once.cwiseAbs().maxCoeff(), 0.0);
  layer.backward(x, dy);
  EXPECT_LT(test::relative_error(layer.table_grad(), (2 * once).eval()), 1e-14);
  EXPECT_LT(test::relative_error(layer.bias_grad(), (2 * bias_once).eval()), 1e-14);
  layer.zero_grad();
  EXPECT_EQ(layer.table_grad().cwiseAbs().maxCoeff(), 0.0);
  EXPECT_EQ(layer.bias_grad().cwiseAbs().maxCoeff(), 0.0);
}

TEST(MemoryLayerGradient, SharedHashBackwardSumsScoreGradients) {
  // Q, K and V share one hash: dL/dx = SignHash::backward(x, sum of each layer's dL/ds).
  mf::MemoryLayer<double> q(options(16, 6, 4)), v(options(16, 6, 4));
  v.tables() *= -0.5;
  const auto x = test::random_matrix<double>(3, 16, 51u, 0.05, 1.0);
  const auto dq = test::random_matrix<double>(3, 6, 52u), dv = test::random_matrix<double>(3, 6, 53u);
  const auto buckets = q.hash()(x);
  const mf::RowMatrix<double> ds = q.backward_scores(buckets, dq) + v.backward_scores(buckets, dv);
  const mf::RowMatrix<double> shared = q.hash().backward(x, ds);
  mf::MemoryLayer<double> q2(options(16, 6, 4)), v2(options(16, 6, 4));
  v2.tables() *= -0.5;
  const mf::RowMatrix<double> separate = q2.backward(x, dq) + v2.backward(x, dv);
  EXPECT_LT(test::relative_error(shared, separate), 1e-13);
}

TEST(MemoryLayerInit, IsDeterministicAndFollowsTheSeed) {
  const auto o = options(64, 32, 8);
  const mf::MemoryLayer<float> a(o), b(o);
  EXPECT_EQ(a.tables(), b.tables());
  EXPECT_EQ(a.bias(), b.bias());
  auto reseeded = o;
  reseeded.seed = 12345;
  EXPECT_NE(mf::MemoryLayer<float>(reseeded).tables(), a.tables());
}

TEST(MemoryLayerInit, TablesHaveTheQkvStandardDeviationAndSmallBias) {
  // docs/method.md §3: tables N(0, sqrt(2 / (5 d))), biases 0.001 N(0, 1).
  const mf::MemoryLayer<double> layer(options(64, 64, 8));
  const auto& t = layer.tables();
  const double mean = t.mean();
  const double std_dev = std::sqrt((t.array() - mean).square().mean());
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(std_dev, std::sqrt(2.0 / (5.0 * 64)), 0.002);
  EXPECT_LT(layer.bias().cwiseAbs().maxCoeff(), 0.006);
  EXPECT_GT(layer.bias().cwiseAbs().maxCoeff(), 0.0);
  auto o = options(64, 64, 8);
  o.init_std = 0.02f;
  const mf::MemoryLayer<double> block_init(o);
  EXPECT_NEAR(std::sqrt(block_init.tables().array().square().mean()), 0.02, 0.0005);
}

TEST(MemoryLayerShape, ReportsItsGeometry) {
  const mf::MemoryLayer<float> layer(options(60, 7, 6, mf::Score::paper, 1.0f, false));
  EXPECT_EQ(layer.num_chunks(), 10);
  EXPECT_EQ(layer.num_buckets(), 64);
  EXPECT_EQ(layer.tables().rows(), 640);
  EXPECT_EQ(layer.tables().cols(), 7);
  EXPECT_FALSE(layer.has_bias());
  EXPECT_EQ(layer.bias().cols(), 0);
  EXPECT_EQ(layer.forward(mf::RowMatrix<float>(0, 60)).rows(), 0);
}

TEST(MemoryLayerShape, AcceptsColumnMajorAndBlockInputs) {
  const mf::MemoryLayer<float> layer(options(16, 9, 4));
  const auto x = test::random_matrix<float>(6, 16, 61u);
  const Eigen::MatrixXf column_major = x;
  EXPECT_EQ(layer.forward(column_major), layer.forward(x));
  const mf::RowMatrix<float> wide = test::random_matrix<float>(6, 40, 62u);
  EXPECT_EQ(layer.forward(wide.middleCols(8, 16)),
            layer.forward(mf::RowMatrix<float>(wide.middleCols(8, 16))));
}

TEST(MemoryLayerShape, Tau16Works) {
  const mf::MemoryLayer<float> layer(options(32, 4, 16));
  EXPECT_EQ(layer.tables().rows(), 2 * 65536);
  const auto x = test::random_matrix<float>(3, 32, 71u);
  EXPECT_LT(test::relative_error(layer.forward(x), test::reference_forward(x, layer)), 1e-5);
}

}  // namespace

namespace {

TEST(MemoryLayerTensor, ForwardOnATensorEqualsForwardOnTheStackedRows) {
  const mf::MemoryLayer<float> layer(options(24, 10, 6, mf::Score::l1));
  const mf::RowMatrix<float> x = test::random_matrix<float>(3 * 4, 24, 11u);
  const mf::RowMatrix<float> want = layer.forward(x);
  const mf::Tensor3<float> y = layer.forward(test::tensor_of(x, 3, 4));
  ASSERT_EQ(y.dimension(0), 3);
  ASSERT_EQ(y.dimension(1), 4);
  test::expect_tensor_equals_rows(y, want);
  test::expect_error([&] { layer.forward(mf::Tensor3<float>(3, 4, 25)); },
                     {"MemoryLayer::forward", "x = [3, 4, 25]", "[batch, seq, 24]"});
}

TEST(MemoryLayerTensor, TablesTensorViewsTheTablesInPlace) {
  mf::MemoryLayer<float> layer(options(12, 5, 4));
  auto view = layer.tables_tensor();
  ASSERT_EQ(view.dimension(0), 3);   // K = 12 / 4
  ASSERT_EQ(view.dimension(1), 16);  // 2^4
  ASSERT_EQ(view.dimension(2), 5);
  for (Eigen::Index k = 0; k < 3; ++k)
    for (Eigen::Index c = 0; c < 16; ++c)
      for (Eigen::Index j = 0; j < 5; ++j) EXPECT_EQ(view(k, c, j), layer.tables()(k * 16 + c, j));
  view(2, 7, 3) = 42.0f;  // a write through the view is a write to the tables
  EXPECT_EQ(layer.tables()(2 * 16 + 7, 3), 42.0f);
  const mf::MemoryLayer<float>& read_only = layer;
  EXPECT_EQ(read_only.tables_tensor()(2, 7, 3), 42.0f);
  layer.compress(mf::TableType::int8);  // no trained tables left to view
  test::expect_error([&] { layer.tables_tensor(); }, {"MemoryLayer::tables_tensor"});
}

}  // namespace

// Embedding: rows picked by id, scatter-add backward with repeated ids, parameter and id errors.
#include "test_support.hpp"

#include <memoryformer/embedding.hpp>

namespace {

TEST(Embedding, ForwardPicksRowsInTokenOrder) {
  const mf::Embedding<float> embed(10, 4, 1.0, 3);
  mf::TokenMatrix tokens(2, 3);
  tokens << 1, 9, 1, 0, 5, 2;
  const mf::RowMatrix<float> x = embed.forward(tokens);
  ASSERT_EQ(x.rows(), 6);
  for (Eigen::Index b = 0; b < 2; ++b)
    for (Eigen::Index t = 0; t < 3; ++t) EXPECT_EQ(x.row(b * 3 + t), embed.weight().row(tokens(b, t)));
}

TEST(Embedding, BackwardAddsEveryOccurrence) {
  mf::Embedding<double> embed(5, 3, 1.0, 4);
  mf::TokenMatrix tokens(1, 4);
  tokens << 2, 0, 2, 2;
  const mf::RowMatrix<double> dx = test::random_matrix<double>(4, 3, 5);
  embed.backward(tokens, dx);
  Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(5, 3);
  for (Eigen::Index i = 0; i < 4; ++i) expected.row(tokens(0, i)) += dx.row(i);
  EXPECT_LT(test::relative_error(embed.weight_grad(), expected), 1e-15);
  // And it is the gradient of L = sum(forward .* dx), by central differences.
  mf::ParameterList<double> params;
  embed.append_parameters("embed", params);
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params[0].name, "embed.weight");
  EXPECT_TRUE(params[0].decay);
  test::expect_parameter_gradients(
      params, [&] { return embed.forward(tokens).cwiseProduct(dx).sum(); }, 15, 1e-8);
}

TEST(Embedding, BadIdsNameTheirPosition) {
  const mf::Embedding<float> embed(10, 4);
  mf::TokenMatrix tokens(2, 3);
  tokens << 1, 2, 3, 4, 10, 5;
  test::expect_error([&] { embed.forward(tokens); }, {"tokens(1, 1)", "= 10", "[0, 10)"});
  tokens(1, 1) = -1;
  test::expect_error([&] { embed.forward(tokens); }, {"tokens(1, 1) = -1"});
  test::expect_error([] { mf::Embedding<float>(0, 4); }, {"vocab_size = 0"});
  test::expect_error([] { mf::Embedding<float>(4, 0); }, {"dim = 0"});
}

}  // namespace

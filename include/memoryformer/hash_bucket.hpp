// SignHash: the locality-sensitive hash of a Memory Layer (docs/method.md §1, paper Eq. 4, 9, 10).
// A row x[d] is cut into K = d / tau chunks z_k; each chunk's sign bits give its bucket code_k and
// its differentiable score s_k. Q, K and V share one SignHash result, so it is a type of its own.
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "detail/dispatch.hpp"
#include "detail/partition.hpp"
#include "hash_shape.hpp"

#include <cmath>
#include <limits>

namespace memoryformer {
inline namespace v0 {

// The hash of N rows: bucket codes [N, K] in [0, 2^tau) and scores [N, K].
template <class Scalar>
struct Buckets {
  CodeMatrix codes;
  RowMatrix<Scalar> scores;
};

namespace detail {

// Shared by SignHash, MemoryLayer and ModelConfig, so all report bad options the same way.
inline void check_temperature(const char* where, double temperature) {
  if (!std::isfinite(temperature) || temperature <= 0)
    fail(where, "temperature", temperature, "a finite value > 0");
}

}  // namespace detail

template <class Scalar>
class SignHash {
  static_assert(std::is_floating_point<Scalar>::value, "SignHash<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  // in_dim must be a multiple of tau (1..16); temperature t > 0 (docs/method.md §1 step 3).
  SignHash(int in_dim, int tau, Score score = Score::paper, Scalar temperature = Scalar(1))
      : in_dim_(in_dim), tau_(tau), score_(score), temperature_(temperature) {
    HashShape::of("SignHash", "in_dim", in_dim, tau);
    detail::check_temperature("SignHash", static_cast<double>(temperature));
    if (score != Score::paper && score != Score::l1)
      detail::fail("SignHash", "score", static_cast<int>(score), "Score::paper or Score::l1");
  }

  int in_dim() const { return in_dim_; }
  int tau() const { return tau_; }
  int num_chunks() const { return in_dim_ / tau_; }
  int num_buckets() const { return 1 << tau_; }
  HashShape shape() const { return HashShape{in_dim_, tau_, num_chunks(), num_buckets()}; }
  Score score() const { return score_; }
  Scalar temperature() const { return temperature_; }

  // Bucket of one chunk z[tau]: bit j is 1 iff z_j >= 0 (zero counts as positive), packed
  // MSB-first, so z_0 is the most significant bit.
  static std::int32_t code(const Scalar* z, int tau) { return detail::scalar::chunk_code(z, tau); }

  // p(z) = prod_j sigmoid(2|z_j| / t): Eq. 10 in closed form, for one chunk z[tau].
  static Scalar probability(const Scalar* z, int tau, Scalar temperature) {
    ChunkArray e;
    return detail::scalar::chunk_probabilities(ChunkView(z, 1, tau), temperature, e)(0);
  }

  // [N, in_dim] -> codes and scores [N, K], through the context's hash kernel (float; double runs
  // the scalar one), rows split across its threads when there are enough of them.
  Buckets<Scalar> operator()(const Input& x) const { return (*this)(x, default_context()); }
  Buckets<Scalar> operator()(const Input& x, const Context& ctx) const {
    check_rows(x, "x");
    const Eigen::Index n = x.rows();
    const int k_chunks = num_chunks();
    Buckets<Scalar> out{CodeMatrix(n, k_chunks), RowMatrix<Scalar>(n, k_chunks)};
    const auto kernel = detail::hash_kernel_for<Scalar>(ctx.kernel_path());
    for_row_ranges(ctx, n, [&](const detail::Range& rows) {
      for (Eigen::Index i = rows.begin; i < rows.end; ++i)
        kernel(x.row(i).data(), k_chunks, tau_, temperature_, score_, out.codes.row(i).data(),
               out.scores.row(i).data());
    });
    return out;
  }

  // dL/dx [N, in_dim] from dL/ds [N, K] (Eq. 12), rows split across the pool's threads. The codes
  // are piecewise constant and pass no gradient; sign(0) is taken as +1, matching the hash.
  RowMatrix<Scalar> backward(const Input& x, const Input& dscores) const {
    return backward(x, dscores, default_context());
  }
  RowMatrix<Scalar> backward(const Input& x, const Input& dscores, const Context& ctx) const {
    check_rows(x, "x");
    detail::require_shape("SignHash::backward", "dscores", dscores.rows(), dscores.cols(), x.rows(),
                          num_chunks());
    RowMatrix<Scalar> dx(x.rows(), in_dim_);
    for_row_ranges(ctx, x.rows(), [&](const detail::Range& rows) {
      ChunkArray e;
      for (Eigen::Index i = rows.begin; i < rows.end; ++i) row_backward(x, dscores, i, e, dx);
    });
    return dx;
  }

 private:
  using ChunkArray = detail::scalar::ChunkArray<Scalar>;
  using ChunkView = detail::scalar::ChunkView<Scalar>;
  using ColumnArray = Eigen::Array<Scalar, Eigen::Dynamic, 1>;

  // Row i of dx from row i of x and dscores; e is scratch for exp(-2|z|/t).
  void row_backward(const Input& x, const Input& dscores, Eigen::Index i, ChunkArray& e,
                    RowMatrix<Scalar>& dx) const {
    const ChunkView z = chunks(x, i);
    const ColumnArray p = detail::scalar::chunk_probabilities(z, temperature_, e);
    const ChunkArray sign = (z >= Scalar(0)).select(ChunkArray::Ones(z.rows(), z.cols()), Scalar(-1));
    // dp/dz_j = p (2/t) sign(z_j) sigmoid(-2|z_j|/t), and sigmoid(-a) = e / (1 + e) with e = exp(-a).
    const ChunkArray dp = (Scalar(2) / temperature_) * sign * (e / (Scalar(1) + e)) * p.replicate(1, tau_);
    const ColumnArray ds = dscores.row(i).transpose().array();
    Eigen::Map<ChunkArray> dz(dx.row(i).data(), num_chunks(), tau_);
    if (score_ == Score::paper)
      dz = dp * ds.replicate(1, tau_);
    else  // l1: ds/dz_j = sign(z_j) p + ||z||_1 dp/dz_j
      dz = (sign * p.replicate(1, tau_) + dp * z.abs().rowwise().sum().replicate(1, tau_)) *
           ds.replicate(1, tau_);
  }

  // Row i of x as K chunks of tau: [K, tau].
  ChunkView chunks(const Input& x, Eigen::Index i) const {
    return ChunkView(x.row(i).data(), num_chunks(), tau_);
  }

  // body(rows) for ranges of the n rows, split across the context's threads when there are enough.
  template <class Body>
  void for_row_ranges(const Context& ctx, Eigen::Index n, const Body& body) const {
    const int tasks =
        detail::task_count(static_cast<double>(n) * in_dim_ * kHashWorkPerValue, n, ctx.num_threads());
    ctx.parallel_for(tasks, [&](int task) { body(detail::split_range(n, tasks, task)); });
  }

  // What hashing one value costs, in multiply-adds (an exp and a compare), for task_count.
  static constexpr double kHashWorkPerValue = 16;

  void check_rows(const Input& x, const char* name) const {
    detail::require_shape("SignHash", name, x.rows(), x.cols(), x.rows(), in_dim_);
  }

  int in_dim_;
  int tau_;
  Score score_;
  Scalar temperature_;
};

}  // namespace v0
}  // namespace memoryformer

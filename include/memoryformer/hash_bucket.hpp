// SignHash: the locality-sensitive hash of a Memory Layer (method.md §1, paper Eq. 4, 9, 10).
// A row x[d] is cut into K = d / tau chunks z_k; each chunk's sign bits give its bucket code_k and
// its differentiable score s_k. Q, K and V share one SignHash result, so it is a type of its own.
#pragma once

#include "config.hpp"

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

inline constexpr int kMaxTau = 16;

namespace detail {

// Shared by SignHash and MemoryLayer, so both report bad options the same way.
inline void check_hash_params(const char* where, long in_dim, int tau, double temperature) {
  if (tau < 1 || tau > kMaxTau) fail(where, "tau", tau, "an integer in 1..16");
  if (in_dim < 1) fail(where, "in_dim", in_dim, "a positive integer");
  if (in_dim % tau != 0) fail(where, "in_dim", in_dim, "a multiple of tau = " + std::to_string(tau));
  if (!std::isfinite(temperature) || temperature <= 0)
    fail(where, "temperature", temperature, "a finite value > 0");
}

}  // namespace detail

template <class Scalar>
class SignHash {
  static_assert(std::is_floating_point<Scalar>::value, "SignHash<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  // in_dim must be a multiple of tau (1..16); temperature t > 0 (method.md §1 step 3).
  SignHash(int in_dim, int tau, Score score = Score::paper, Scalar temperature = Scalar(1))
      : in_dim_(in_dim), tau_(tau), score_(score), temperature_(temperature) {
    detail::check_hash_params("SignHash", in_dim, tau, static_cast<double>(temperature));
    if (score != Score::paper && score != Score::l1)
      detail::fail("SignHash", "score", static_cast<int>(score), "Score::paper or Score::l1");
  }

  int in_dim() const { return in_dim_; }
  int tau() const { return tau_; }
  int num_chunks() const { return in_dim_ / tau_; }
  int num_buckets() const { return 1 << tau_; }
  Score score() const { return score_; }
  Scalar temperature() const { return temperature_; }

  // Bucket of one chunk z[tau]: bit j is 1 iff z_j >= 0 (zero counts as positive), packed
  // MSB-first, so z_0 is the most significant bit.
  static std::int32_t code(const Scalar* z, int tau) {
    std::int32_t c = 0;
    for (int j = 0; j < tau; ++j) c = (c << 1) | (z[j] >= Scalar(0) ? 1 : 0);
    return c;
  }

  // p(z) = prod_j sigmoid(2|z_j| / t) (Eq. 10 in closed form), as exp(-sum_j softplus(-2|z_j|/t)).
  static Scalar probability(const Scalar* z, int tau, Scalar temperature) {
    Scalar log_p = 0;
    for (int j = 0; j < tau; ++j) log_p -= softplus_of_negative(Scalar(2) * std::abs(z[j]) / temperature);
    return std::exp(log_p);
  }

  // The score of one chunk: p(z), or ||z||_1 p(z) in l1 mode.
  Scalar chunk_score(const Scalar* z) const {
    const Scalar p = probability(z, tau_, temperature_);
    return score_ == Score::paper ? p : l1_norm(z) * p;
  }

  // [N, in_dim] -> codes and scores [N, K].
  Buckets<Scalar> operator()(const Input& x) const {
    check_rows(x, "x");
    const Eigen::Index n = x.rows();
    const int k_chunks = num_chunks();
    Buckets<Scalar> out{CodeMatrix(n, k_chunks), RowMatrix<Scalar>(n, k_chunks)};
    for (Eigen::Index i = 0; i < n; ++i) {
      const Scalar* row = x.row(i).data();
      for (int k = 0; k < k_chunks; ++k) {
        const Scalar* z = row + k * tau_;
        out.codes(i, k) = code(z, tau_);
        out.scores(i, k) = chunk_score(z);
      }
    }
    return out;
  }

  // dL/dx [N, in_dim] from dL/ds [N, K] (Eq. 12). The codes are piecewise constant and pass no
  // gradient; sign(0) is taken as +1, matching the hash.
  RowMatrix<Scalar> backward(const Input& x, const Input& dscores) const {
    check_rows(x, "x");
    detail::require_shape("SignHash::backward", "dscores", dscores.rows(), dscores.cols(), x.rows(),
                          num_chunks());
    RowMatrix<Scalar> dx(x.rows(), in_dim_);
    for (Eigen::Index i = 0; i < x.rows(); ++i)
      for (int k = 0; k < num_chunks(); ++k)
        chunk_backward(x.row(i).data() + k * tau_, dscores(i, k), dx.row(i).data() + k * tau_);
    return dx;
  }

 private:
  // softplus(-a) = log(1 + exp(-a)) for a >= 0, without overflow.
  static Scalar softplus_of_negative(Scalar a) { return std::log1p(std::exp(-a)); }

  static Scalar l1_norm(const Scalar* z, int tau) {
    Scalar s = 0;
    for (int j = 0; j < tau; ++j) s += std::abs(z[j]);
    return s;
  }
  Scalar l1_norm(const Scalar* z) const { return l1_norm(z, tau_); }

  // dz_j = ds * ds/dz_j, with dp/dz_j = p (2/t) sign(z_j) sigmoid(-2|z_j|/t) and, in l1 mode,
  // ds/dz_j = sign(z_j) p + ||z||_1 dp/dz_j.
  void chunk_backward(const Scalar* z, Scalar ds, Scalar* dz) const {
    const Scalar p = probability(z, tau_, temperature_);
    const Scalar norm = score_ == Score::l1 ? l1_norm(z) : Scalar(0);
    for (int j = 0; j < tau_; ++j) {
      const Scalar sign = z[j] >= Scalar(0) ? Scalar(1) : Scalar(-1);
      const Scalar e = std::exp(Scalar(-2) * std::abs(z[j]) / temperature_);
      const Scalar dp = p * (Scalar(2) / temperature_) * sign * (e / (Scalar(1) + e));
      dz[j] = ds * (score_ == Score::paper ? dp : sign * p + norm * dp);
    }
  }

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

// MemoryLayer: the drop-in replacement of a dense projection y = xW (method.md §1, paper Eq. 11).
// [N, in_dim] -> [N, out_dim]: each row is hashed into K = in_dim / tau buckets (SignHash) and the
// selected table rows, weighted by their scores, are summed with the bias.
#pragma once

#include "config.hpp"
#include "detail/aligned_buffer.hpp"
#include "detail/dispatch.hpp"
#include "detail/gather_schedule.hpp"
#include "detail/partition.hpp"
#include "detail/random.hpp"
#include "hash_bucket.hpp"
#include "parameter.hpp"
#include "threading.hpp"

#include <cmath>
#include <optional>

namespace memoryformer {
inline namespace v0 {

namespace detail {

// Throws unless `b` holds [N, K] codes in [0, buckets) and [N, K] scores: a code out of range would
// read another chunk's table, or past the end.
template <class Scalar>
void check_buckets(const char* where, const Buckets<Scalar>& b, int chunks, int buckets) {
  const Eigen::Index n = b.codes.rows();
  require_shape(where, "buckets.codes", b.codes.rows(), b.codes.cols(), n, chunks);
  require_shape(where, "buckets.scores", b.scores.rows(), b.scores.cols(), n, chunks);
  if (n > 0 && (b.codes.minCoeff() < 0 || b.codes.maxCoeff() >= buckets))
    fail(
        where, "buckets.codes",
        "a value in [" + std::to_string(b.codes.minCoeff()) + ", " + std::to_string(b.codes.maxCoeff()) + "]",
        "codes in [0, " + std::to_string(buckets) + ") (2^tau)");
}

}  // namespace detail

struct MemoryLayerOptions {
  int in_dim = 0;              // d, a multiple of tau
  int out_dim = 0;             // h
  int tau = 8;                 // bits per chunk, 1..16; K = in_dim / tau tables of 2^tau rows
  Score score = Score::paper;  // chunk weight: p(z) or ||z||_1 p(z)
  float temperature = 1.0f;    // t of Eq. 10, > 0
  bool bias = true;
  float init_std = 0.0f;  // table init N(0, init_std); 0 picks sqrt(2 / (5 in_dim)) (method.md §3)
  std::uint64_t seed = 0x4d656d6f7279ULL;  // initialisation is a pure function of the options
};

template <class Scalar>
class MemoryLayer {
  static_assert(std::is_floating_point<Scalar>::value, "MemoryLayer<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using MatrixView = Eigen::Map<RowMatrix<Scalar>>;
  using ConstMatrixView = Eigen::Map<const RowMatrix<Scalar>>;

  explicit MemoryLayer(const MemoryLayerOptions& options)
      : options_(validated(options)),
        hash_(options.in_dim, options.tau, options.score, static_cast<Scalar>(options.temperature)),
        tables_(static_cast<Eigen::Index>(hash_.num_chunks()) * hash_.num_buckets(), options.out_dim),
        bias_(1, options.bias ? options.out_dim : 0) {
    initialise();
  }

  const MemoryLayerOptions& options() const { return options_; }
  int in_dim() const { return options_.in_dim; }
  int out_dim() const { return options_.out_dim; }
  int tau() const { return options_.tau; }
  int num_chunks() const { return hash_.num_chunks(); }
  int num_buckets() const { return hash_.num_buckets(); }
  bool has_bias() const { return options_.bias; }
  const SignHash<Scalar>& hash() const { return hash_; }

  // Tables [K * 2^tau, out_dim]: chunk k's bucket c is row k * 2^tau + c.
  MatrixView tables() { return detail::view(tables_); }
  ConstMatrixView tables() const { return detail::view(tables_); }
  // Bias [1, out_dim] ([1, 0] when options().bias is false).
  MatrixView bias() { return detail::view(bias_); }
  ConstMatrixView bias() const { return detail::view(bias_); }

  // [N, in_dim] -> [N, out_dim]. Const and safe to call from several threads at once.
  RowMatrix<Scalar> forward(const Input& x) const { return forward(hash_(x)); }

  // The same from a precomputed hash of the input (Q, K and V share one).
  RowMatrix<Scalar> forward(const Buckets<Scalar>& buckets) const {
    detail::check_buckets("MemoryLayer::forward", buckets, num_chunks(), num_buckets());
    return detail::gather_tokens(
        detail::TableTiles<const Scalar>::row_major(tables_.data(), tables_.rows(), out_dim()), buckets.codes,
        buckets.scores, num_buckets(), bias_, detail::active_kernels<Scalar>());
  }

  // Given x [N, in_dim] and dL/dy [N, out_dim]: accumulates dL/dtables and dL/dbias into the
  // gradients and returns dL/dx [N, in_dim] (Eq. 12).
  RowMatrix<Scalar> backward(const Input& x, const Input& dy) {
    const Buckets<Scalar> buckets = hash_(x);
    return hash_.backward(x, backward_scores(buckets, dy));
  }

  // The same from a precomputed hash: accumulates the table and bias gradients and returns
  // dL/dscores [N, K], for the caller to pass to SignHash::backward (summed over the layers that
  // share the hash).
  RowMatrix<Scalar> backward_scores(const Buckets<Scalar>& buckets, const Input& dy) {
    detail::check_buckets("MemoryLayer::backward", buckets, num_chunks(), num_buckets());
    const Eigen::Index n = buckets.codes.rows();
    detail::require_shape("MemoryLayer::backward", "dy", dy.rows(), dy.cols(), n, out_dim());
    if (!grads_) zero_grad();
    if (has_bias()) grads_->bias += dy.colwise().sum();

    const auto kernels = detail::active_kernels<Scalar>();
    // dL/dT[row] += s * dy, on the schedule gather_schedule.hpp picks for this N.
    detail::scatter_tokens(grads_->tables.data(), buckets.codes, buckets.scores, num_buckets(), dy,
                           kernels.scatter);
    // dL/ds_k = <dy, T[row_k]>, likewise.
    return detail::dot_tokens(tables_.data(), buckets.codes, num_buckets(), dy, kernels);
  }

  // Accumulated gradients, shaped like tables() and bias(). They exist from the first backward()
  // or zero_grad() on; asking before that is an error rather than a silent zero.
  ConstMatrixView table_grad() const {
    return detail::view(detail::allocated(grads_, "MemoryLayer", "table_grad").tables);
  }
  ConstMatrixView bias_grad() const {
    return detail::view(detail::allocated(grads_, "MemoryLayer", "bias_grad").bias);
  }
  bool has_grad() const { return grads_.has_value(); }

  // Appends prefix.tables (weight decay) and prefix.bias (none), allocating the gradients if needed.
  void append_parameters(const std::string& prefix, ParameterList<Scalar>& out) {
    if (!grads_) zero_grad();
    out.push_back(
        {prefix + ".tables", tables_.data(), grads_->tables.data(), tables_.rows(), tables_.cols(), true});
    if (has_bias())
      out.push_back({prefix + ".bias", bias_.data(), grads_->bias.data(), bias_.rows(), bias_.cols(), false});
  }

  // Sets the gradients to zero, allocating them on first use.
  void zero_grad() {
    if (!grads_)
      grads_.emplace(Gradients{detail::AlignedMatrix<Scalar>(tables_.rows(), tables_.cols()),
                               RowMatrix<Scalar>(bias_.rows(), bias_.cols())});
    detail::view(grads_->tables).setZero();
    grads_->bias.setZero();
  }

 private:
  struct Gradients {
    detail::AlignedMatrix<Scalar> tables;  // aligned like the tables: the scatter writes its rows
    RowMatrix<Scalar> bias;
  };

  static MemoryLayerOptions validated(const MemoryLayerOptions& o) {
    const char* where = "MemoryLayerOptions";
    detail::check_hash_params(where, o.in_dim, o.tau, o.temperature);
    if (o.out_dim < 1) detail::fail(where, "out_dim", o.out_dim, "a positive integer");
    if (o.score != Score::paper && o.score != Score::l1)
      detail::fail(where, "score", static_cast<int>(o.score), "Score::paper or Score::l1");
    if (!std::isfinite(o.init_std) || o.init_std < 0)
      detail::fail(where, "init_std", o.init_std, "a finite value >= 0 (0 for the default)");
    const double rows = static_cast<double>(o.in_dim / o.tau) * std::ldexp(1.0, o.tau);
    const double bytes = rows * o.out_dim * sizeof(Scalar);
    if (bytes > 0x1.0p46)  // 64 TiB: beyond any machine, and near Eigen::Index overflow
      detail::fail(where, "tables", std::to_string(bytes) + " bytes",
                   "a size that fits in memory "
                   "(in_dim / tau * 2^tau * out_dim values); lower tau or the dimensions");
    return o;
  }

  // Tables N(0, init_std) and bias 0.001 N(0, 1), as the released code initialises them.
  void initialise() {
    detail::Rng rng(options_.seed);
    const double std_dev = options_.init_std > 0 ? options_.init_std : std::sqrt(2.0 / (5.0 * in_dim()));
    for (Eigen::Index i = 0; i < tables_.size(); ++i)
      tables_.data()[i] = static_cast<Scalar>(std_dev * rng.normal());
    for (Eigen::Index i = 0; i < bias_.size(); ++i)
      bias_.data()[i] = static_cast<Scalar>(0.001 * rng.normal());
  }

  MemoryLayerOptions options_;
  SignHash<Scalar> hash_;
  detail::AlignedMatrix<Scalar> tables_;  // aligned storage: see detail/aligned_buffer.hpp
  RowMatrix<Scalar> bias_;
  std::optional<Gradients> grads_;
};

}  // namespace v0
}  // namespace memoryformer

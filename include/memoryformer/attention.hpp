// Causal multi-head self-attention (docs/method.md §2, paper Eq. 13's softmax(QK^T / sqrt(d_h)) V) and
// the key/value cache of incremental decoding. The only matrix products of a MemoryFormer block
// besides the LM head: QK^T and AV run on Eigen's GEMM, one (sequence, head) pair per pool task.
// Heads are contiguous column slices of d (head h owns columns [h d_h, (h + 1) d_h)); there is no
// output projection here (the MemoryFormer block has none; the dense block adds its own).
#pragma once

#include "config.hpp"
#include "context.hpp"
#include "detail/partition.hpp"
#include "tensor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace memoryformer {
inline namespace v0 {

// Keys and values [capacity, d_model] of one sequence, filled front to back by decode().
template <class Scalar>
class KVCache {
 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  KVCache(int d_model, Eigen::Index capacity) {
    if (d_model < 1) detail::fail("KVCache", "d_model", d_model, "a positive integer");
    if (capacity < 1) detail::fail("KVCache", "capacity", capacity, "a positive integer");
    keys_.resize(capacity, d_model);
    values_.resize(capacity, d_model);
  }

  int d_model() const { return static_cast<int>(keys_.cols()); }
  Eigen::Index capacity() const { return keys_.rows(); }
  Eigen::Index size() const { return size_; }  // positions stored

  // Appends the keys and values [n, d_model] of the next n positions.
  void append(const Input& k, const Input& v) {
    const char* where = "KVCache::append";
    detail::require_shape(where, "k", k.rows(), k.cols(), k.rows(), d_model());
    detail::require_shape(where, "v", v.rows(), v.cols(), k.rows(), d_model());
    if (size_ + k.rows() > capacity())
      detail::fail(where, "k", std::to_string(k.rows()) + " new positions",
                   "at most " + std::to_string(capacity() - size_) + " (capacity " +
                       std::to_string(capacity()) + ", " + std::to_string(size_) + " used)");
    keys_.middleRows(size_, k.rows()) = k;
    values_.middleRows(size_, k.rows()) = v;
    size_ += k.rows();
  }

  // The stored rows, [size(), d_model].
  auto keys() const { return keys_.topRows(size_); }
  auto values() const { return values_.topRows(size_); }

  // Forgets every position from `size` on (0 empties the cache): to rewind a sequence and branch.
  void truncate(Eigen::Index size) {
    if (size < 0 || size > size_)
      detail::fail("KVCache::truncate", "size", size,
                   "a value in [0, " + std::to_string(size_) + "] (positions stored)");
    size_ = size;
  }
  void clear() { size_ = 0; }

 private:
  RowMatrix<Scalar> keys_, values_;
  Eigen::Index size_ = 0;
};

template <class Scalar>
class CausalSelfAttention {
  static_assert(std::is_floating_point<Scalar>::value,
                "CausalSelfAttention<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;
  using Tensor3 = memoryformer::Tensor3<Scalar>;  // [batch, seq, d]

  // What backward() needs from forward(): the inputs and each (sequence, head)'s attention weights.
  struct Saved {
    RowMatrix<Scalar> q, k, v;             // [batch * seq, d]
    std::vector<RowMatrix<Scalar>> probs;  // [batch * heads] of [seq, seq], row i zero beyond i
    Eigen::Index seq_len = 0;
  };

  struct Gradients {
    RowMatrix<Scalar> dq, dk, dv;  // [batch * seq, d]
  };

  CausalSelfAttention(int d_model, int n_heads) : d_model_(d_model), n_heads_(n_heads) {
    const char* where = "CausalSelfAttention";
    if (d_model < 1) detail::fail(where, "d_model", d_model, "a positive integer");
    if (n_heads < 1 || d_model % n_heads != 0)
      detail::fail(where, "n_heads", n_heads, "a positive divisor of d_model = " + std::to_string(d_model));
  }

  int d_model() const { return d_model_; }

  // What it runs on: the context given to set_context(), else the default one (context.hpp).
  Context context() const { return context_.get(); }
  void set_context(Context context) { context_.set(std::move(context)); }
  int n_heads() const { return n_heads_; }
  int head_dim() const { return d_model_ / n_heads_; }

  // q, k, v [batch * seq_len, d], sequences stacked -> [batch * seq_len, d]. Position i of a sequence
  // attends to positions 0..i of the same sequence only.
  RowMatrix<Scalar> forward(const Input& q, const Input& k, const Input& v, Eigen::Index seq_len,
                            Saved* saved = nullptr) const {
    const Eigen::Index batch = check_inputs("CausalSelfAttention::forward", q, k, v, seq_len);
    RowMatrix<Scalar> out(q.rows(), d_model_);
    std::vector<RowMatrix<Scalar>> probs(static_cast<std::size_t>(batch * n_heads_));
    for_each_head(batch, seq_len, seq_len, [&](Eigen::Index b, int h, std::size_t unit) {
      const Eigen::Index start = b * seq_len;
      const auto cols = head_cols(h);
      if (saved != nullptr) probs[unit].setZero(seq_len, seq_len);
      // Causal blocks: queries [r0, r0 + n) see keys [0, r0 + n) only, so the products with the
      // masked keys beyond are never computed (about half of q k^T and p v at long sequences).
      for (Eigen::Index r0 = 0; r0 < seq_len; r0 += kQueryBlock) {
        const Eigen::Index n = std::min(kQueryBlock, seq_len - r0), keys = r0 + n;
        const auto queries = Eigen::seqN(start + r0, n), seen = Eigen::seqN(start, keys);
        const RowMatrix<Scalar> p = attention_weights(q(queries, cols), k(seen, cols), r0);
        out(queries, cols).noalias() = p * v(seen, cols);
        if (saved != nullptr) probs[unit].block(r0, 0, n, keys) = p;
      }
    });
    if (saved != nullptr) {
      saved->q = q;
      saved->k = k;
      saved->v = v;
      saved->probs = std::move(probs);
      saved->seq_len = seq_len;
    }
    return out;
  }

  // The tensor form: q, k, v [batch, seq, d] -> [batch, seq, d] (no gradient state).
  Tensor3 forward(const Tensor3& q, const Tensor3& k, const Tensor3& v) const {
    const char* where = "CausalSelfAttention::forward";
    for (const auto* t : {&k, &v})
      if (t->dimensions() != q.dimensions())
        detail::fail(where, t == &k ? "k" : "v", detail::dims_string(*t),
                     "the shape of q, " + detail::dims_string(q));
    return detail::to_tensor3<Scalar>(
        forward(detail::rows_of(where, "q", q, d_model_), detail::rows_of(where, "k", k, d_model_),
                detail::rows_of(where, "v", v, d_model_), q.dimension(1)),
        q.dimension(0), q.dimension(1));
  }

  // dL/d(output) -> dL/dq, dL/dk, dL/dv. With P = softmax(S), S = Q K^T / sqrt(d_h):
  // dV = P^T dO, dP = dO V^T, dS = P .* (dP - rowsum(dP .* P)), dQ = dS K / sqrt(d_h), dK = dS^T Q /
  // sqrt(d_h).
  Gradients backward(const Saved& saved, const Input& dout) const {
    const char* where = "CausalSelfAttention::backward";
    detail::require_shape(where, "dout", dout.rows(), dout.cols(), saved.q.rows(), d_model_);
    const Eigen::Index seq_len = saved.seq_len;
    const Eigen::Index batch = seq_len > 0 ? saved.q.rows() / seq_len : 0;
    if (static_cast<Eigen::Index>(saved.probs.size()) != batch * n_heads_)
      detail::fail(where, "saved", "a Saved with " + std::to_string(saved.probs.size()) + " weight matrices",
                   "one filled by this module's forward()");
    const Scalar scale = inv_sqrt_head_dim();
    Gradients g{RowMatrix<Scalar>(dout.rows(), d_model_), RowMatrix<Scalar>(dout.rows(), d_model_),
                RowMatrix<Scalar>(dout.rows(), d_model_)};
    for_each_head(batch, seq_len, seq_len, [&](Eigen::Index b, int h, std::size_t unit) {
      const auto rows = Eigen::seqN(b * seq_len, seq_len);
      const auto cols = head_cols(h);
      const RowMatrix<Scalar>& p = saved.probs[unit];
      g.dv(rows, cols).noalias() = p.transpose() * dout(rows, cols);
      RowMatrix<Scalar> ds = dout(rows, cols) * saved.v(rows, cols).transpose();
      const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> row_dot = ds.cwiseProduct(p).rowwise().sum();
      ds = p.cwiseProduct(ds.colwise() - row_dot) * scale;
      g.dq(rows, cols).noalias() = ds * saved.k(rows, cols);
      g.dk(rows, cols).noalias() = ds.transpose() * saved.q(rows, cols);
    });
    return g;
  }

  // The next n positions of one sequence: q, k, v [n, d]. Their k and v are appended to `cache`
  // first; new position i (absolute cache.size() + i) attends to every cached position up to itself.
  RowMatrix<Scalar> decode(const Input& q, const Input& k, const Input& v, KVCache<Scalar>& cache) const {
    const char* where = "CausalSelfAttention::decode";
    check_inputs(where, q, k, v, q.rows());
    if (cache.d_model() != d_model_)
      detail::fail(where, "cache", "a cache of width " + std::to_string(cache.d_model()),
                   "width d_model = " + std::to_string(d_model_));
    const Eigen::Index first = cache.size();
    cache.append(k, v);
    RowMatrix<Scalar> out(q.rows(), d_model_);
    for_each_head(1, q.rows(), cache.size(), [&](Eigen::Index, int h, std::size_t) {
      const auto cols = head_cols(h);
      out(Eigen::all, cols).noalias() =
          attention_weights(q(Eigen::all, cols), cache.keys()(Eigen::all, cols), first) *
          cache.values()(Eigen::all, cols);
    });
    return out;
  }

 private:
  // Query rows per causal block of forward(): small enough to skip most masked products, large
  // enough for Eigen's GEMM to run at speed.
  static constexpr Eigen::Index kQueryBlock = 64;

  auto head_cols(int h) const { return Eigen::seqN(h * head_dim(), head_dim()); }
  Scalar inv_sqrt_head_dim() const { return Scalar(1) / std::sqrt(static_cast<Scalar>(head_dim())); }

  // softmax(q k^T / sqrt(d_h)) where row i sees keys 0..first + i only; the row maximum is
  // subtracted before exp, so large scores never overflow.
  template <class Q, class K>
  RowMatrix<Scalar> attention_weights(const Q& q, const K& k, Eigen::Index first) const {
    RowMatrix<Scalar> p = (q * k.transpose()) * inv_sqrt_head_dim();
    for (Eigen::Index i = 0; i < p.rows(); ++i) {
      const Eigen::Index visible = first + i + 1;
      auto seen = p.row(i).head(visible);
      seen = (seen.array() - seen.maxCoeff()).exp().matrix();
      seen /= seen.sum();
      p.row(i).tail(p.cols() - visible).setZero();
    }
    return p;
  }

  // Runs body(sequence, head, unit = sequence * heads + head) for every pair, split over the
  // context's threads.
  template <class Body>
  void for_each_head(Eigen::Index batch, Eigen::Index queries, Eigen::Index keys, const Body& body) const {
    const Eigen::Index units = batch * n_heads_;
    const double work = 2.0 * static_cast<double>(units) * static_cast<double>(queries) *
                        static_cast<double>(keys) * head_dim();
    const Context ctx = context();
    const int tasks = detail::task_count(work, units, ctx.num_threads());
    ctx.parallel_for(tasks, [&](int task) {
      const detail::Range r = detail::split_range(units, tasks, task);
      for (Eigen::Index u = r.begin; u < r.end; ++u)
        body(u / n_heads_, static_cast<int>(u % n_heads_), static_cast<std::size_t>(u));
    });
  }

  // Checks q, k, v [rows, d] with rows a positive multiple of seq_len; returns the batch size.
  Eigen::Index check_inputs(const char* where, const Input& q, const Input& k, const Input& v,
                            Eigen::Index seq_len) const {
    detail::require_shape(where, "q", q.rows(), q.cols(), q.rows(), d_model_);
    detail::require_shape(where, "k", k.rows(), k.cols(), q.rows(), d_model_);
    detail::require_shape(where, "v", v.rows(), v.cols(), q.rows(), d_model_);
    if (seq_len < 1 || q.rows() < 1 || q.rows() % seq_len != 0)
      detail::fail(
          where, "seq_len", seq_len,
          "a positive divisor of the row count " + std::to_string(q.rows()) + " (rows = batch * seq_len)");
    return q.rows() / seq_len;
  }

  int d_model_, n_heads_;
  detail::ModuleContext context_;
};

}  // namespace v0
}  // namespace memoryformer

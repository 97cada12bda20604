// Rotary position embedding on Q and K, GPT-NeoX convention (docs/method.md §2): the leading
// rot = floor(rotary_pct * head_dim) dims of each head rotate "rotate half" style, the rest pass
// through. Row r of a [s, n_heads * head_dim] matrix is position first_position + r.
#pragma once

#include "config.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

namespace memoryformer {
inline namespace v0 {

template <class Scalar>
class Rotary {
  static_assert(std::is_floating_point<Scalar>::value, "Rotary<Scalar>: Scalar must be float or double");

 public:
  using Input = Eigen::Ref<const RowMatrix<Scalar>>;

  // rot = floor(rotary_pct * head_dim), as GPT-NeoX's int(head_dim * rotary_pct). It must be even
  // (x1 and x2 are its two halves; NeoX fails on an odd one too), so an odd rot is an error
  // rather than silently rounded.
  explicit Rotary(int head_dim, double rotary_pct = 0.25, double base = 10000.0)
      : head_dim_(head_dim), rotary_pct_(rotary_pct), base_(base) {
    const char* where = "Rotary";
    if (head_dim < 1) detail::fail(where, "head_dim", head_dim, "a positive integer");
    if (!(rotary_pct >= 0.0 && rotary_pct <= 1.0))
      detail::fail(where, "rotary_pct", rotary_pct, "a value in [0, 1]");
    if (!std::isfinite(base) || !(base > 0.0)) detail::fail(where, "base", base, "a finite value > 0");
    rot_dim_ = static_cast<int>(std::floor(rotary_pct * head_dim));
    if (rot_dim_ % 2 != 0)
      detail::fail(where, "rotary_pct", rotary_pct,
                   "a value giving an even rot = floor(rotary_pct * head_dim) (head_dim = " +
                       std::to_string(head_dim) + " gives rot = " + std::to_string(rot_dim_) + ")");
    // inv_freq_i = base^(-2i / rot), i < rot / 2. Kept in double: angles of long positions need it.
    inv_freq_.resize(static_cast<std::size_t>(rot_dim_ / 2));
    for (int i = 0; i < rot_dim_ / 2; ++i)
      inv_freq_[static_cast<std::size_t>(i)] = std::pow(base, -2.0 * i / rot_dim_);
  }

  int head_dim() const { return head_dim_; }
  int rot_dim() const { return rot_dim_; }  // rotated leading dims of each head; even, may be 0
  double rotary_pct() const { return rotary_pct_; }
  double base() const { return base_; }
  double inv_freq(int i) const { return inv_freq_.at(static_cast<std::size_t>(i)); }

  // x [s, n_heads * head_dim], row r at position first_position + r (first_position > 0 for the
  // new tokens of a KV-cached decode) -> x rotated.
  RowMatrix<Scalar> apply(const Input& x, int n_heads, Eigen::Index first_position = 0) const {
    return rotated("Rotary::apply", "x", x, n_heads, x.rows(), first_position, false);
  }

  // The gradient through apply(): the rotation is orthogonal, so dL/dx = R^T dy, the rotation by
  // minus the angle.
  RowMatrix<Scalar> apply_backward(const Input& dy, int n_heads, Eigen::Index first_position = 0) const {
    return rotated("Rotary::apply_backward", "dy", dy, n_heads, dy.rows(), first_position, true);
  }

  // A batch of sequences stacked as x [batch * seq_len, n_heads * head_dim]: row r is at position
  // first_position + r % seq_len.
  RowMatrix<Scalar> apply_batch(const Input& x, int n_heads, Eigen::Index seq_len,
                                Eigen::Index first_position = 0) const {
    return rotated("Rotary::apply_batch", "x", x, n_heads, seq_len, first_position, false);
  }

  RowMatrix<Scalar> apply_batch_backward(const Input& dy, int n_heads, Eigen::Index seq_len,
                                         Eigen::Index first_position = 0) const {
    return rotated("Rotary::apply_batch_backward", "dy", dy, n_heads, seq_len, first_position, true);
  }

 private:
  RowMatrix<Scalar> rotated(const char* where, const char* name, const Input& x, int n_heads,
                            Eigen::Index seq_len, Eigen::Index first_position, bool inverse) const {
    if (n_heads < 1) detail::fail(where, "n_heads", n_heads, "a positive integer");
    detail::require_shape(where, name, x.rows(), x.cols(), x.rows(),
                          static_cast<Eigen::Index>(n_heads) * head_dim_);
    if (first_position < 0) detail::fail(where, "first_position", first_position, "a value >= 0");
    if (x.rows() > 0 && (seq_len < 1 || x.rows() % seq_len != 0))
      detail::fail(where, "seq_len", seq_len,
                   "a positive divisor of " + std::string(name) + "'s " + std::to_string(x.rows()) + " rows");

    RowMatrix<Scalar> y = x;
    const int half = rot_dim_ / 2;
    if (half == 0 || x.rows() == 0) return y;
    // cos/sin of every (position, frequency) are recomputed per call: seq_len * rot / 2 sincos in
    // double, small next to the seq_len * n_heads * rot multiplies of the rotation itself and to
    // the attention around it; no cache keeps the class const and thread-safe. Angles are taken
    // in double (NeoX uses float32), so a position's angle is the same whatever the call.
    const Eigen::Index positions = std::min(seq_len, x.rows());
    RowMatrix<Scalar> cos_table(positions, half), sin_table(positions, half);
    for (Eigen::Index p = 0; p < positions; ++p)
      for (int i = 0; i < half; ++i) {
        const double angle = static_cast<double>(first_position + p) * inv_freq_[static_cast<std::size_t>(i)];
        cos_table(p, i) = static_cast<Scalar>(std::cos(angle));
        sin_table(p, i) = static_cast<Scalar>(inverse ? -std::sin(angle) : std::sin(angle));
      }
    // out = [x1 cos - x2 sin, x2 cos + x1 sin] per head (x1, x2: the two halves of the rot dims).
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const Scalar* c = cos_table.row(r % seq_len).data();
      const Scalar* s = sin_table.row(r % seq_len).data();
      for (int h = 0; h < n_heads; ++h) {
        const Scalar* in = x.row(r).data() + static_cast<Eigen::Index>(h) * head_dim_;
        Scalar* out = y.row(r).data() + static_cast<Eigen::Index>(h) * head_dim_;
        for (int i = 0; i < half; ++i) {
          const Scalar x1 = in[i], x2 = in[half + i];
          out[i] = x1 * c[i] - x2 * s[i];
          out[half + i] = x2 * c[i] + x1 * s[i];
        }
      }
    }
    return y;
  }

  int head_dim_;
  double rotary_pct_;
  double base_;
  int rot_dim_ = 0;
  std::vector<double> inv_freq_;
};

}  // namespace v0
}  // namespace memoryformer

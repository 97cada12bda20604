// Version, common types, and the argument checks that throw ArgumentError (errors.hpp).
#pragma once

#include "enum_names.hpp"
#include "errors.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#define MF_VERSION_MAJOR 0
#define MF_VERSION_MINOR 1
#define MF_VERSION_PATCH 0
#define MF_VERSION_STRING "0.1.0"

// SIMD kernels need GCC/Clang target attributes on x86-64. Defining MF_DISABLE_SIMD (the CMake
// option MF_SIMD=OFF does) leaves only the portable scalar path.
#if !defined(MF_DISABLE_SIMD) && (defined(__x86_64__) || defined(__amd64__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define MF_HAVE_X86_SIMD 1
#else
#define MF_HAVE_X86_SIMD 0
#endif

namespace memoryformer {
inline namespace v0 {

// [rows, cols] row-major matrix: the layout of activations ([tokens, features]) and tables.
template <class Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Bucket indices, one per (token, chunk): [N, K].
using CodeMatrix = RowMatrix<std::int32_t>;

// What a module's constructor puts in its weights.
enum class Init {
  random,         // every weight drawn from the seed (the default)
  except_tables,  // all but the hash tables, which stay unallocated: `memoryformer init` streams
                  // them to disk a few rows at a time (MemoryLayer::draw_table_rows)
  none,           // nothing drawn and no tables allocated: what load_model fills in
};

// How a chunk's selected row is weighted (docs/method.md §1 step 4).
enum class Score {
  paper,  // s = p(z), Eq. 10
  l1,     // s = ||z||_1 * p(z), as the authors' released code trains
};

template <>
struct EnumNames<Score> {
  static constexpr EnumName<Score> table[] = {{Score::paper, "paper"}, {Score::l1, "l1"}};
};

// Where RMSNorm adds its eps (docs/method.md §2). Both agree to ~eps relative; they differ where a
// row is near zero, and a hash can flip there.
enum class RmsForm {
  eps_in_root,     // x / sqrt(mean(x^2) + eps): the library's default
  eps_after_root,  // x / (sqrt(mean(x^2)) + eps): the released code's RMSNorm
};

template <>
struct EnumNames<RmsForm> {
  static constexpr EnumName<RmsForm> table[] = {{RmsForm::eps_in_root, "eps_in_root"},
                                                {RmsForm::eps_after_root, "eps_after_root"}};
};

// How the token embedding and the LM head are drawn (docs/method.md §3).
enum class EmbeddingInit {
  normal_0_02,  // N(0, 0.02): the library's default
  small_init,   // N(0, sqrt(2 / (5 d))): the released code's `small_init`
};

template <>
struct EnumNames<EmbeddingInit> {
  static constexpr EnumName<EmbeddingInit> table[] = {{EmbeddingInit::normal_0_02, "normal_0.02"},
                                                      {EmbeddingInit::small_init, "small_init"}};
};

// A function between the Memory Block's LayerNorm and its down layer (docs/method.md §2; paper
// Table 6 adds a GeLU there, the default has none: the hash is the non-linearity).
enum class Activation {
  none,
  gelu,  // exact, x Phi(x)
};

template <>
struct EnumNames<Activation> {
  static constexpr EnumName<Activation> table[] = {{Activation::none, "none"}, {Activation::gelu, "gelu"}};
};

namespace detail {

// Builds "where: name = value, expected what" and throws it as ArgumentError.
template <class Value>
[[noreturn]] void fail(const char* where, const char* name, const Value& value, const std::string& expected) {
  std::ostringstream msg;
  msg << "memoryformer: " << where << ": " << name << " = " << value << ", expected " << expected;
  throw ArgumentError(msg.str());
}

// "[2, 3, 4]": how errors and listings print a shape.
inline std::string shape_string(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Throws unless a matrix argument is want_rows x want_cols.
inline void require_shape(const char* where, const char* name, Eigen::Index rows, Eigen::Index cols,
                          Eigen::Index want_rows, Eigen::Index want_cols) {
  if (rows != want_rows || cols != want_cols)
    fail(where, name, std::to_string(rows) + " x " + std::to_string(cols) + " matrix",
         "shape " + std::to_string(want_rows) + " x " + std::to_string(want_cols));
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
